package codec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// datatypeCases holds one tensor per datatype, in nested and flat JSON and
// in the canonical bytes both must decode to. Values include each type's
// boundaries.
var datatypeCases = []struct {
	datatype string
	shape    string
	nested   string
	flat     string
	want     []byte
}{
	{
		datatype: "BOOL", shape: "[2,2]",
		nested: "[[true,false],[false,true]]", flat: "[true,false,false,true]",
		want: []byte{1, 0, 0, 1},
	},
	{
		datatype: "UINT8", shape: "[2,2]",
		nested: "[[0,1],[254,255]]", flat: "[0,1,254,255]",
		want: []byte{0, 1, 254, 255},
	},
	{
		datatype: "UINT16", shape: "[2,2]",
		nested: "[[0,1],[65534,65535]]", flat: "[0,1,65534,65535]",
		want: le[uint16](0, 1, 65534, 65535),
	},
	{
		datatype: "UINT32", shape: "[2,2]",
		nested: "[[0,1],[4294967294,4294967295]]", flat: "[0,1,4294967294,4294967295]",
		want: le[uint32](0, 1, 4294967294, 4294967295),
	},
	{
		datatype: "UINT64", shape: "[2,2]",
		nested: "[[0,1],[18446744073709551614,18446744073709551615]]", flat: "[0,1,18446744073709551614,18446744073709551615]",
		want: le[uint64](0, 1, math.MaxUint64-1, math.MaxUint64),
	},
	{
		datatype: "INT8", shape: "[2,2]",
		nested: "[[-128,-1],[0,127]]", flat: "[-128,-1,0,127]",
		want: le[int8](-128, -1, 0, 127),
	},
	{
		datatype: "INT16", shape: "[2,2]",
		nested: "[[-32768,-1],[0,32767]]", flat: "[-32768,-1,0,32767]",
		want: le[int16](math.MinInt16, -1, 0, math.MaxInt16),
	},
	{
		datatype: "INT32", shape: "[2,2]",
		nested: "[[-2147483648,-1],[-0,2147483647]]", flat: "[-2147483648,-1,0,2147483647]",
		want: le[int32](math.MinInt32, -1, 0, math.MaxInt32),
	},
	{
		datatype: "INT64", shape: "[2,2]",
		nested: "[[-9223372036854775808,-1],[0,9223372036854775807]]", flat: "[-9223372036854775808,-1,0,9223372036854775807]",
		want: le[int64](math.MinInt64, -1, 0, math.MaxInt64),
	},
	{
		// max, -max, smallest subnormal, largest subnormal, smallest
		// normal, -0, 0.1 (rounded), 65519 (rounds down to max)
		datatype: "FP16", shape: "[2,4]",
		nested: "[[65504,-65504,5.960464477539063e-08,6.097555160522461e-05],[6.103515625e-05,-0,0.1,65519]]",
		flat:   "[65504,-65504,5.960464477539063e-08,6.097555160522461e-05,6.103515625e-05,-0.0,1e-1,65519]",
		want:   le[uint16](0x7bff, 0xfbff, 0x0001, 0x03ff, 0x0400, 0x8000, 0x2e66, 0x7bff),
	},
	{
		// 1, -2, max, 0.1 (rounded), smallest subnormal 2^-133
		datatype: "BF16", shape: "[5]",
		nested: "[1,-2,3.3895313892515355e38,0.1,9.183549615799121e-41]",
		flat:   "[1.0,-2e0,3.3895313892515355E+38,0.1,9.18355e-41]",
		want:   le[uint16](0x3f80, 0xc000, 0x7f7f, 0x3dcd, 0x0001),
	},
	{
		datatype: "FP32", shape: "[3,2]",
		nested: "[[1.5,-0],[3.4028235e38,1e-45],[0.1,-2.5]]", flat: "[1.5,-0.0,3.4028234663852886e38,1.401298464324817e-45,0.1,-2.5]",
		want: le(float32(1.5), float32(math.Copysign(0, -1)), float32(math.MaxFloat32), float32(math.SmallestNonzeroFloat32), float32(0.1), float32(-2.5)),
	},
	{
		datatype: "FP64", shape: "[2,2]",
		nested: "[[1.7976931348623157e308,5e-324],[-0,0.1]]", flat: "[1.7976931348623157e+308,4.9406564584124654e-324,-0,0.1]",
		want: le(math.MaxFloat64, math.SmallestNonzeroFloat64, math.Copysign(0, -1), 0.1),
	},
	{
		datatype: "BYTES", shape: "[2,3]",
		nested: `[["", "abc", "\u00e9"], ["h\u00e9llo", "a\"b\\c\n\u0000", "\ud83d\ude00"]]`,
		flat:   `["","abc","é","héllo","a\"b\\c\n\u0000","😀"]`,
		want:   lenPrefixed("", "abc", "é", "héllo", "a\"b\\c\n\x00", "😀"),
	},
}

