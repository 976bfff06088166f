package codec

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// parseData flattens a JSON data value (an array, nested or flat, or a lone
// scalar) of datatype dt into canonical bytes. want is the element count the
// shape asks for; it only sizes the buffer and is checked by the caller.
func parseData(name string, dt inference.DataType, raw []byte, want int64) ([]byte, error) {
	out, end, err := parseDataAt(name, dt, raw, 0, want)
	if err != nil {
		return nil, err
	}
	if end != len(raw) {
		p := dataParser{name: name, count: int64(len(out))}
		return nil, p.errorf("unexpected %q after data", raw[end])
	}
	return out, nil
}

// parseDataAt parses the data value that starts at in[pos] and returns its
// canonical bytes and the offset just past it (and past white space).
func parseDataAt(name string, dt inference.DataType, in []byte, pos int, want int64) ([]byte, int, error) {
	p := dataParser{name: name, dt: dt, in: in, pos: pos}
	rest := int64(len(in) - pos)
	if sz := int64(dt.Size()); sz > 0 {
		// Each element takes at least two input bytes ("0,"), so a shape
		// larger than the text cannot make us allocate more than ~4x it.
		if limit := (rest/2 + 1) * sz; want*sz > limit {
			want = limit / sz
		}
		p.out = make([]byte, 0, want*sz)
	} else {
		p.out = make([]byte, 0, min(rest, 4*want+rest))
	}
	p.skipSpace()
	if err := p.value(0); err != nil {
		return nil, 0, err
	}
	p.skipSpace()
	return p.out, p.pos, nil
}

type dataParser struct {
	name  string
	dt    inference.DataType
	in    []byte
	pos   int
	out   []byte
	count int64
}

const maxDataDepth = 64

func (p *dataParser) errorf(format string, args ...any) error {
	args = append([]any{p.name, p.count}, args...)
	return inference.Errorf(inference.KindInvalid, "codec: input %q: data element %d: "+format, args...)
}

