package codec

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"
)

// halfValue is an independent reference: the exact value of FP16 bits h
// (finite only).
func halfValue(h uint16) float64 {
	exp := int(h>>10) & 0x1f
	mant := float64(h & 0x3ff)
	v := math.Ldexp(mant, -24) // subnormal
	if exp != 0 {
		v = math.Ldexp(1024+mant, exp-25)
	}
	if h&0x8000 != 0 {
		v = -v
	}
	return v
}

func isHalfNaN(h uint16) bool { return h&0x7c00 == 0x7c00 && h&0x3ff != 0 }
func isBF16NaN(h uint16) bool { return h&0x7f80 == 0x7f80 && h&0x7f != 0 }

// TestHalfExhaustive widens every FP16 value and narrows it back.
func TestHalfExhaustive(t *testing.T) {
	for i := range 1 << 16 {
		h := uint16(i)
		f := halfToFloat32(h)
		switch {
		case isHalfNaN(h):
			if !math.IsNaN(float64(f)) || math.Signbit(float64(f)) != (h&0x8000 != 0) {
				t.Fatalf("halfToFloat32(%#04x) = %v, want a NaN of the same sign", h, f)
			}
			if back := float32ToHalf(f); !isHalfNaN(back) || back&0x8000 != h&0x8000 {
				t.Fatalf("float32ToHalf(NaN from %#04x) = %#04x, want a NaN of the same sign", h, back)
			}
			continue
		case h&0x7fff == 0x7c00:
			if !math.IsInf(float64(f), 0) || math.Signbit(float64(f)) != (h&0x8000 != 0) {
				t.Fatalf("halfToFloat32(%#04x) = %v, want an infinity", h, f)
			}
		default:
			if want := halfValue(h); float64(f) != want || math.Signbit(float64(f)) != math.Signbit(want) {
				t.Fatalf("halfToFloat32(%#04x) = %v, want %v", h, f, want)
			}
		}
		if back := float32ToHalf(f); back != h {
			t.Fatalf("float32ToHalf(halfToFloat32(%#04x)) = %#04x", h, back)
		}
	}
}

// TestHalfTies checks rounding at, just above and just below the midpoint of
// every pair of neighbouring FP16 values, both signs: the midpoint goes to
// the even neighbour (65520, between the largest half and infinity, goes to
// infinity).
func TestHalfTies(t *testing.T) {
	for lo := uint16(0); lo < 0x7c00; lo++ {
		hi := lo + 1
		mid := 65520.0 // between the largest half and infinity
		if hi != 0x7c00 {
			mid = (halfValue(lo) + halfValue(hi)) / 2
		}
		m := float32(mid)
		if float64(m) != mid {
			t.Fatalf("midpoint of %#04x and %#04x is not a float32", lo, hi)
		}
		even := lo
		if lo&1 == 1 {
			even = hi
		}
		for _, sign := range []uint16{0, 0x8000} {
			s := float32(1)
			if sign != 0 {
				s = -1
			}
			checks := []struct {
				f    float32
				want uint16
			}{
				{s * m, even | sign},
				{s * math.Nextafter32(m, float32(math.Inf(1))), hi | sign},
				{s * math.Nextafter32(m, 0), lo | sign},
			}
			for _, c := range checks {
				if got := float32ToHalf(c.f); got != c.want {
					t.Fatalf("float32ToHalf(%v) = %#04x, want %#04x", c.f, got, c.want)
				}
			}
		}
	}
}

func TestFloat32ToHalf(t *testing.T) {
	tests := []struct {
		name string
		f    float32
		want uint16
	}{
		{"one", 1, 0x3c00},
		{"minus two", -2, 0xc000},
		{"0.1", 0.1, 0x2e66},
		{"max", 65504, 0x7bff},
		{"just under the overflow tie", 65519.996, 0x7bff},
		{"overflow tie", 65520, 0x7c00},
		{"large", 1e10, 0x7c00},
		{"negative large", -1e10, 0xfc00},
		{"max float32", math.MaxFloat32, 0x7c00},
		{"+Inf", float32(math.Inf(1)), 0x7c00},
		{"-Inf", float32(math.Inf(-1)), 0xfc00},
		{"NaN", float32(math.NaN()), 0x7e00},
		{"zero", 0, 0},
		{"minus zero", float32(math.Copysign(0, -1)), 0x8000},
		{"1+2^-11 ties to even 1", 1 + 0x1p-11, 0x3c00},
		{"1+3*2^-11 ties to even 1+2^-9", 1 + 3*0x1p-11, 0x3c02},
		{"2049 ties to 2048", 2049, 0x6800},
		{"2051 ties to 2052", 2051, 0x6802},
		{"smallest subnormal", 0x1p-24, 0x0001},
		{"half the smallest subnormal ties to 0", 0x1p-25, 0x0000},
		{"just over half the smallest subnormal", 0x1p-25 + 0x1p-40, 0x0001},
		{"1.5 subnormal ulps ties to 2", 3 * 0x1p-25, 0x0002},
		{"largest subnormal", 1023 * 0x1p-24, 0x03ff},
		{"between subnormal and normal ties up", 1023.5 * 0x1p-24, 0x0400},
		{"smallest normal", 0x1p-14, 0x0400},
		{"quarter subnormal", 0x1p-26, 0x0000},
		{"negative tiny", -1e-10, 0x8000},
		{"float32 subnormal", math.SmallestNonzeroFloat32, 0x0000},
	}
	for _, tt := range tests {
		if got := float32ToHalf(tt.f); got != tt.want {
			t.Errorf("%s: float32ToHalf(%v) = %#04x, want %#04x", tt.name, tt.f, got, tt.want)
		}
	}
}

