package codec

import (
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
)

// TestFastFloatMatchesStrconv checks the fast path against strconv on the
// numbers clients send (shortest float32 and float64 forms, fixed
// precision, exponents, ties) and on random digit strings.
func TestFastFloatMatchesStrconv(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var toks []string
	for range 200000 {
		f := math.Float64frombits(r.Uint64())
		if math.IsNaN(f) || math.IsInf(f, 0) {
			continue
		}
		f32 := math.Float32frombits(r.Uint32())
		toks = append(toks,
			strconv.FormatFloat(f, 'g', -1, 64),
			strconv.FormatFloat(float64(f32), 'g', -1, 32),
			strconv.FormatFloat(r.NormFloat64(), 'f', r.IntN(12), 64),
			strconv.FormatFloat(r.NormFloat64()*1e6, 'e', r.IntN(9), 64),
			strconv.Itoa(r.IntN(1<<30)-1<<29)+"."+strconv.Itoa(r.IntN(1000)),
		)
	}
	// float32 halfway points and their neighbours, written exactly.
	for range 2000 {
		a := math.Float32frombits(r.Uint32() & 0x7effffff)
		b := math.Nextafter32(a, float32(math.Inf(1)))
		mid := (float64(a) + float64(b)) / 2
		toks = append(toks, strconv.FormatFloat(mid, 'g', -1, 64), strconv.FormatFloat(mid, 'e', 20, 64))
	}
	toks = append(toks, "0", "-0", "1e22", "1e23", "9007199254740993", "0.1", "-1e-22", "1e-45", "3.4028235e38", "3.4028236e38")
	for _, tok := range toks {
		for _, f32 := range []bool{false, true} {
			got, ok := fastFloat([]byte(tok), f32)
			if !ok {
				continue
			}
			bits := 64
			if f32 {
				bits = 32
			}
			want, err := strconv.ParseFloat(tok, bits)
			if err != nil {
				t.Fatalf("fastFloat(%q) accepted what strconv refuses: %v", tok, err)
			}
			if f32 {
				if math.Float32bits(float32(got)) != math.Float32bits(float32(want)) {
					t.Fatalf("fastFloat(%q, FP32) = %v, strconv %v", tok, float32(got), float32(want))
				}
			} else if math.Float64bits(got) != math.Float64bits(want) {
				t.Fatalf("fastFloat(%q, FP64) = %v, strconv %v", tok, got, want)
			}
		}
	}
	for _, bad := range []string{"", "-", "01", "1.", ".5", "1e", "1e+", "+1", "0x10", "1_0", "NaN", "Inf", "--1", "1.2.3"} {
		if _, ok := fastFloat([]byte(bad), false); ok {
			t.Errorf("fastFloat(%q) accepted a non-JSON number", bad)
		}
	}
}

func FuzzFastFloat(f *testing.F) {
	for _, s := range []string{"0.84147096", "-1e-7", "123456789012345678", "3.4028235e38", "1.401298464324817e-45"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		for _, f32 := range []bool{false, true} {
			got, ok := fastFloat([]byte(tok), f32)
			if !ok {
				continue
			}
			bits := 64
			if f32 {
				bits = 32
			}
			want, err := strconv.ParseFloat(tok, bits)
			if err != nil || !validNumber([]byte(tok)) {
				t.Fatalf("fastFloat(%q) accepted what strconv or JSON refuses: %v", tok, err)
			}
			if (f32 && math.Float32bits(float32(got)) != math.Float32bits(float32(want))) || (!f32 && math.Float64bits(got) != math.Float64bits(want)) {
				t.Fatalf("fastFloat(%q, f32=%v) = %v, strconv %v", tok, f32, got, want)
			}
		}
	})
}
