package codec

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// maxFuzzRows bounds the rows the fuzz targets split into, so that a valid
// tensor of shape [2^40, 0] (no data, 2^40 rows) does not exhaust memory.
const maxFuzzRows = 1 << 12

// seedRequestBodies are realistic v2 request bodies, JSON only.
var seedRequestBodies = []string{
	`{"inputs":[{"name":"input-0","shape":[2,3],"datatype":"FP32","data":[[1.0,2.5,-3],[4e-3,0,6]]}]}`,
	`{"id":"42","parameters":{"priority":1,"timeout":100000,"binary_data_output":true},"inputs":[{"name":"INPUT0","shape":[1,16],"datatype":"INT32","data":[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]}],"outputs":[{"name":"OUTPUT0","parameters":{"binary_data":false}},{"name":"OUTPUT1"}]}`,
	`{"inputs":[{"name":"text","shape":[2],"datatype":"BYTES","data":["hello \u00e9","wor\"ld\n"]},{"name":"mask","shape":[2,1],"datatype":"BOOL","data":[true,false]}]}`,
	`{"inputs":[{"name":"h","shape":[2,2],"datatype":"FP16","data":[65504,-0.5,6e-8,0.1]},{"name":"b","shape":[2],"datatype":"BF16","data":[1,3.3895313892515355e38]}]}`,
	`{"inputs":[{"name":"u","shape":[4],"datatype":"UINT64","data":[0,1,18446744073709551615,7]},{"name":"i","shape":[4],"datatype":"INT8","data":[-128,127,0,-1]}]}`,
	`{"inputs":[{"name":"d","shape":[1,2],"datatype":"FP64","data":[1.7976931348623157e308,5e-324],"parameters":{"content_type":"np"}}]}`,
	`{"inputs":[{"name":"e","shape":[0,8],"datatype":"UINT16","data":[]},{"name":"s","shape":[0],"datatype":"BYTES","data":[]}]}`,
	`{"inputs":[{"name":"x","shape":[],"datatype":"INT64","data":-9223372036854775808}],"outputs":[]}`,
	`{"inputs":[{"name":"x","shape":[2,2],"datatype":"UINT32","data":[[1,2],[3,4]]}],"parameters":{"f":1.0,"n":-0,"big":1e300}}`,
}

// seedBinaryRequests are the requests of requestCases, binary encoded.
func seedBinaryRequests(f *testing.F) (bodies [][]byte, headerLens []int) {
	for _, req := range requestCases(f) {
		body, hlen, err := EncodeRequest(nil, &req, true)
		if err != nil {
			f.Fatal(err)
		}
		bodies, headerLens = append(bodies, body), append(headerLens, hlen)
	}
	return bodies, headerLens
}

// checkDecodeError fails unless err is what every decoder error must be.
func checkDecodeError(t *testing.T, err error) {
	t.Helper()
	if inference.KindOf(err) != inference.KindInvalid || !strings.HasPrefix(err.Error(), "codec: ") {
		t.Fatalf("decode error %q: kind %v, want KindInvalid with the codec prefix", err, inference.KindOf(err))
	}
}

// checkRequest checks the properties every decoded request must have: valid
// tensors, an equal request after a binary and a JSON round trip, and rows
// that split and concatenate back to the same bytes. jsonMustEncode says the
// request came from JSON, so its values can all go back to JSON.
func checkRequest(t *testing.T, req inference.Request, jsonMustEncode bool) {
	t.Helper()
	for i := range req.Inputs {
		if err := req.Inputs[i].Validate(); err != nil {
			t.Fatalf("decoded an invalid tensor: %v", err)
		}
	}
	for _, bin := range []bool{true, false} {
		body, hlen, err := EncodeRequest(nil, &req, bin)
		if err != nil {
			if bin || jsonMustEncode || inference.KindOf(err) != inference.KindInvalid {
				t.Fatalf("EncodeRequest(binary=%v): %v", bin, err)
			}
			continue
		}
		got, err := DecodeRequest(body, hlen)
		if err != nil {
			t.Fatalf("decoding EncodeRequest(binary=%v) output %q: %v", bin, body, err)
		}
		if d := diff(req, got); d != "" || (req.Outputs == nil) != (got.Outputs == nil) {
			t.Fatalf("round trip (binary=%v) changed the request:\n%s\nbody %q", bin, d, body)
		}
	}
	rows, err := req.Rows()
	if err != nil {
		if inference.KindOf(err) != inference.KindInvalid {
			t.Fatalf("Rows: %v", err)
		}
		return
	}
	if rows > maxFuzzRows {
		return
	}
	for i := range req.Inputs {
		checkSplit(t, &req.Inputs[i])
	}
}

