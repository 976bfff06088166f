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
		// The fast path stays here, one call shallower: most JSON data is
		// FP32 that fastFloat parses.
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
		return p.float(tok)
	}
	return p.integer(tok)
}

// float appends tok, the text of an element of floating-point p.dt that
// fastFloat left to strconv.
func (p *dataParser) float(tok []byte) error {
	bits := 64
	if p.dt == inference.FP32 {
		bits = 32
	}
	f, err := strconv.ParseFloat(string(tok), bits)
	if err != nil || !validNumber(tok) {
		if errors.Is(err, strconv.ErrRange) {
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

// integer appends tok, the text of an element of integer p.dt.
func (p *dataParser) integer(tok []byte) error {
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