// halfPositives holds every finite non-negative FP16 value, ascending.
var halfPositives = func() []float64 {
	v := make([]float64, 0x7c00)
	for h := range v {
		v[h] = halfValue(uint16(h))
	}
	return v
}()

// nearestHalf is a reference rounding of a finite f to FP16, by searching
// the sorted values for the nearest one (ties to even).
func nearestHalf(f float64) uint16 {
	sign := uint16(0)
	if math.Signbit(f) {
		sign = 0x8000
	}
	a := math.Abs(f)
	if a >= 65520 {
		return sign | 0x7c00
	}
	i := sort.SearchFloat64s(halfPositives, a) // first >= a
	if i == len(halfPositives) {
		return sign | 0x7bff // (65504, 65520)
	}
	if halfPositives[i] == a {
		return sign | uint16(i)
	}
	lo, hi := i-1, i
	switch dl, dh := a-halfPositives[lo], halfPositives[hi]-a; {
	case dl < dh:
		return sign | uint16(lo)
	case dh < dl:
		return sign | uint16(hi)
	case lo&1 == 0:
		return sign | uint16(lo)
	}
	return sign | uint16(hi)
}

// TestFloat32ToHalfRandom compares float32ToHalf with a reference that
// searches the sorted FP16 values for the nearest one, for random float32
// bit patterns and a stride through all of them.
func TestFloat32ToHalfRandom(t *testing.T) {
	reference := func(f float32) uint16 { return nearestHalf(float64(f)) }
	r := rand.New(rand.NewPCG(5, 6))
	check := func(b uint32) {
		f := math.Float32frombits(b)
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			return
		}
		if got, want := float32ToHalf(f), reference(f); got != want {
			t.Fatalf("float32ToHalf(%v = %#08x) = %#04x, want %#04x", f, b, got, want)
		}
	}
	for range 500000 {
		check(r.Uint32())
		// Concentrate on the range FP16 covers.
		check(uint32(r.IntN(0x47800000-0x33000000)) + 0x33000000 | r.Uint32()&0x80000000)
	}
	for b := uint64(0); b < 1<<32; b += 4099 {
		check(uint32(b))
	}
}

func TestBF16Exhaustive(t *testing.T) {
	for i := range 1 << 16 {
		h := uint16(i)
		f := bf16ToFloat32(h)
		if math.Float32bits(f) != uint32(h)<<16 {
			t.Fatalf("bf16ToFloat32(%#04x) bits = %#08x", h, math.Float32bits(f))
		}
		back := float32ToBF16(f)
		if isBF16NaN(h) {
			if !isBF16NaN(back) || back&0x8000 != h&0x8000 {
				t.Fatalf("float32ToBF16(NaN %#04x) = %#04x, want a NaN of the same sign", h, back)
			}
			continue
		}
		if back != h {
			t.Fatalf("float32ToBF16(bf16ToFloat32(%#04x)) = %#04x", h, back)
		}
	}
}

// TestBF16Ties is TestHalfTies for bfloat16, where neighbours differ in the
// top 16 bits of a float32 and the midpoint sets bit 15.
func TestBF16Ties(t *testing.T) {
	for lo := uint32(0); lo < 0x7f80; lo++ {
		hi := lo + 1
		even := lo
		if lo&1 == 1 {
			even = hi
		}
		for _, sign := range []uint32{0, 0x80000000} {
			mid := sign | lo<<16 | 0x8000
			checks := []struct {
				bits uint32
				want uint32
			}{
				{mid, even},
				{mid + 1, hi},
				{mid - 1, lo},
				{sign | lo<<16 | 0xffff, hi},
				{sign | lo<<16 | 1, lo},
			}
			for _, c := range checks {
				if got := float32ToBF16(math.Float32frombits(c.bits)); uint32(got) != c.want|sign>>16 {
					t.Fatalf("float32ToBF16(%#08x) = %#04x, want %#04x", c.bits, got, c.want|sign>>16)
				}
			}
		}
	}
}

func TestFloat32ToBF16(t *testing.T) {
	tests := []struct {
		name string
		bits uint32
		want uint16
	}{
		{"one", 0x3f800000, 0x3f80},
		{"0.1", 0x3dcccccd, 0x3dcd},
		{"max float32 overflows", 0x7f7fffff, 0x7f80},
		{"largest bf16", 0x7f7f0000, 0x7f7f},
		{"+Inf", 0x7f800000, 0x7f80},
		{"-Inf", 0xff800000, 0xff80},
		{"quiet NaN", 0x7fc00000, 0x7fc0},
		{"signalling NaN stays NaN", 0x7f800001, 0x7fc0},
		{"NaN with low payload only", 0xff800001, 0xffc0},
		{"minus zero", 0x80000000, 0x8000},
		{"smallest subnormal rounds to 0", 0x00000001, 0x0000},
		{"subnormal tie to even", 0x00018000, 0x0002},
	}
	for _, tt := range tests {
		if got := float32ToBF16(math.Float32frombits(tt.bits)); got != tt.want {
			t.Errorf("%s: float32ToBF16(%#08x) = %#04x, want %#04x", tt.name, tt.bits, got, tt.want)
		}
	}
}
