package codec

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"math/big"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// TestParseData covers the data parser on its own, including inputs that
// encoding/json would reject before DecodeRequest calls it.
func TestParseData(t *testing.T) {
	tests := []struct {
		name    string
		dt      inference.DataType
		in      string
		want    []byte
		wantErr string
	}{
		{name: "flat", dt: inference.Int8, in: "[1,2,3]", want: []byte{1, 2, 3}},
		{name: "nested", dt: inference.Int8, in: "[[1],[2,3]]", want: []byte{1, 2, 3}},
		{name: "bare scalar", dt: inference.Uint8, in: " 9 ", want: []byte{9}},
		{name: "empty", dt: inference.FP32, in: "[ ]", want: []byte{}},
		{name: "empties nested", dt: inference.FP32, in: "[[],[[]]]", want: []byte{}},
		{name: "bool", dt: inference.Bool, in: "[true,false]", want: []byte{1, 0}},
		{name: "escaped string", dt: inference.Bytes, in: `["\u0041\t"]`, want: lenPrefixed("A\t")},
		{name: "raw multibyte", dt: inference.Bytes, in: `["日本"]`, want: lenPrefixed("日本")},
		{name: "exactly 64 deep", dt: inference.Int8, in: strings.Repeat("[", 64) + "5" + strings.Repeat("]", 64), want: []byte{5}},
		{name: "FP32 underflows to zero", dt: inference.FP32, in: "[1e-50]", want: le[float32](0)},
		{name: "FP16 underflows to zero", dt: inference.FP16, in: "[1e-8,-1e-8]", want: le[uint16](0, 0x8000)},
		{name: "FP16 rounds up to smallest subnormal", dt: inference.FP16, in: "[3e-8]", want: le[uint16](1)},

		{name: "65 deep", dt: inference.Int8, in: strings.Repeat("[", 65) + "5" + strings.Repeat("]", 65), wantErr: "nested deeper than 64"},
		{name: "unterminated array", dt: inference.Int8, in: "[1,2", wantErr: "unterminated array"},
		{name: "unterminated nested", dt: inference.Int8, in: "[[1]", wantErr: "unterminated array"},
		{name: "missing comma", dt: inference.Int8, in: "[1 2]", wantErr: "expected ',' or ']', found '2'"},
		{name: "trailing comma", dt: inference.Int8, in: "[1,]", wantErr: "unexpected ']'"},
		{name: "trailing data", dt: inference.Int8, in: "[1] 2", wantErr: "unexpected '2' after data"},
		{name: "nothing", dt: inference.Int8, in: "", wantErr: "unexpected end of data"},
		{name: "leading plus", dt: inference.FP32, in: "[+1]", wantErr: "must be JSON numbers, found +1"},
		{name: "leading zero", dt: inference.Int32, in: "[01]", wantErr: "must be JSON integers, found 01"},
		{name: "NaN literal", dt: inference.FP32, in: "[NaN]", wantErr: "must be JSON numbers, found NaN"},
		{name: "Infinity literal", dt: inference.FP64, in: "[Infinity]", wantErr: "must be JSON numbers, found Infinity"},
		{name: "hex float", dt: inference.FP64, in: "[0x1p3]", wantErr: "must be JSON numbers, found 0x1p3"},
		{name: "underscore", dt: inference.Int64, in: "[1_000]", wantErr: "expected ',' or ']', found '_'"},
		{name: "hex int", dt: inference.Int64, in: "[0x10]", wantErr: "must be JSON integers, found 0x10"},
		{name: "unterminated string", dt: inference.Bytes, in: `["abc`, wantErr: "unterminated string"},
		{name: "backslash at the end", dt: inference.Bytes, in: `["abc\`, wantErr: "unterminated string"},
		{name: "control character", dt: inference.Bytes, in: "[\"a\x01\"]", wantErr: "control character in string"},
		{name: "bad escape", dt: inference.Bytes, in: `["\x"]`, wantErr: "bad string"},
		{name: "invalid UTF-8", dt: inference.Bytes, in: "[\"\xc3\"]", wantErr: "not valid UTF-8"},
		{name: "invalid UTF-8 after escape", dt: inference.Bytes, in: "[\"\\t\xc3\"]", wantErr: "not valid UTF-8"},
		{name: "string in INT8", dt: inference.Int8, in: `["1"]`, wantErr: "INT8 elements must be JSON integers, found a string"},
		{name: "object", dt: inference.Int8, in: `[{"a":1}]`, wantErr: "unexpected '{'"},
		{name: "minus zero unsigned", dt: inference.Uint16, in: "[-0]", wantErr: "UINT16 elements must be JSON integers, found -0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseData("x", tt.dt, []byte(tt.in), 3)
			if tt.wantErr != "" {
				wantInvalid(t, err, `input "x"`, tt.wantErr)
				return
			}
			if err != nil || !bytes.Equal(got, tt.want) {
				t.Errorf("parseData(%s) = %x, %v; want %x", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestParseDataCountsElements(t *testing.T) {
	_, err := parseData("x", inference.Int32, []byte("[[1,2],[3,true]]"), 4)
	wantInvalid(t, err, "data element 3")
}

// TestParseDataBoundsAllocation checks that a shape far larger than the
// data does not size the buffer.
func TestParseDataBoundsAllocation(t *testing.T) {
	got, err := parseData("x", inference.FP64, []byte("[1]"), inference.MaxElements)
	if err != nil {
		t.Fatal(err)
	}
	if cap(got) > 64 {
		t.Errorf("cap = %d for one element with a huge shape", cap(got))
	}
}

func TestValidNumber(t *testing.T) {
	valid := []string{"0", "-0", "1", "-1", "10", "1.5", "0.5", "1e5", "1E5", "1e+5", "1e-5", "-1.25e-10", "123456789012345678901234567890"}
	invalid := []string{"", "-", "+1", "01", "-01", ".5", "1.", "1.e5", "1e", "1e+", "e5", "Inf", "NaN", "0x10", "1_0", "1.5.5", "1e5e5", "--1", "1-"}
	for _, s := range valid {
		if !validNumber([]byte(s)) || !json.Valid([]byte(s)) {
			t.Errorf("validNumber(%q) = false, want true", s)
		}
	}
	for _, s := range invalid {
		if validNumber([]byte(s)) {
			t.Errorf("validNumber(%q) = true, want false", s)
		}
		if json.Valid([]byte(s)) {
			t.Errorf("test bug: %q is valid JSON", s)
		}
	}
}

func TestAppendData(t *testing.T) {
	tests := []struct {
		name string
		dt   inference.DataType
		data []byte
		want string
	}{
		{"bool", inference.Bool, []byte{1, 0}, "[true,false]"},
		{"uint8", inference.Uint8, []byte{0, 255}, "[0,255]"},
		{"uint16", inference.Uint16, le[uint16](65535), "[65535]"},
		{"uint32", inference.Uint32, le[uint32](math.MaxUint32), "[4294967295]"},
		{"uint64", inference.Uint64, le[uint64](math.MaxUint64), "[18446744073709551615]"},
		{"int8", inference.Int8, le[int8](-128, 127), "[-128,127]"},
		{"int16", inference.Int16, le[int16](-32768), "[-32768]"},
		{"int32", inference.Int32, le[int32](math.MinInt32), "[-2147483648]"},
		{"int64", inference.Int64, le[int64](math.MinInt64), "[-9223372036854775808]"},
		{"fp16", inference.FP16, le[uint16](0x3c00, 0x2e66, 0x7bff, 0x0001, 0x8000), "[1,0.099975586,65504,5.9604645e-08,-0]"},
		{"bf16", inference.BF16, le[uint16](0x3f80, 0x3dcd, 0x7f7f), "[1,0.100097656,3.3895314e+38]"},
		{"fp32", inference.FP32, le[float32](0.1, 1e-45, 3.4028235e38, 100), "[0.1,1e-45,3.4028235e+38,100]"},
		{"fp64", inference.FP64, le(0.1, 5e-324, 1e21, math.Copysign(0, -1)), "[0.1,5e-324,1e+21,-0]"},
		{"bytes", inference.Bytes, lenPrefixed("", "a\"\\\n<", "é"), `["","a\"\\\n\u003c","é"]`},
		{"empty", inference.FP32, nil, "[]"},
		{"empty bytes", inference.Bytes, nil, "[]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tensor := inference.Tensor{Name: "x", DataType: tt.dt, Data: tt.data}
			got, err := appendData(nil, &tensor)
			if err != nil || string(got) != tt.want {
				t.Errorf("appendData = %s, %v; want %s", got, err, tt.want)
			}
			back, err := parseData("x", tt.dt, got, 0)
			if err != nil || !bytes.Equal(back, tt.data) {
				t.Errorf("parseData(appendData) = %x, %v; want %x", back, err, tt.data)
			}
		})
	}
}

// TestHalfJSONExhaustive encodes every finite FP16 and BF16 value to JSON
// and back: the JSON text must name exactly the value the bits hold, so that
// JSON and binary requests for it decode to the same canonical bytes.
func TestHalfJSONExhaustive(t *testing.T) {
	for _, dt := range []inference.DataType{inference.FP16, inference.BF16} {
		t.Run(dt.String(), func(t *testing.T) {
			var data []byte
			for h := range 1 << 16 {
				if f := halfOrBF16(dt, uint16(h)); !math.IsNaN(float64(f)) && !math.IsInf(float64(f), 0) {
					data = binary.LittleEndian.AppendUint16(data, uint16(h))
				}
			}
			tensor := inference.Tensor{Name: "x", DataType: dt, Data: data}
			text, err := appendData(nil, &tensor)
			if err != nil {
				t.Fatal(err)
			}
			back, err := parseData("x", dt, text, int64(len(data)/2))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(back, data) {
				for i := 0; i < len(data); i += 2 {
					if back[i] != data[i] || back[i+1] != data[i+1] {
						t.Fatalf("%#04x came back as %#04x", binary.LittleEndian.Uint16(data[i:]), binary.LittleEndian.Uint16(back[i:]))
					}
				}
			}
		})
	}
}

func halfOrBF16(dt inference.DataType, h uint16) float32 {
	if dt == inference.FP16 {
		return halfToFloat32(h)
	}
	return bf16ToFloat32(h)
}

// TestFloatJSONRoundTrip does the same for random FP32 and FP64 bit
// patterns, subnormals included.
func TestFloatJSONRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var f32, f64 []byte
	for len(f32) < 4*100000 {
		if b := r.Uint32(); b&0x7f800000 != 0x7f800000 {
			f32 = binary.LittleEndian.AppendUint32(f32, b)
		}
		if b := r.Uint64(); b&0x7ff0000000000000 != 0x7ff0000000000000 {
			f64 = binary.LittleEndian.AppendUint64(f64, b)
		}
	}
	for _, tc := range []struct {
		dt   inference.DataType
		data []byte
	}{{inference.FP32, f32}, {inference.FP64, f64}} {
		tensor := inference.Tensor{Name: "x", DataType: tc.dt, Data: tc.data}
		text, err := appendData(nil, &tensor)
		if err != nil {
			t.Fatal(err)
		}
		back, err := parseData("x", tc.dt, text, 0)
		if err != nil || !bytes.Equal(back, tc.data) {
			t.Errorf("%s: JSON round trip changed the bits (err %v)", tc.dt, err)
		}
	}
}

func TestAppendString(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{"", `""`},
		{"plain", `"plain"`},
		{"q\"b\\s", `"q\"b\\s"`},
		{"\n\r\t\x00\x1f", `"\n\r\t\u0000\u001f"`},
		{"<a&b>", `"\u003ca\u0026b\u003e"`},
		{"é日😀", `"é日😀"`},
		{"\x7f", "\"\x7f\""},
		{"a\xffb", `"a\ufffdb"`},
		{"\xe6\x97", `"\ufffd\ufffd"`},           // truncated 3-byte rune
		{"\xed\xa0\x80", `"\ufffd\ufffd\ufffd"`}, // surrogate half
		{"x\xc0\xafy", `"x\ufffd\ufffdy"`},       // overlong
	}
	for _, tt := range tests {
		for _, got := range [][]byte{appendString(nil, tt.in), appendString(nil, []byte(tt.in))} {
			if string(got) != tt.want {
				t.Errorf("appendString(%q) = %s, want %s", tt.in, got, tt.want)
			}
		}
	}
}

// TestAppendStringMatchesEncodingJSON checks random strings against
// encoding/json: both must decode to the same text.
func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	alphabet := []string{"a", "\"", "\\", "\n", "\x00", "\x1f", "<", "é", "日", "😀", "\xff", "\xe6", "\x97", "\u2028", "\ufffd"}
	for range 5000 {
		var b strings.Builder
		for range r.IntN(12) {
			b.WriteString(alphabet[r.IntN(len(alphabet))])
		}
		s := b.String()
		got := appendString(nil, s)
		if !json.Valid(got) {
			t.Fatalf("appendString(%q) = %s is not valid JSON", s, got)
		}
		var fromOurs, fromStd string
		std, _ := json.Marshal(s)
		if err := json.Unmarshal(got, &fromOurs); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(std, &fromStd); err != nil {
			t.Fatal(err)
		}
		if fromOurs != fromStd || !utf8.ValidString(fromOurs) {
			t.Fatalf("appendString(%q) decodes to %q; encoding/json's to %q", s, fromOurs, fromStd)
		}
	}
}

func TestAppendStringAllocs(t *testing.T) {
	dst := make([]byte, 0, 256)
	s := "a plain tensor name with é and \"quotes\""
	if n := testing.AllocsPerRun(100, func() { dst = appendString(dst[:0], s) }); n != 0 {
		t.Errorf("appendString: %v allocs, want 0", n)
	}
}

// TestParseDataHalfRounding checks that a JSON number becomes the FP16 or
// BF16 value nearest to it, with one rounding: a client that rounds its
// float64 to FP16 itself and sends binary gets the same bytes as one that
// sends the float64 as JSON.
func TestParseDataHalfRounding(t *testing.T) {
	tests := []struct {
		name string
		dt   inference.DataType
		in   string
		want uint16
	}{
		// 1 + 2^-11 + 2^-30: just above the tie between 1 and the next
		// FP16, but float32 rounds it onto the tie.
		{"FP16 above a tie", inference.FP16, "1.000488282181322574615478515625", 0x3c01},
		{"FP16 below a tie", inference.FP16, "1.000488279387354850769042968750", 0x3c00},
		{"FP16 at a tie", inference.FP16, "1.00048828125", 0x3c00},
		{"FP16 subnormal above a tie", inference.FP16, "2.9802322388562674237988403547205962240695953369140625e-8", 0x0001}, // 2^-25 + 2^-60
		{"FP16 subnormal at a tie", inference.FP16, "2.98023223876953125e-8", 0x0000},
		// 1 + 2^-8 + 2^-30 for BF16.
		{"BF16 above a tie", inference.BF16, "1.003906250931322574615478515625", 0x3f81},
		{"BF16 at a tie", inference.BF16, "1.00390625", 0x3f80},
		{"BF16 just under overflow", inference.BF16, "3.3961e38", 0x7f7f},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseData("x", tt.dt, []byte(tt.in), 1)
			if err != nil || binary.LittleEndian.Uint16(got) != tt.want {
				t.Errorf("parseData(%s) = %x, %v; want %#04x", tt.in, got, err, tt.want)
			}
		})
	}

	r := rand.New(rand.NewPCG(7, 8))
	for range 50000 {
		// A float64 near a random FP16 midpoint, or anywhere in range.
		var x float64
		h := uint16(r.IntN(0x7bff))
		switch r.IntN(3) {
		case 0:
			mid := (halfValue(h) + halfValue(h+1)) / 2
			x = mid + float64(r.IntN(2001)-1000)*math.Abs(mid)*0x1p-52
		case 1:
			x = (halfValue(h) + halfValue(h+1)) / 2
		default:
			x = math.Ldexp(r.Float64(), r.IntN(41)-25) // below 2^15
		}
		if r.IntN(2) == 0 {
			x = -x
		}
		text := strconv.FormatFloat(x, 'g', -1, 64)
		got, err := parseData("x", inference.FP16, []byte(text), 1)
		if err != nil {
			t.Fatalf("parseData(%s): %v", text, err)
		}
		if g, want := binary.LittleEndian.Uint16(got), nearestHalf(x); g != want {
			t.Fatalf("FP16 parseData(%s) = %#04x, want %#04x", text, g, want)
		}

		// BF16, in its normal range, against math/big rounding to 8 bits.
		y := math.Ldexp(1+r.Float64(), r.IntN(250)-125)
		if r.IntN(2) == 0 {
			y = math.Float64frombits(math.Float64bits(y)&^(1<<45-1) | 1<<44 | uint64(r.IntN(3))) // near a BF16 tie
		}
		text = strconv.FormatFloat(y, 'g', -1, 64)
		got, err = parseData("x", inference.BF16, []byte(text), 1)
		if err != nil {
			t.Fatalf("parseData(%s): %v", text, err)
		}
		ref, _ := new(big.Float).SetMode(big.ToNearestEven).SetPrec(8).SetFloat64(y).Float32()
		if g, want := binary.LittleEndian.Uint16(got), uint16(math.Float32bits(ref)>>16); g != want {
			t.Fatalf("BF16 parseData(%s) = %#04x, want %#04x", text, g, want)
		}
	}
}