func TestDecodeRequestDatatypes(t *testing.T) {
	for _, tc := range datatypeCases {
		t.Run(tc.datatype, func(t *testing.T) {
			var shape []int64
			if err := json.Unmarshal([]byte(tc.shape), &shape); err != nil {
				t.Fatal(err)
			}
			want := inference.Request{Inputs: []inference.Tensor{{
				Name: "x", DataType: mustDataType(t, tc.datatype), Shape: shape, Data: tc.want,
			}}}
			for _, data := range []struct{ name, json string }{{"nested", tc.nested}, {"flat", tc.flat}} {
				body := fmt.Sprintf(`{"inputs":[{"name":"x","datatype":%q,"shape":%s,"data":%s}]}`, tc.datatype, tc.shape, data.json)
				got, err := DecodeRequest([]byte(body), NoHeader)
				if err != nil {
					t.Fatalf("%s: %v", data.name, err)
				}
				if d := diff(want, got); d != "" {
					t.Errorf("%s JSON:\n%s", data.name, d)
				}
			}

			// The same values as binary tensor data decode to the same
			// request, so a cache keyed on canonical bytes sees one entry.
			body, hlen := withBinary(fmt.Sprintf(`{"inputs":[{"name":"x","datatype":%q,"shape":%s,"parameters":{"binary_data_size":%d}}]}`,
				tc.datatype, tc.shape, len(tc.want)), tc.want)
			got, err := DecodeRequest(body, hlen)
			if err != nil {
				t.Fatalf("binary: %v", err)
			}
			if d := diff(want, got); d != "" {
				t.Errorf("binary:\n%s", d)
			}
			if len(got.Inputs[0].Data) > 0 && &got.Inputs[0].Data[0] != &body[hlen] {
				t.Error("binary tensor does not alias the body")
			}
		})
	}
}

func TestDecodeRequestShapes(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  inference.Tensor
	}{
		{
			name:  "scalar shape with a bare value",
			input: `{"name":"x","datatype":"INT32","shape":[],"data":7}`,
			want:  inference.Tensor{Name: "x", DataType: inference.Int32, Shape: []int64{}, Data: le[int32](7)},
		},
		{
			name:  "one element with a bare value",
			input: `{"name":"x","datatype":"FP64","shape":[1],"data":2.5}`,
			want:  inference.Tensor{Name: "x", DataType: inference.FP64, Shape: []int64{1}, Data: le(2.5)},
		},
		{
			name:  "zero rows",
			input: `{"name":"x","datatype":"FP32","shape":[0,4],"data":[]}`,
			want:  inference.Tensor{Name: "x", DataType: inference.FP32, Shape: []int64{0, 4}},
		},
		{
			name:  "empty nested arrays",
			input: `{"name":"x","datatype":"FP32","shape":[2,0],"data":[[],[]]}`,
			want:  inference.Tensor{Name: "x", DataType: inference.FP32, Shape: []int64{2, 0}},
		},
		{
			name:  "whitespace everywhere",
			input: "{\"name\":\"x\",\"datatype\":\"INT16\",\"shape\":[2,2],\"data\":\n[ [ 1 ,\t2 ] ,\r\n [3,4] ]\n}",
			want:  inference.Tensor{Name: "x", DataType: inference.Int16, Shape: []int64{2, 2}, Data: le[int16](1, 2, 3, 4)},
		},
		{
			name:  "three levels",
			input: `{"name":"x","datatype":"UINT8","shape":[2,2,2],"data":[[[1,2],[3,4]],[[5,6],[7,8]]]}`,
			want:  inference.Tensor{Name: "x", DataType: inference.Uint8, Shape: []int64{2, 2, 2}, Data: []byte{1, 2, 3, 4, 5, 6, 7, 8}},
		},
		{
			name:  "parameters kept, binary_data_size dropped",
			input: `{"name":"x","datatype":"BOOL","shape":[1],"data":[true],"parameters":{"content_type":"np","n":3}}`,
			want: inference.Tensor{Name: "x", DataType: inference.Bool, Shape: []int64{1}, Data: []byte{1},
				Parameters: inference.Parameters{"content_type": "np", "n": int64(3)}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeRequest([]byte(`{"inputs":[`+tt.input+`]}`), NoHeader)
			if err != nil {
				t.Fatal(err)
			}
			if d := diff(tt.want, got.Inputs[0]); d != "" {
				t.Errorf("\n%s", d)
			}
		})
	}
}