func (p *dataParser) skipSpace() {
	for p.pos < len(p.in) {
		switch p.in[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *dataParser) value(depth int) error {
	if p.pos >= len(p.in) {
		return p.errorf("unexpected end of data")
	}
	if p.in[p.pos] != '[' {
		err := p.scalar()
		p.count++
		return err
	}
	if depth >= maxDataDepth {
		return p.errorf("arrays nested deeper than %d", maxDataDepth)
	}
	p.pos++
	p.skipSpace()
	if p.pos < len(p.in) && p.in[p.pos] == ']' {
		p.pos++
		return nil
	}
	for {
		if err := p.value(depth + 1); err != nil {
			return err
		}
		p.skipSpace()
		if p.pos >= len(p.in) {
			return p.errorf("unterminated array")
		}
		switch p.in[p.pos] {
		case ',':
			p.pos++
			p.skipSpace()
		case ']':
			p.pos++
			return nil
		default:
			return p.errorf("expected ',' or ']', found %q", p.in[p.pos])
		}
	}
}

// token returns the bytes of a bare JSON literal (number, true, false, null).
func (p *dataParser) token() []byte {
	start := p.pos
	for p.pos < len(p.in) && tokenByte[p.in[p.pos]] {
		p.pos++
	}
	return p.in[start:p.pos]
}

// tokenByte marks the bytes of bare JSON literals (and of the malformed
// ones we name in errors): letters, digits, '+', '-' and '.'.
var tokenByte = func() (t [256]bool) {
	for c := range 256 {
		t[c] = c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '+' || c == '.'
	}
	return t
}()

// scalar parses element p.count. (A defer to count it would not be
// open-coded here, with this many returns, and cost ~15% of JSON decoding.)
func (p *dataParser) scalar() error {
	if p.dt == inference.Bytes {
		if p.in[p.pos] != '"' {
			return p.errorf("BYTES elements must be JSON strings, found %q", p.token())
		}
		s, err := p.str()
		if err != nil {
			return err
		}
		p.out = binary.LittleEndian.AppendUint32(p.out, uint32(len(s)))
		p.out = append(p.out, s...)
		return nil
	}
	if p.in[p.pos] == '"' {
		return p.errorf("%s elements must be JSON %s, found a string", p.dt, kindWord(p.dt))
	}
	tok := p.token()
	if len(tok) == 0 {
		return p.errorf("unexpected %q", p.in[p.pos])
	}
	switch p.dt {
	case inference.Bool:
		switch string(tok) {
		case "true":
			p.out = append(p.out, 1)
		case "false":
			p.out = append(p.out, 0)
		default:
			return p.errorf("BOOL elements must be true or false, found %s", tok)
		}
		return nil
	case inference.FP16, inference.BF16, inference.FP32, inference.FP64:
		if p.dt == inference.FP32 || p.dt == inference.FP64 {
			if f, ok := fastFloat(tok, p.dt == inference.FP32); ok {
				if p.dt == inference.FP32 {
					p.out = binary.LittleEndian.AppendUint32(p.out, math.Float32bits(float32(f)))
				} else {
					p.out = binary.LittleEndian.AppendUint64(p.out, math.Float64bits(f))
				}
				return nil
			}
		}
		bits := 64
		if p.dt == inference.FP32 {
			bits = 32
		}
		f, err := strconv.ParseFloat(string(tok), bits)
		if err != nil || !validNumber(tok) {
			if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
				return p.errorf("%s is out of the range of %s", tok, p.dt)
			}
			return p.errorf("%s elements must be JSON numbers, found %s", p.dt, tok)
		}
		switch p.dt {
		case inference.FP64:
			p.out = binary.LittleEndian.AppendUint64(p.out, math.Float64bits(f))
		case inference.FP32:
			p.out = binary.LittleEndian.AppendUint32(p.out, math.Float32bits(float32(f)))
		case inference.FP16:
			h := float32ToHalf(roundToOdd32(f))
			if h&0x7c00 == 0x7c00 {
				return p.errorf("%s is out of the range of FP16", tok)
			}
			p.out = binary.LittleEndian.AppendUint16(p.out, h)
		case inference.BF16:
			h := float32ToBF16(roundToOdd32(f))
			if h&0x7f80 == 0x7f80 {
				return p.errorf("%s is out of the range of BF16", tok)
			}
			p.out = binary.LittleEndian.AppendUint16(p.out, h)
		}
		return nil
	}
	// integers
	signed := p.dt >= inference.Int8 && p.dt <= inference.Int64
	bits := p.dt.Size() * 8
	var u uint64
	if !validNumber(tok) {
		return p.errorf("%s elements must be JSON integers, found %s", p.dt, tok)
	}
	if signed {
		v, err := strconv.ParseInt(string(tok), 10, bits)
		if err != nil {
			return p.intError(tok, err)
		}
		u = uint64(v)
	} else {
		v, err := strconv.ParseUint(string(tok), 10, bits)
		if err != nil {
			return p.intError(tok, err)
		}
		u = v
	}
	switch bits {
	case 8:
		p.out = append(p.out, byte(u))
	case 16:
		p.out = binary.LittleEndian.AppendUint16(p.out, uint16(u))
	case 32:
		p.out = binary.LittleEndian.AppendUint32(p.out, uint32(u))
	default:
		p.out = binary.LittleEndian.AppendUint64(p.out, u)
	}
	return nil
}

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

func (p *dataParser) intError(tok []byte, err error) error {
	outOfRange := errors.Is(err, strconv.ErrRange)
	if p.dt >= inference.Uint8 && p.dt <= inference.Uint64 && tok[0] == '-' && string(tok) != "-0" && !bytes.ContainsAny(tok, ".eE") {
		outOfRange = true // ParseUint calls "-1" a syntax error
	}
	if outOfRange {
		return p.errorf("%s is out of the range of %s", tok, p.dt)
	}
	return p.errorf("%s elements must be JSON integers, found %s", p.dt, tok)
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

// str parses a JSON string at p.pos and returns its unescaped bytes.
func (p *dataParser) str() ([]byte, error) {
	start := p.pos
	p.pos++
	escaped := false
	for p.pos < len(p.in) {
		switch c := p.in[p.pos]; {
		case c == '"':
			p.pos++
			lit := p.in[start:p.pos]
			if !utf8.Valid(lit) {
				return nil, p.errorf("string is not valid UTF-8")
			}
			if !escaped {
				return lit[1 : len(lit)-1], nil
			}
			var s string
			if err := json.Unmarshal(lit, &s); err != nil {
				return nil, p.errorf("bad string: %v", err)
			}
			return []byte(s), nil
		case c == '\\':
			escaped = true
			p.pos += 2
		case c < 0x20:
			return nil, p.errorf("control character in string")
		default:
			p.pos++
		}
	}
	return nil, p.errorf("unterminated string")
}

func kindWord(dt inference.DataType) string {
	switch dt {
	case inference.Bool:
		return "booleans"
	case inference.FP16, inference.BF16, inference.FP32, inference.FP64:
		return "numbers"
	}
	return "integers"
}

// appendData writes t's elements as a flat JSON array.
func appendData(dst []byte, t *inference.Tensor) ([]byte, error) {
	d := t.Data
	dst = append(dst, '[')
	sz := t.DataType.Size()
	for i := 0; ; i++ {
		var off int
		if sz > 0 {
			off = i * sz
		} else {
			off = 0
		}
		if len(d) == 0 || (sz > 0 && off+sz > len(d)) {
			break
		}
		if i > 0 {
			dst = append(dst, ',')
		}
		switch t.DataType {
		case inference.Bool:
			if d[off] != 0 {
				dst = append(dst, "true"...)
			} else {
				dst = append(dst, "false"...)
			}
		case inference.Uint8:
			dst = strconv.AppendUint(dst, uint64(d[off]), 10)
		case inference.Uint16:
			dst = strconv.AppendUint(dst, uint64(binary.LittleEndian.Uint16(d[off:])), 10)
		case inference.Uint32:
			dst = strconv.AppendUint(dst, uint64(binary.LittleEndian.Uint32(d[off:])), 10)
		case inference.Uint64:
			dst = strconv.AppendUint(dst, binary.LittleEndian.Uint64(d[off:]), 10)
		case inference.Int8:
			dst = strconv.AppendInt(dst, int64(int8(d[off])), 10)
		case inference.Int16:
			dst = strconv.AppendInt(dst, int64(int16(binary.LittleEndian.Uint16(d[off:]))), 10)
		case inference.Int32:
			dst = strconv.AppendInt(dst, int64(int32(binary.LittleEndian.Uint32(d[off:]))), 10)
		case inference.Int64:
			dst = strconv.AppendInt(dst, int64(binary.LittleEndian.Uint64(d[off:])), 10)
		case inference.FP16, inference.BF16, inference.FP32:
			var f float32
			switch t.DataType {
			case inference.FP16:
				f = halfToFloat32(binary.LittleEndian.Uint16(d[off:]))
			case inference.BF16:
				f = bf16ToFloat32(binary.LittleEndian.Uint16(d[off:]))
			default:
				f = math.Float32frombits(binary.LittleEndian.Uint32(d[off:]))
			}
			if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
				return dst, nonFinite(t, i, float64(f))
			}
			dst = strconv.AppendFloat(dst, float64(f), 'g', -1, 32)
		case inference.FP64:
			f := math.Float64frombits(binary.LittleEndian.Uint64(d[off:]))
			if math.IsNaN(f) || math.IsInf(f, 0) {
				return dst, nonFinite(t, i, f)
			}
			dst = strconv.AppendFloat(dst, f, 'g', -1, 64)
		case inference.Bytes:
			l := int(binary.LittleEndian.Uint32(d))
			s := d[4 : 4+l]
			if !utf8.Valid(s) {
				return dst, inference.Errorf(inference.KindInvalid,
					"codec: tensor %q: BYTES element %d is not UTF-8, which JSON cannot carry; ask for binary_data", t.Name, i)
			}
			dst = appendString(dst, s)
			d = d[4+l:]
		default:
			return dst, inference.Errorf(inference.KindInternal, "codec: tensor %q: cannot encode datatype %s", t.Name, t.DataType)
		}
	}
	return append(dst, ']'), nil
}

func nonFinite(t *inference.Tensor, i int, f float64) error {
	return inference.Errorf(inference.KindInvalid,
		"codec: tensor %q: element %d is %v, which JSON cannot carry; ask for binary_data", t.Name, i, f)
}

const hexDigits = "0123456789abcdef"

// appendString writes s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendString[S string | []byte](dst []byte, s S) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRune([]byte(s[i:min(i+utf8.UTFMax, len(s))]))
			if r == utf8.RuneError && size == 1 {
				dst = append(dst, s[start:i]...)
				dst = append(dst, `\ufffd`...)
				start = i + 1
				continue
			}
			i += size - 1
			continue
		}
		if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
