package codec

import (
	"fmt"
	"strings"
	"testing"

	"github.com/batchmesh/batchmesh/internal/inference"
)

func TestDecodeRequestErrors(t *testing.T) {
	const (
		okInput = `{"name":"x","datatype":"FP32","shape":[1],"data":[1]}`
		okBody  = `{"inputs":[` + okInput + `]}`
	)
	// in wraps one input of the given datatype, shape and data.
	in := func(datatype, shape, data string) string {
		return `{"inputs":[{"name":"x","datatype":"` + datatype + `","shape":` + shape + `,"data":` + data + `}]}`
	}
	deep := strings.Repeat("[", 65) + "1" + strings.Repeat("]", 65)
	binHeader := func(params string) string {
		return `{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"parameters":` + params + `}]}`
	}
	tests := []struct {
		name      string
		body      string
		headerLen int // 0 here means NoHeader; see hdr
		hdr       *int
		want      []string
	}{
		// JSON syntax and types
		{name: "empty body", body: "", want: []string{"malformed JSON"}},
		{name: "not JSON", body: "hello", want: []string{"malformed JSON at byte 1"}},
		{name: "truncated", body: `{"inputs":[`, want: []string{"malformed JSON"}},
		{name: "trailing object", body: okBody + `{}`, want: []string{"data after the top-level object"}},
		{name: "trailing brace", body: okBody + `}`, want: []string{"data after the top-level object"}},
		{name: "trailing bracket", body: okBody + " \n]", want: []string{"data after the top-level object"}},
		{name: "top-level array", body: `[` + okBody + `]`, want: []string{"must be an object"}},
		{name: "inputs an object", body: `{"inputs":{}}`, want: []string{`field "inputs" must be an array`}},
		{name: "shape fractional", body: in("FP32", "[1.5]", "[1]"), want: []string{`"inputs.shape"`, "integer"}},
		{name: "shape a string", body: in("FP32", `"1"`, "[1]"), want: []string{`"inputs.shape"`, "integer"}},
		{name: "name a number", body: `{"inputs":[{"name":1,"datatype":"FP32","shape":[1],"data":[1]}]}`, want: []string{`"inputs.name" must be a string`}},
		{name: "id a number", body: `{"id":1,"inputs":[` + okInput + `]}`, want: []string{`"id" must be a string`}},

		// missing or bad fields
		{name: "no inputs field", body: `{}`, want: []string{"no inputs"}},
		{name: "null inputs", body: `{"inputs":null}`, want: []string{"no inputs"}},
		{name: "empty inputs", body: `{"inputs":[]}`, want: []string{"no inputs", `"inputs" must list at least one tensor`}},
		{name: "json null", body: `null`, want: []string{"no inputs"}},
		{name: "missing name", body: `{"inputs":[{"datatype":"FP32","shape":[1],"data":[1]}]}`, want: []string{"inputs[0]: name is missing"}},
		{name: "missing name second", body: `{"inputs":[` + okInput + `,{"name":"","datatype":"FP32","shape":[1],"data":[1]}]}`, want: []string{"inputs[1]: name is missing"}},
		{name: "missing datatype", body: `{"inputs":[{"name":"x","shape":[1],"data":[1]}]}`, want: []string{`input "x": datatype is missing`, inference.DataTypeNames}},
		{name: "unknown datatype", body: in("FLOAT32", "[1]", "[1]"), want: []string{`input "x": unknown datatype "FLOAT32"`, "allowed: " + inference.DataTypeNames}},
		{name: "lowercase datatype", body: in("fp32", "[1]", "[1]"), want: []string{`unknown datatype "fp32"`, "allowed:"}},
		{name: "missing shape", body: `{"inputs":[{"name":"x","datatype":"FP32","data":[1]}]}`, want: []string{`input "x": shape is missing`}},
		{name: "null shape", body: in("FP32", "null", "[1]"), want: []string{`input "x": shape is missing`}},
		{name: "negative dimension", body: in("FP32", "[-1]", "[1]"), want: []string{`"x"`, "dimension 0 is -1"}},
		{name: "shape too large", body: in("FP32", "[1099511627776,2]", "[1]"), want: []string{`"x"`, "more than 1099511627776 elements"}},
		{name: "missing data", body: `{"inputs":[{"name":"x","datatype":"FP32","shape":[1]}]}`, want: []string{`input "x": data is missing`, "binary_data_size"}},
		{name: "null data", body: in("FP32", "[1]", "null"), want: []string{`input "x": data is missing`}},
		{name: "duplicate input", body: `{"inputs":[` + okInput + `,` + okInput + `]}`, want: []string{`input "x" appears twice`}},
		{name: "output without name", body: `{"inputs":[` + okInput + `],"outputs":[{"parameters":{}}]}`, want: []string{"outputs[0]: name is missing"}},

		// parameters
		{name: "request parameter object", body: `{"parameters":{"p":{}},"inputs":[` + okInput + `]}`, want: []string{`request parameter "p" must be a string, number or boolean`}},
		{name: "request parameter null", body: `{"parameters":{"p":null},"inputs":[` + okInput + `]}`, want: []string{`request parameter "p"`}},
		{name: "request parameter too big", body: `{"parameters":{"p":1e400},"inputs":[` + okInput + `]}`, want: []string{`request parameter "p": 1e400 is not a representable number`}},
		{name: "input parameter array", body: `{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1],"parameters":{"q":[1]}}]}`, want: []string{`input "x" parameter "q"`}},
		{name: "output parameter object", body: `{"inputs":[` + okInput + `],"outputs":[{"name":"y","parameters":{"r":{}}}]}`, want: []string{`output "y" parameter "r"`}},

		// data against shape and datatype
		{name: "fewer elements than shape", body: in("FP32", "[2,3]", "[[1,2],[3,4,5]]"), want: []string{`input "x"`, "[2,3]", "needs 6 elements", "data has 5"}},
		{name: "more elements than shape", body: in("INT8", "[2]", "[1,2,3]"), want: []string{`input "x"`, "needs 2 elements", "data has 3"}},
		{name: "bytes count", body: in("BYTES", "[2]", `["a"]`), want: []string{`input "x"`, "needs 2 elements, data has 1"}},
		{name: "bytes as numbers", body: in("BYTES", "[2]", `[1,2]`), want: []string{`input "x"`, "data element 0", "BYTES elements must be JSON strings", `"1"`}},
		{name: "bytes as object", body: in("BYTES", "[1]", `[{}]`), want: []string{"BYTES elements must be JSON strings"}},
		{name: "int with fraction", body: in("INT32", "[2]", "[1,1.5]"), want: []string{`input "x"`, "data element 1", "INT32 elements must be JSON integers, found 1.5"}},
		{name: "int with exponent", body: in("INT64", "[1]", "[1e2]"), want: []string{"INT64 elements must be JSON integers, found 1e2"}},
		{name: "uint with fraction", body: in("UINT8", "[1]", "[2.0]"), want: []string{"UINT8 elements must be JSON integers, found 2.0"}},
		{name: "int8 over", body: in("INT8", "[2]", "[127,128]"), want: []string{"data element 1", "128 is out of the range of INT8"}},
		{name: "int8 under", body: in("INT8", "[1]", "[-129]"), want: []string{"-129 is out of the range of INT8"}},
		{name: "uint8 over", body: in("UINT8", "[1]", "[256]"), want: []string{"256 is out of the range of UINT8"}},
		{name: "uint8 negative", body: in("UINT8", "[1]", "[-1]"), want: []string{"-1 is out of the range of UINT8"}},
		{name: "uint16 over", body: in("UINT16", "[1]", "[65536]"), want: []string{"65536 is out of the range of UINT16"}},
		{name: "int16 under", body: in("INT16", "[1]", "[-32769]"), want: []string{"-32769 is out of the range of INT16"}},
		{name: "uint32 over", body: in("UINT32", "[1]", "[4294967296]"), want: []string{"4294967296 is out of the range of UINT32"}},
		{name: "int32 over", body: in("INT32", "[1]", "[2147483648]"), want: []string{"2147483648 is out of the range of INT32"}},
		{name: "uint64 over", body: in("UINT64", "[1]", "[18446744073709551616]"), want: []string{"18446744073709551616 is out of the range of UINT64"}},
		{name: "uint64 negative", body: in("UINT64", "[1]", "[-18446744073709551615]"), want: []string{"out of the range of UINT64"}},
		{name: "int64 over", body: in("INT64", "[1]", "[9223372036854775808]"), want: []string{"9223372036854775808 is out of the range of INT64"}},
		{name: "int64 under", body: in("INT64", "[1]", "[-9223372036854775809]"), want: []string{"out of the range of INT64"}},
		{name: "string in FP32", body: in("FP32", "[1]", `["1.0"]`), want: []string{`input "x"`, "FP32 elements must be JSON numbers, found a string"}},
		{name: "string in INT64", body: in("INT64", "[1]", `["5"]`), want: []string{"INT64 elements must be JSON integers, found a string"}},
		{name: "string in BOOL", body: in("BOOL", "[1]", `["true"]`), want: []string{"BOOL elements must be JSON booleans, found a string"}},
		{name: "null in FP64", body: in("FP64", "[2]", "[1,null]"), want: []string{"data element 1", "FP64 elements must be JSON numbers, found null"}},
		{name: "bool in INT32", body: in("INT32", "[1]", "[true]"), want: []string{"INT32 elements must be JSON integers, found true"}},
		{name: "number in BOOL", body: in("BOOL", "[1]", "[1]"), want: []string{"BOOL elements must be true or false, found 1"}},
		{name: "object in FP32", body: in("FP32", "[1]", "[{}]"), want: []string{`unexpected '{'`}},
		{name: "FP16 overflow", body: in("FP16", "[1]", "[65520]"), want: []string{"65520 is out of the range of FP16"}},
		{name: "FP16 negative overflow", body: in("FP16", "[1]", "[-1e6]"), want: []string{"-1e6 is out of the range of FP16"}},
		{name: "FP16 beyond FP32", body: in("FP16", "[1]", "[1e39]"), want: []string{"1e39 is out of the range of FP16"}},
		{name: "BF16 overflow", body: in("BF16", "[1]", "[3.4e38]"), want: []string{"3.4e38 is out of the range of BF16"}},
		{name: "FP32 overflow", body: in("FP32", "[1]", "[1e39]"), want: []string{"1e39 is out of the range of FP32"}},
		{name: "FP64 overflow", body: in("FP64", "[1]", "[-1e309]"), want: []string{"-1e309 is out of the range of FP64"}},
		{name: "deep nesting", body: in("FP32", "[1]", deep), want: []string{`input "x"`, "nested deeper than 64"}},
		{name: "very deep nesting", body: in("FP32", "[1]", strings.Repeat("[", 20000)+strings.Repeat("]", 20000)), want: []string{`input "x"`, "nested deeper than 64"}},
		{name: "invalid UTF-8 in BYTES", body: in("BYTES", "[1]", "[\"\xff\"]"), want: []string{"not valid UTF-8"}},
		{name: "invalid UTF-8 in escaped BYTES", body: in("BYTES", "[1]", "[\"\\n\xff\"]"), want: []string{"not valid UTF-8"}},

		// binary tensor data
		{name: "header length 0", body: okBody, hdr: ptr(0), want: []string{"Inference-Header-Content-Length: 0", "not supported"}},
		{name: "header length past the body", body: okBody, hdr: ptr(len(okBody) + 1), want: []string{fmt.Sprintf("Inference-Header-Content-Length is %d but the body has %d bytes", len(okBody)+1, len(okBody))}},
		{name: "header length negative", body: okBody, hdr: ptr(-5), want: []string{"Inference-Header-Content-Length is -5"}},
		{name: "header cuts the JSON", body: okBody, hdr: ptr(10), want: []string{"malformed JSON"}},
		{name: "binary_data_size negative", body: binHeader(`{"binary_data_size":-1}`), want: []string{`input "x": binary_data_size must be a byte count, got -1`}},
		{name: "binary_data_size fractional", body: binHeader(`{"binary_data_size":4.5}`), want: []string{"binary_data_size must be a byte count, got 4.5"}},
		{name: "binary_data_size a string", body: binHeader(`{"binary_data_size":"4"}`), want: []string{"binary_data_size must be a byte count, got 4"}},
		{name: "binary_data_size huge", body: binHeader(`{"binary_data_size":1e30}`), want: []string{"binary_data_size must be a byte count"}},
		{name: "binary_data_size without binary", body: binHeader(`{"binary_data_size":4}`), want: []string{`input "x": binary_data_size is 4 but only 0 binary bytes are left in the body`}},
		{name: "binary_data_size past the body", body: binHeader(`{"binary_data_size":8}`) + "\x00\x00\x80\x3f", hdr: ptr(len(binHeader(`{"binary_data_size":8}`))), want: []string{"binary_data_size is 8 but only 4 binary bytes are left"}},
		{name: "both data and binary_data_size", body: `{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1],"parameters":{"binary_data_size":0}}]}`, want: []string{`input "x": has both data and binary_data_size`}},
		{name: "trailing binary bytes", body: binHeader(`{"binary_data_size":4}`) + "\x00\x00\x80\x3f" + "junk", hdr: ptr(len(binHeader(`{"binary_data_size":4}`))), want: []string{"4 bytes of binary data follow the tensors"}},
		{name: "trailing bytes after JSON tensors", body: okBody + "junk", hdr: ptr(len(okBody)), want: []string{"4 bytes of binary data follow"}},
		{name: "binary size disagrees with shape", body: binHeader(`{"binary_data_size":8}`) + "\x00\x00\x80\x3f\x00\x00\x80\x3f", hdr: ptr(len(binHeader(`{"binary_data_size":8}`))), want: []string{`input "x"`, "needs 1 elements (4 bytes), data has 8 bytes"}},
		{
			name: "binary BOOL not 0 or 1",
			body: `{"inputs":[{"name":"b","datatype":"BOOL","shape":[2],"parameters":{"binary_data_size":2}}]}` + "\x01\x02",
			hdr:  ptr(len(`{"inputs":[{"name":"b","datatype":"BOOL","shape":[2],"parameters":{"binary_data_size":2}}]}`)),
			want: []string{`input "b"`, "BOOL element is 2"},
		},
		{
			name: "binary BYTES truncated",
			body: `{"inputs":[{"name":"s","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":5}}]}` + "\x09\x00\x00\x00a",
			hdr:  ptr(len(`{"inputs":[{"name":"s","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":5}}]}`)),
			want: []string{`input "s"`, "BYTES element 0", "length 9 but only 1 bytes left"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hlen := NoHeader
			if tt.hdr != nil {
				hlen = *tt.hdr
			}
			req, err := DecodeRequest([]byte(tt.body), hlen)
			if err == nil {
				t.Fatalf("DecodeRequest accepted %q: %+v", tt.body, req)
			}
			wantInvalid(t, err, tt.want...)
		})
	}
}