func TestDecodeRequestFields(t *testing.T) {
	body := `{
		"id": "req-\u00e9-1",
		"parameters": {"priority": 1, "timeout": 2.5, "binary_data_output": true, "tag": "a", "big": 18446744073709551615},
		"inputs": [
			{"name": "a", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]},
			{"name": "b", "datatype": "BYTES", "shape": [1], "data": ["x"], "parameters": {"binary_data_size": null}}
		],
		"outputs": [{"name": "y", "parameters": {"binary_data": false, "classification": 3}}, {"name": "z"}]
	}`
	// binary_data_size: null is not a byte count.
	_, err := DecodeRequest([]byte(body), NoHeader)
	wantInvalid(t, err, `input "b"`, "binary_data_size must be a byte count")

	body = strings.Replace(body, `, "parameters": {"binary_data_size": null}`, "", 1)
	got, err := DecodeRequest([]byte(body), NoHeader)
	if err != nil {
		t.Fatal(err)
	}
	want := inference.Request{
		ID: "req-é-1",
		Parameters: inference.Parameters{
			"priority": int64(1), "timeout": 2.5, "binary_data_output": true, "tag": "a", "big": float64(math.MaxUint64),
		},
		Inputs: []inference.Tensor{
			{Name: "a", DataType: inference.FP32, Shape: []int64{1, 2}, Data: le[float32](1, 2)},
			{Name: "b", DataType: inference.Bytes, Shape: []int64{1}, Data: lenPrefixed("x")},
		},
		Outputs: []inference.OutputSpec{
			{Name: "y", Parameters: inference.Parameters{"binary_data": false, "classification": int64(3)}},
			{Name: "z"},
		},
	}
	if d := diff(want, got); d != "" {
		t.Errorf("\n%s", d)
	}
	if got.BinaryOutput("y") || !got.BinaryOutput("z") {
		t.Errorf("BinaryOutput(y, z) = %v, %v; want false (per output), true (request)", got.BinaryOutput("y"), got.BinaryOutput("z"))
	}
	if n, err := got.Rows(); n != 1 || err != nil {
		t.Errorf("Rows() = %d, %v; want 1", n, err)
	}

	// No outputs: nil (all); an empty list: none.
	for _, tt := range []struct {
		outputs string
		wantNil bool
	}{{"", true}, {`,"outputs":null`, true}, {`,"outputs":[]`, false}} {
		r, err := DecodeRequest([]byte(`{"inputs":[{"name":"a","datatype":"INT8","shape":[1],"data":[1]}]`+tt.outputs+`}`), NoHeader)
		if err != nil {
			t.Fatal(err)
		}
		if (r.Outputs == nil) != tt.wantNil || len(r.Outputs) != 0 {
			t.Errorf("outputs %q: Outputs = %#v, want nil %v", tt.outputs, r.Outputs, tt.wantNil)
		}
	}
}