// checkSplit splits t into one tensor per row and stacks them again.
func checkSplit(t *testing.T, x *inference.Tensor) {
	t.Helper()
	off := x.RowOffsets(nil)
	rows := len(off) - 1
	if rows == 0 {
		return
	}
	parts := make([]inference.Tensor, rows)
	for i := range parts {
		parts[i] = x.Slice(off, i, i+1)
		if err := parts[i].Validate(); err != nil {
			t.Fatalf("row %d of %q is invalid: %v", i, x.Name, err)
		}
	}
	got, err := inference.Concat(parts)
	if err != nil {
		t.Fatalf("Concat: %v", err)
	}
	if !bytes.Equal(got.Data, x.Data) || fmt.Sprint(got.Shape) != fmt.Sprint(x.Shape) {
		t.Fatalf("split and Concat of %q: shape %v data %x, want %v %x", x.Name, got.Shape, got.Data, x.Shape, x.Data)
	}
}

func FuzzDecodeRequestJSON(f *testing.F) {
	for _, s := range seedRequestBodies {
		f.Add([]byte(s))
	}
	f.Add([]byte(`{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}}`))
	f.Add([]byte(`{"inputs":[{"name":"x","shape":[1099511627776,0],"datatype":"FP32","data":[]}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := DecodeRequest(body, NoHeader)
		if err != nil {
			checkDecodeError(t, err)
			return
		}
		checkRequest(t, req, true)
	})
}

func FuzzDecodeRequestBinary(f *testing.F) {
	bodies, hlens := seedBinaryRequests(f)
	for i := range bodies {
		f.Add(bodies[i], hlens[i])
	}
	for _, s := range seedRequestBodies {
		f.Add([]byte(s), len(s))
	}
	f.Add([]byte(`{"inputs":[{"name":"s","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":6}}]}`+"\x02\x00\x00\x00\xff\xfe"), 88)
	f.Add([]byte(`{"inputs":[{"name":"f","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}}]}`+"\x00\x00\xc0\x7f"), 87)
	f.Fuzz(func(t *testing.T, body []byte, headerLen int) {
		req, err := DecodeRequest(body, headerLen)
		if err != nil {
			checkDecodeError(t, err)
			return
		}
		// Binary tensors alias the body but must not let an append
		// overwrite it.
		saved := bytes.Clone(body)
		for _, in := range req.Inputs {
			_ = append(in.Data, 0xa5, 0x5a)
		}
		if !bytes.Equal(body, saved) {
			t.Fatalf("appending to a decoded tensor changed the body")
		}
		checkRequest(t, req, false)
	})
}

func FuzzDecodeResponse(f *testing.F) {
	resp, req := testResponse()
	for _, binary := range []func(string) bool{nil, req.BinaryOutput, func(string) bool { return true }} {
		body, hlen, err := EncodeResponse(nil, &resp, binary)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(body, hlen)
	}
	f.Add([]byte(`{"model_name":"m","model_version":"1","id":"x","outputs":[{"name":"y","shape":[1,2],"datatype":"FP32","data":[1,2]}]}`), NoHeader)
	f.Add([]byte(`{"model_name":"m","outputs":[]}`), NoHeader)
	f.Fuzz(func(t *testing.T, body []byte, headerLen int) {
		resp, err := DecodeResponse(body, headerLen)
		if err != nil {
			checkDecodeError(t, err)
			return
		}
		odd := func(name string) bool { return len(name)%2 == 1 }
		for _, binary := range []func(string) bool{func(string) bool { return true }, odd, nil} {
			out, hlen, err := EncodeResponse(nil, &resp, binary)
			if err != nil {
				if binary != nil && binary("") || inference.KindOf(err) != inference.KindInvalid {
					t.Fatalf("EncodeResponse: %v", err)
				}
				continue // a binary value JSON cannot carry
			}
			got, err := DecodeResponse(out, hlen)
			if err != nil {
				t.Fatalf("decoding EncodeResponse output %q: %v", out, err)
			}
			if d := diff(resp, got); d != "" {
				t.Fatalf("round trip changed the response:\n%s", d)
			}
		}
		for i := range resp.Outputs {
			if rows, err := resp.Outputs[i].BatchRows(); err == nil && rows <= maxFuzzRows {
				checkSplit(t, &resp.Outputs[i])
			}
		}
	})
}

func FuzzParseRoute(f *testing.F) {
	for _, p := range []string{
		"/v2", "/v2/", "/v2/health/live", "/v2/health/ready", "/v2/models/m", "/v2/models/m/ready",
		"/v2/models/m/infer", "/v2/models/m/versions/1/infer", "/v2/models/m/versions//infer",
		"/v2/models//infer", "/v2/models/m/versions", "/v1/models/m:predict", "",
	} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, path string) {
		r := ParseRoute(path)
		if want := parseRouteSplit(path); r != want {
			t.Fatalf("ParseRoute(%q) = %+v, want %+v", path, r, want)
		}
		if r.Kind == RouteUnknown {
			if r != (Route{}) {
				t.Fatalf("ParseRoute(%q) = %+v: an unknown route with fields", path, r)
			}
			return
		}
		if strings.Contains(r.Model, "/") || strings.Contains(r.Version, "/") {
			t.Fatalf("ParseRoute(%q) = %+v: a name with a slash", path, r)
		}
		if r.Kind >= RouteModel && r.Kind <= RouteInfer || r.Kind >= RoutePredict {
			if r.Model == "" {
				t.Fatalf("ParseRoute(%q) = %+v: no model", path, r)
			}
		}
		// Printing the route back gives a path that parses the same.
		p := map[RouteKind]string{RouteServer: "/v2", RouteLive: "/v2/health/live", RouteReady: "/v2/health/ready",
			RouteEmbeddings: "/v1/embeddings", RouteOpenAIModels: "/v1/models"}[r.Kind]
		switch r.Kind {
		case RoutePredict, RouteTFModel:
			p = "/v1/models/" + r.Model
			if r.Version != "" {
				p += "/versions/" + r.Version
			}
			if r.Kind == RoutePredict {
				p += ":predict"
			}
		case RouteModel, RouteModelReady, RouteInfer:
			p = "/v2/models/" + r.Model
			if r.Version != "" {
				p += "/versions/" + r.Version
			}
			p += map[RouteKind]string{RouteModelReady: "/ready", RouteInfer: "/infer"}[r.Kind]
		}
		if again := ParseRoute(p); again != r {
			t.Fatalf("ParseRoute(%q) = %+v, but its path %q parses as %+v", path, r, p, again)
		}
	})
}

func FuzzParseHeaderLen(f *testing.F) {
	for _, s := range []string{"", "0", "123", " 42 ", "2147483647", "2147483648", "-1", "+1", "1e3", "0x10", "\t7\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		n, err := ParseHeaderLen(v)
		if len(v) == 0 {
			if n != NoHeader || err != nil {
				t.Fatalf("ParseHeaderLen(empty) = %d, %v; want NoHeader", n, err)
			}
			return
		}
		if err != nil {
			checkDecodeError(t, err)
			return
		}
		want, aerr := strconv.ParseUint(string(bytes.TrimSpace(v)), 10, 64)
		if n < 0 || aerr != nil || uint64(n) != want || n > 1<<31-1 {
			t.Fatalf("ParseHeaderLen(%q) = %d; the digits say %d (%v)", v, n, want, aerr)
		}
	})
}
