package codec

import (
	"encoding/binary"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/batchmesh/batchmesh/internal/inference"
)

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