func TestDecodeRequestBinary(t *testing.T) {
	a := le[float32](1, 2, 3, 4)
	s := lenPrefixed("hello", "")
	header := `{"id":"7","inputs":[
		{"name":"a","datatype":"FP32","shape":[2,2],"parameters":{"binary_data_size":16}},
		{"name":"j","datatype":"INT32","shape":[2],"data":[5,6]},
		{"name":"s","datatype":"BYTES","shape":[2],"parameters":{"binary_data_size":13,"note":"kept"}},
		{"name":"e","datatype":"FP32","shape":[2,0],"parameters":{"binary_data_size":0}}
	]}`
	body, hlen := withBinary(header, a, s)
	got, err := DecodeRequest(body, hlen)
	if err != nil {
		t.Fatal(err)
	}
	want := inference.Request{ID: "7", Inputs: []inference.Tensor{
		{Name: "a", DataType: inference.FP32, Shape: []int64{2, 2}, Data: a},
		{Name: "j", DataType: inference.Int32, Shape: []int64{2}, Data: le[int32](5, 6)},
		{Name: "s", DataType: inference.Bytes, Shape: []int64{2}, Data: s, Parameters: inference.Parameters{"note": "kept"}},
		{Name: "e", DataType: inference.FP32, Shape: []int64{2, 0}},
	}}
	if d := diff(want, got); d != "" {
		t.Errorf("\n%s", d)
	}
	if &got.Inputs[0].Data[0] != &body[hlen] || &got.Inputs[2].Data[0] != &body[hlen+16] {
		t.Error("binary tensors do not alias the body at their offsets")
	}
	if c := cap(got.Inputs[0].Data); c != 16 {
		t.Errorf("binary tensor cap = %d, want 16 so an append cannot overwrite the next tensor", c)
	}

	// A header length equal to the body: all JSON, same as no header.
	j := []byte(`{"inputs":[{"name":"j","datatype":"INT32","shape":[2],"data":[5,6]}]}`)
	r1, err1 := DecodeRequest(j, len(j))
	r2, err2 := DecodeRequest(j, NoHeader)
	if err1 != nil || err2 != nil || diff(r1, r2) != "" {
		t.Errorf("headerLen = len(body): %+v, %v; NoHeader: %+v, %v", r1, err1, r2, err2)
	}
}

func TestDecodeRequestUTF8Names(t *testing.T) {
	// encoding/json replaces invalid UTF-8 in names with U+FFFD; tensor
	// names are therefore always valid UTF-8 and re-encode unchanged.
	got, err := DecodeRequest([]byte("{\"inputs\":[{\"name\":\"a\xffb\",\"datatype\":\"INT8\",\"shape\":[1],\"data\":[1]}]}"), NoHeader)
	if err != nil {
		t.Fatal(err)
	}
	if name := got.Inputs[0].Name; name != "a\uFFFDb" {
		t.Errorf("name = %q, want %q", name, "a\uFFFDb")
	}
}

// requestCases are requests that must survive EncodeRequest → DecodeRequest
// in both encodings.
func requestCases(t testing.TB) map[string]inference.Request {
	t.Helper()
	cases := map[string]inference.Request{
		"minimal": {Inputs: []inference.Tensor{{Name: "x", DataType: inference.FP32, Shape: []int64{1, 2}, Data: le[float32](1, 2)}}},
		"everything": {
			ID: `id "<&>" é` + "\n",
			Parameters: inference.Parameters{
				"s": "str", "t": true, "f": false, "i": int64(-7), "one": 1.0, "neg zero": math.Copysign(0, -1),
				"half": 0.5, "huge": 1e300, "tiny": 5e-324, inference.ParamBinaryDataOutput: true,
			},
			Inputs: []inference.Tensor{
				{Name: "a", DataType: inference.FP16, Shape: []int64{2, 2}, Data: le[uint16](0x3c00, 0x8000, 0x7bff, 0x0001),
					Parameters: inference.Parameters{"content_type": "hg_jsonlist"}},
				{Name: "b", DataType: inference.Bytes, Shape: []int64{2}, Data: lenPrefixed("", "héllo\x00\"")},
				{Name: "c", DataType: inference.Bool, Shape: []int64{2, 1}, Data: []byte{0, 1}},
				{Name: "d", DataType: inference.Uint64, Shape: []int64{2}, Data: le[uint64](0, math.MaxUint64)},
				{Name: "e", DataType: inference.FP64, Shape: []int64{2, 0}},
				{Name: "f", DataType: inference.Int8, Shape: []int64{}, Data: le[int8](-128)},
			},
			Outputs: []inference.OutputSpec{
				{Name: "y", Parameters: inference.Parameters{inference.ParamBinaryData: false, "classification": int64(2)}},
				{Name: "z"},
			},
		},
		"no outputs wanted": {
			Inputs:  []inference.Tensor{{Name: "x", DataType: inference.Int32, Shape: []int64{1}, Data: le[int32](3)}},
			Outputs: []inference.OutputSpec{},
		},
	}
	for _, tc := range datatypeCases {
		body := fmt.Sprintf(`{"inputs":[{"name":"x","datatype":%q,"shape":%s,"data":%s}]}`, tc.datatype, tc.shape, tc.nested)
		req, err := DecodeRequest([]byte(body), NoHeader)
		if err != nil {
			t.Fatal(err)
		}
		cases["datatype "+tc.datatype] = req
	}
	return cases
}

