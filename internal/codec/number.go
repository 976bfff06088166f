package codec

import "math"

// roundToOdd32 narrows f to float32, rounding an inexact result to the
// neighbour with an odd last bit. Rounding that again to FP16 or BF16 (whose
// significands are at least two bits shorter) then equals rounding f
// directly; float32(f), which rounds to even, could land on a tie of the
// narrower type and round the wrong way.
func roundToOdd32(f float64) float32 {
	r := float32(f)
	if float64(r) == f {
		return r
	}
	if b := math.Float32bits(r); b&1 == 0 {
		if math.Abs(float64(r)) > math.Abs(f) {
			b-- // toward zero (Inf becomes the largest finite float32)
		} else {
			b++
		}
		r = math.Float32frombits(b)
	}
	return r
}

// pow10 holds the powers of ten that float64 represents exactly.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// fastFloat parses the common JSON numbers — at most 19 digits, a mantissa
// below 2^53 and a power of ten within ±22 — exactly, by Clinger's fast
// path: one correctly rounded float64 operation on exact operands. For
// FP32 (f32) the float64 is then rounded again, which is exact unless it
// sits on a float32 halfway point or outside float32's normal range; those
// and every other case report !ok, for strconv to handle. It also rejects
// what is not a JSON number.
func fastFloat(tok []byte, f32 bool) (float64, bool) {
	i, n := 0, len(tok)
	neg := n > 0 && tok[0] == '-'
	if neg {
		i++
	}
	if i >= n {
		return 0, false
	}
	var w uint64
	digits, q := 0, 0
	switch c := tok[i]; {
	case c == '0':
		i++
	case c >= '1' && c <= '9':
		for ; i < n && tok[i] >= '0' && tok[i] <= '9'; i++ {
			w = w*10 + uint64(tok[i]-'0')
			digits++
		}
	default:
		return 0, false
	}
	if i < n && tok[i] == '.' {
		i++
		start := i
		for ; i < n && tok[i] >= '0' && tok[i] <= '9'; i++ {
			w = w*10 + uint64(tok[i]-'0')
			digits++
			q--
		}
		if i == start {
			return 0, false
		}
	}
	if i < n && (tok[i] == 'e' || tok[i] == 'E') {
		i++
		eneg := false
		if i < n && (tok[i] == '+' || tok[i] == '-') {
			eneg = tok[i] == '-'
			i++
		}
		start, e := i, 0
		for ; i < n && tok[i] >= '0' && tok[i] <= '9'; i++ {
			if e < 1000 {
				e = e*10 + int(tok[i]-'0')
			}
		}
		if i == start {
			return 0, false
		}
		if eneg {
			e = -e
		}
		q += e
	}
	if i != n || digits > 19 || w > 1<<53 || q < -22 || q > 22 {
		return 0, false
	}
	f := float64(w)
	if q < 0 {
		f /= pow10[-q]
	} else {
		f *= pow10[q]
	}
	if neg {
		f = -f
	}
	if f32 {
		if a := math.Abs(f); a != 0 && (a < 0x1p-126 || a > math.MaxFloat32) {
			return 0, false
		}
		if math.Float64bits(f)&(1<<29-1) == 1<<28 {
			return 0, false // a float32 tie: round from the decimal instead
		}
	}
	return f, true
}

// validNumber reports whether tok is a JSON number (strconv also accepts
// forms such as "Inf", "0x1p3" and "1_000" that JSON does not).
func validNumber(tok []byte) bool {
	i := 0
	if i < len(tok) && tok[i] == '-' {
		i++
	}
	if i >= len(tok) {
		return false
	}
	if tok[i] == '0' {
		i++
	} else if tok[i] >= '1' && tok[i] <= '9' {
		for i < len(tok) && tok[i] >= '0' && tok[i] <= '9' {
			i++
		}
	} else {
		return false
	}
	if i < len(tok) && tok[i] == '.' {
		i++
		start := i
		for i < len(tok) && tok[i] >= '0' && tok[i] <= '9' {
			i++
		}
		if i == start {
			return false
		}
	}
	if i < len(tok) && (tok[i] == 'e' || tok[i] == 'E') {
		i++
		if i < len(tok) && (tok[i] == '+' || tok[i] == '-') {
			i++
		}
		start := i
		for i < len(tok) && tok[i] >= '0' && tok[i] <= '9' {
			i++
		}
		if i == start {
			return false
		}
	}
	return i == len(tok)
}