func TestEncodeRequestRoundTrip(t *testing.T) {
	for name, req := range requestCases(t) {
		for _, bin := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/binary=%v", name, bin), func(t *testing.T) {
				prefix := []byte("PREFIX")
				body, hlen, err := EncodeRequest(prefix, &req, bin)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.HasPrefix(body, prefix) {
					t.Fatal("EncodeRequest did not append to dst")
				}
				body = body[len(prefix):]
				if !bin && hlen != NoHeader {
					t.Errorf("JSON: headerLen = %d, want NoHeader", hlen)
				}
				header := body
				if bin {
					if hlen <= 0 || hlen > len(body) {
						t.Fatalf("binary: headerLen = %d of %d", hlen, len(body))
					}
					header = body[:hlen]
					var all []byte
					for _, in := range req.Inputs {
						all = append(all, in.Data...)
					}
					if !bytes.Equal(body[hlen:], all) {
						t.Errorf("binary part = %x, want the inputs' data in order %x", body[hlen:], all)
					}
				}
				if !json.Valid(header) {
					t.Fatalf("header is not valid JSON: %s", header)
				}
				got, err := DecodeRequest(body, hlen)
				if err != nil {
					t.Fatalf("decoding %s: %v", header, err)
				}
				if d := diff(req, got); d != "" {
					t.Errorf("round trip:\n%s\nheader: %s", d, header)
				}
				if (req.Outputs == nil) != (got.Outputs == nil) {
					t.Errorf("Outputs nil %v, want nil %v (nil asks for all outputs, empty for none)", got.Outputs == nil, req.Outputs == nil)
				}
			})
		}
	}
}

func TestEncodeRequestGolden(t *testing.T) {
	req := inference.Request{
		ID:         "r1",
		Parameters: inference.Parameters{"z": int64(1), "a": "x", "m": 1.0, "b": true},
		Inputs: []inference.Tensor{
			{Name: "x", DataType: inference.FP32, Shape: []int64{1, 2}, Data: le[float32](0.5, -1),
				Parameters: inference.Parameters{inference.ParamBinaryDataSize: int64(99), "k": "v"}},
		},
		Outputs: []inference.OutputSpec{{Name: "y", Parameters: inference.Parameters{"binary_data": true}}},
	}
	tests := []struct {
		binary bool
		want   string
	}{
		{false, `{"id":"r1","parameters":{"a":"x","b":true,"m":1.0,"z":1},"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"parameters":{"k":"v"},"data":[0.5,-1]}],"outputs":[{"name":"y","parameters":{"binary_data":true}}]}`},
		{true, `{"id":"r1","parameters":{"a":"x","b":true,"m":1.0,"z":1},"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"parameters":{"k":"v","binary_data_size":8}}],"outputs":[{"name":"y","parameters":{"binary_data":true}}]}` + "\x00\x00\x00\x3f\x00\x00\x80\xbf"},
	}
	for _, tt := range tests {
		body, _, err := EncodeRequest(nil, &req, tt.binary)
		if err != nil {
			t.Fatal(err)
		}
		if string(body) != tt.want {
			t.Errorf("binary=%v:\n got %q\nwant %q", tt.binary, body, tt.want)
		}
	}
}

func TestEncodeNonFinite(t *testing.T) {
	tests := []struct {
		name   string
		tensor inference.Tensor
		want   []string
	}{
		{"FP32 NaN", inference.Tensor{Name: "p", DataType: inference.FP32, Shape: []int64{2}, Data: le(float32(1), float32(math.NaN()))}, []string{`tensor "p": element 1 is NaN`, "binary_data"}},
		{"FP32 +Inf", inference.Tensor{Name: "p", DataType: inference.FP32, Shape: []int64{1}, Data: le(float32(math.Inf(1)))}, []string{`element 0 is +Inf`}},
		{"FP64 -Inf", inference.Tensor{Name: "p", DataType: inference.FP64, Shape: []int64{1}, Data: le(math.Inf(-1))}, []string{`element 0 is -Inf`}},
		{"FP64 NaN", inference.Tensor{Name: "p", DataType: inference.FP64, Shape: []int64{1}, Data: le(math.NaN())}, []string{`is NaN`}},
		{"FP16 Inf", inference.Tensor{Name: "h", DataType: inference.FP16, Shape: []int64{1}, Data: le[uint16](0x7c00)}, []string{`tensor "h": element 0 is +Inf`}},
		{"FP16 NaN", inference.Tensor{Name: "h", DataType: inference.FP16, Shape: []int64{1}, Data: le[uint16](0xfe00)}, []string{`is NaN`}},
		{"BF16 -Inf", inference.Tensor{Name: "h", DataType: inference.BF16, Shape: []int64{1}, Data: le[uint16](0xff80)}, []string{`is -Inf`}},
		{"BF16 NaN", inference.Tensor{Name: "h", DataType: inference.BF16, Shape: []int64{1}, Data: le[uint16](0x7fc1)}, []string{`is NaN`}},
		{"BYTES not UTF-8", inference.Tensor{Name: "s", DataType: inference.Bytes, Shape: []int64{2}, Data: lenPrefixed("ok", "\xff\xfe")}, []string{`tensor "s": BYTES element 1 is not UTF-8`, "binary_data"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.tensor.Validate(); err != nil {
				t.Fatalf("bad test tensor: %v", err)
			}
			req := inference.Request{Inputs: []inference.Tensor{tt.tensor}}
			_, _, err := EncodeRequest(nil, &req, false)
			wantInvalid(t, err, tt.want...)

			resp := inference.Response{ModelName: "m", Outputs: []inference.Tensor{tt.tensor}}
			_, _, err = EncodeResponse(nil, &resp, nil)
			wantInvalid(t, err, tt.want...)

			// Binary carries every value.
			body, hlen, err := EncodeRequest(nil, &req, true)
			if err != nil {
				t.Fatalf("binary request: %v", err)
			}
			got, err := DecodeRequest(body, hlen)
			if err != nil || !bytes.Equal(got.Inputs[0].Data, tt.tensor.Data) {
				t.Errorf("binary request round trip: %v, data %x want %x", err, got.Inputs[0].Data, tt.tensor.Data)
			}
			body, hlen, err = EncodeResponse(nil, &resp, func(string) bool { return true })
			if err != nil {
				t.Fatalf("binary response: %v", err)
			}
			gotResp, err := DecodeResponse(body, hlen)
			if err != nil || !bytes.Equal(gotResp.Outputs[0].Data, tt.tensor.Data) {
				t.Errorf("binary response round trip: %v", err)
			}
		})
	}
}

// testResponse has an output of several datatypes; the request asks for
// binary outputs by default and overrides that for two of them.
func testResponse() (inference.Response, inference.Request) {
	resp := inference.Response{
		ModelName:    "resnet",
		ModelVersion: "3",
		ID:           "req-42",
		Parameters:   inference.Parameters{"sequence_id": int64(9), "note": "n", "took": 1.25},
		Outputs: []inference.Tensor{
			{Name: "probs", DataType: inference.FP32, Shape: []int64{2, 3}, Data: le[float32](0.1, 0.2, 0.7, 1, 0, -0.5)},
			{Name: "labels", DataType: inference.Bytes, Shape: []int64{2}, Data: lenPrefixed("cat", "dog")},
			{Name: "ids", DataType: inference.Int64, Shape: []int64{2}, Data: le[int64](3, -1)},
			{Name: "mask", DataType: inference.Bool, Shape: []int64{2, 1}, Data: []byte{1, 0}, Parameters: inference.Parameters{"k": "v"}},
			{Name: "half", DataType: inference.FP16, Shape: []int64{2}, Data: le[uint16](0x3c00, 0xc000)},
			{Name: "empty", DataType: inference.FP32, Shape: []int64{0, 3}},
		},
	}
	req := inference.Request{
		ID:         "req-42",
		Parameters: inference.Parameters{inference.ParamBinaryDataOutput: true},
		Outputs: []inference.OutputSpec{
			{Name: "probs"},
			{Name: "labels", Parameters: inference.Parameters{inference.ParamBinaryData: false}},
			{Name: "ids", Parameters: inference.Parameters{inference.ParamBinaryData: true}},
			{Name: "half", Parameters: inference.Parameters{inference.ParamBinaryData: false}},
		},
	}
	return resp, req
}

func TestEncodeResponseRoundTrip(t *testing.T) {
	resp, req := testResponse()
	jsonReq := inference.Request{Outputs: []inference.OutputSpec{{Name: "probs", Parameters: inference.Parameters{inference.ParamBinaryData: true}}}}
	tests := []struct {
		name       string
		binary     func(string) bool
		wantBinary []string // outputs sent as binary, in order
	}{
		{name: "nil func", binary: nil},
		{name: "all JSON", binary: func(string) bool { return false }},
		{name: "all binary", binary: func(string) bool { return true }, wantBinary: []string{"probs", "labels", "ids", "mask", "half", "empty"}},
		{name: "request default with overrides", binary: req.BinaryOutput, wantBinary: []string{"probs", "ids", "mask", "empty"}},
		{name: "one output asks", binary: jsonReq.BinaryOutput, wantBinary: []string{"probs"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, hlen, err := EncodeResponse([]byte("xx"), &resp, tt.binary)
			if err != nil {
				t.Fatal(err)
			}
			body = body[2:]
			header := body
			if tt.wantBinary == nil {
				if hlen != NoHeader {
					t.Errorf("headerLen = %d, want NoHeader with no binary output", hlen)
				}
			} else {
				if hlen <= 0 || hlen > len(body) {
					t.Fatalf("headerLen = %d of %d", hlen, len(body))
				}
				header = body[:hlen]
			}
			if !json.Valid(header) {
				t.Fatalf("header is not valid JSON: %s", header)
			}

			// Which outputs went binary, according to the header.
			var w struct {
				Outputs []struct {
					Name       string         `json:"name"`
					Parameters map[string]any `json:"parameters"`
					Data       any            `json:"data"`
				} `json:"outputs"`
			}
			if err := json.Unmarshal(header, &w); err != nil {
				t.Fatal(err)
			}
			var gotBinary []string
			var binPart []byte
			for i, o := range w.Outputs {
				_, hasSize := o.Parameters[inference.ParamBinaryDataSize]
				if hasSize == (o.Data != nil) {
					t.Errorf("output %q: binary_data_size %v and data %v; want exactly one", o.Name, hasSize, o.Data)
				}
				if hasSize {
					gotBinary = append(gotBinary, o.Name)
					binPart = append(binPart, resp.Outputs[i].Data...)
				}
			}
			if d := diff(tt.wantBinary, gotBinary); d != "" {
				t.Errorf("binary outputs:\n%s", d)
			}
			if hlen != NoHeader && !bytes.Equal(body[hlen:], binPart) {
				t.Errorf("binary part = %x, want %x", body[hlen:], binPart)
			}

			got, err := DecodeResponse(body, hlen)
			if err != nil {
				t.Fatalf("DecodeResponse: %v\n%s", err, header)
			}
			if d := diff(resp, got); d != "" {
				t.Errorf("round trip:\n%s", d)
			}
			if got.ID != req.ID {
				t.Errorf("ID = %q, want the request's %q echoed", got.ID, req.ID)
			}
		})
	}
}

func TestEncodeResponseGolden(t *testing.T) {
	resp := inference.Response{
		ModelName: "m",
		Outputs: []inference.Tensor{
			{Name: "y", DataType: inference.Int16, Shape: []int64{2}, Data: le[int16](-1, 2)},
			{Name: "s", DataType: inference.Bytes, Shape: []int64{1}, Data: lenPrefixed("a\tb")},
		},
	}
	body, hlen, err := EncodeResponse(nil, &resp, func(name string) bool { return name == "y" })
	if err != nil {
		t.Fatal(err)
	}
	want := `{"model_name":"m","outputs":[{"name":"y","datatype":"INT16","shape":[2],"parameters":{"binary_data_size":4}},{"name":"s","datatype":"BYTES","shape":[1],"data":["a\tb"]}]}`
	if string(body[:hlen]) != want {
		t.Errorf("header:\n got %s\nwant %s", body[:hlen], want)
	}
	if !bytes.Equal(body[hlen:], le[int16](-1, 2)) {
		t.Errorf("binary part = %x", body[hlen:])
	}
}

func TestDecodeResponse(t *testing.T) {
	body := `{"model_name":"m","model_version":"2","id":"i","parameters":{"p":1},"outputs":[{"name":"y","datatype":"FP32","shape":[1],"data":[1.5]}]}`
	got, err := DecodeResponse([]byte(body), NoHeader)
	if err != nil {
		t.Fatal(err)
	}
	want := inference.Response{ModelName: "m", ModelVersion: "2", ID: "i", Parameters: inference.Parameters{"p": int64(1)},
		Outputs: []inference.Tensor{{Name: "y", DataType: inference.FP32, Shape: []int64{1}, Data: le[float32](1.5)}}}
	if d := diff(want, got); d != "" {
		t.Errorf("\n%s", d)
	}

	// A response with no outputs is accepted (a model may return none).
	if r, err := DecodeResponse([]byte(`{"model_name":"m","outputs":[]}`), NoHeader); err != nil || len(r.Outputs) != 0 {
		t.Errorf("empty outputs: %+v, %v", r, err)
	}

	errs := []struct {
		name string
		body string
		hlen int
		want []string
	}{
		{"malformed", `{"model_name":`, NoHeader, []string{"malformed JSON"}},
		{"duplicate output", `{"outputs":[{"name":"y","datatype":"INT8","shape":[1],"data":[1]},{"name":"y","datatype":"INT8","shape":[1],"data":[1]}]}`, NoHeader, []string{`output "y" appears twice`}},
		{"output without name", `{"outputs":[{"datatype":"INT8","shape":[1],"data":[1]}]}`, NoHeader, []string{"outputs[0]: name is missing"}},
		{"output bad datatype", `{"outputs":[{"name":"y","datatype":"INT4","shape":[1],"data":[1]}]}`, NoHeader, []string{`output "y": unknown datatype "INT4"`}},
		{"output bad binary size", `{"outputs":[{"name":"y","datatype":"INT8","shape":[1],"parameters":{"binary_data_size":2}}]}`, NoHeader, []string{`output "y": binary_data_size is 2 but only 0`}},
		{"response parameter object", `{"parameters":{"a":[]},"outputs":[]}`, NoHeader, []string{`response parameter "a"`}},
		{"header 0", `{}`, 0, []string{"not supported"}},
		{"model_name a number", `{"model_name":1}`, NoHeader, []string{`"model_name" must be a string`}},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeResponse([]byte(tt.body), tt.hlen)
			wantInvalid(t, err, tt.want...)
		})
	}
}

func TestAppendError(t *testing.T) {
	tests := []struct {
		msg  string
		want string
	}{
		{"codec: bad", `{"error":"codec: bad"}`},
		{`input "x": <b> & "c"` + "\n", `{"error":"input \"x\": \u003cb\u003e \u0026 \"c\"\n"}`},
		{"bad \xff utf8 \x01", `{"error":"bad \ufffd utf8 \u0001"}`},
		{"", `{"error":""}`},
	}
	for _, tt := range tests {
		got := AppendError([]byte("> "), tt.msg)
		if string(got) != "> "+tt.want {
			t.Errorf("AppendError(%q) = %s, want %s", tt.msg, got, tt.want)
		}
		var w struct{ Error string }
		if err := json.Unmarshal(got[2:], &w); err != nil || w.Error != strings.ToValidUTF8(tt.msg, "\uFFFD") {
			t.Errorf("AppendError(%q) decodes to %q, %v", tt.msg, w.Error, err)
		}
	}
}

func TestParseHeaderLen(t *testing.T) {
	tests := []struct {
		in      string
		want    int
		wantErr bool
	}{
		{in: "", want: NoHeader},
		{in: "0", want: 0},
		{in: "123", want: 123},
		{in: " 42\t", want: 42},
		{in: "007", want: 7},
		{in: "2147483647", want: math.MaxInt32},
		{in: "2147483648", wantErr: true},
		{in: "99999999999999999999", wantErr: true},
		{in: "-1", wantErr: true},
		{in: "+1", wantErr: true},
		{in: "1.0", wantErr: true},
		{in: "0x10", wantErr: true},
		{in: "1_0", wantErr: true},
		{in: " ", wantErr: true},
		{in: "12 34", wantErr: true},
		{in: "abc", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseHeaderLen([]byte(tt.in))
		if tt.wantErr {
			if err == nil {
				t.Errorf("ParseHeaderLen(%q) = %d, want an error", tt.in, got)
				continue
			}
			wantInvalid(t, err, HeaderContentLength, "must be a byte count", strconv.Quote(tt.in))
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseHeaderLen(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

// TestEscapedKeys: object keys are unescaped as encoding/json does, for the
// fields the reader knows and for parameter names (a fuzzing find).
func TestEscapedKeys(t *testing.T) {
	body := `{"\u0069nputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1]}],"parameters":{"a\u0026b":1}}`
	req, err := DecodeRequest([]byte(body), NoHeader)
	if err != nil {
		t.Fatal(err)
	}
	if len(req.Inputs) != 1 || req.Parameters["a&b"] != int64(1) {
		t.Errorf("decoded %+v, want one input and parameter \"a&b\"", req)
	}
}
