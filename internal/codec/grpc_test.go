package codec

import (
	"bytes"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/batchmesh/batchmesh/internal/grpcapi"
	"github.com/batchmesh/batchmesh/internal/inference"
)

// grpcSeeds are ModelInferRequests of every datatype, raw and typed.
func grpcSeeds() []*grpcapi.ModelInferRequest {
	in := func(name, dt string, shape []int64, c *grpcapi.InferTensorContents) *grpcapi.ModelInferRequest_InferInputTensor {
		return &grpcapi.ModelInferRequest_InferInputTensor{Name: name, Datatype: dt, Shape: shape, Contents: c}
	}
	return []*grpcapi.ModelInferRequest{
		{ModelName: "m", Id: "1", Inputs: []*grpcapi.ModelInferRequest_InferInputTensor{
			in("f", "FP32", []int64{2, 2}, &grpcapi.InferTensorContents{Fp32Contents: []float32{1, -2.5, 3e-3, 0}}),
			in("i8", "INT8", []int64{2}, &grpcapi.InferTensorContents{IntContents: []int32{-128, 127}}),
			in("u16", "UINT16", []int64{2}, &grpcapi.InferTensorContents{UintContents: []uint32{0, 65535}}),
			in("b", "BOOL", []int64{2}, &grpcapi.InferTensorContents{BoolContents: []bool{true, false}}),
			in("s", "BYTES", []int64{2}, &grpcapi.InferTensorContents{BytesContents: [][]byte{[]byte("hé"), nil}}),
			in("d", "FP64", []int64{2, 1}, &grpcapi.InferTensorContents{Fp64Contents: []float64{1e300, -0}}),
			in("l", "INT64", []int64{2}, &grpcapi.InferTensorContents{Int64Contents: []int64{-1 << 63, 7}}),
			in("ul", "UINT64", []int64{2}, &grpcapi.InferTensorContents{Uint64Contents: []uint64{1<<64 - 1, 0}}),
		}, Outputs: []*grpcapi.ModelInferRequest_InferRequestedOutputTensor{{Name: "o", Parameters: map[string]*grpcapi.InferParameter{
			"binary_data": {ParameterChoice: &grpcapi.InferParameter_BoolParam{BoolParam: true}}}}}},
		{ModelName: "m", ModelVersion: "2", Parameters: map[string]*grpcapi.InferParameter{
			"priority": {ParameterChoice: &grpcapi.InferParameter_Int64Param{Int64Param: 1}},
			"note":     {ParameterChoice: &grpcapi.InferParameter_StringParam{StringParam: "x"}}},
			Inputs: []*grpcapi.ModelInferRequest_InferInputTensor{
				in("h", "FP16", []int64{1, 2}, nil), in("t", "BYTES", []int64{1}, nil)},
			RawInputContents: [][]byte{{0, 0x3c, 0, 0xc0}, {3, 0, 0, 0, 'a', 'b', 'c'}}},
	}
}

// TestDecodeGRPCRequestMatchesREST decodes a typed request, encodes it raw
// and decodes that again: the canonical tensors are the same, and the same
// as a JSON body of the values gives.
func TestDecodeGRPCRequestMatchesREST(t *testing.T) {
	typed := grpcSeeds()[0]
	req, raw, err := DecodeGRPCRequest(typed)
	if err != nil || raw {
		t.Fatalf("DecodeGRPCRequest(typed) = raw %t, %v", raw, err)
	}
	again, raw, err := DecodeGRPCRequest(EncodeGRPCRequest(&req))
	if err != nil || !raw {
		t.Fatalf("DecodeGRPCRequest(EncodeGRPCRequest) = raw %t, %v", raw, err)
	}
	rest, err := DecodeRequest([]byte(`{"inputs":[{"name":"f","datatype":"FP32","shape":[2,2],"data":[1,-2.5,3e-3,0]}]}`), NoHeader)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(req.Inputs[0].Data, rest.Inputs[0].Data) {
		t.Errorf("fp32_contents decode to %x, the JSON body to %x", req.Inputs[0].Data, rest.Inputs[0].Data)
	}
	for i := range req.Inputs {
		if !bytes.Equal(req.Inputs[i].Data, again.Inputs[i].Data) {
			t.Errorf("input %q: typed %x, raw %x", req.Inputs[i].Name, req.Inputs[i].Data, again.Inputs[i].Data)
		}
	}
}

func TestDecodeGRPCRequestErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		edit    func(m *grpcapi.ModelInferRequest)
		mention string
	}{
		{"no model", func(m *grpcapi.ModelInferRequest) { m.ModelName = "" }, "model_name"},
		{"int8 out of range", func(m *grpcapi.ModelInferRequest) { m.Inputs[1].Contents.IntContents[0] = 128 }, `input "i8": int_contents[0] is 128`},
		{"uint16 out of range", func(m *grpcapi.ModelInferRequest) { m.Inputs[2].Contents.UintContents[1] = 65536 }, `input "u16"`},
		{"count", func(m *grpcapi.ModelInferRequest) { m.Inputs[0].Shape = []int64{3, 2} }, `input "f": shape [3,2] needs 6 elements, fp32_contents has 4`},
		{"wrong field", func(m *grpcapi.ModelInferRequest) {
			m.Inputs[0].Contents.Int64Contents = []int64{1}
		}, `input "f": datatype FP32 takes fp32_contents, but int64_contents`},
		{"no contents", func(m *grpcapi.ModelInferRequest) { m.Inputs[3].Contents = nil }, `input "b": contents are missing`},
		{"bad datatype", func(m *grpcapi.ModelInferRequest) { m.Inputs[0].Datatype = "FLOAT" }, `input "f": unknown datatype "FLOAT"`},
		{"duplicate", func(m *grpcapi.ModelInferRequest) { m.Inputs[1].Name = "f" }, `input "f" appears twice`},
		{"raw count", func(m *grpcapi.ModelInferRequest) { m.RawInputContents = [][]byte{{1}} }, "raw_input_contents has 1 entries for 8 inputs"},
		{"unset parameter", func(m *grpcapi.ModelInferRequest) {
			m.Parameters = map[string]*grpcapi.InferParameter{"p": {}}
		}, `request parameter "p" has no value`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := grpcSeeds()[0]
			tc.edit(m)
			_, _, err := DecodeGRPCRequest(m)
			if inference.KindOf(err) != inference.KindInvalid || !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("DecodeGRPCRequest = %v, want an invalid-input error mentioning %q", err, tc.mention)
			}
		})
	}
	fp16 := grpcSeeds()[1]
	fp16.RawInputContents = nil
	fp16.Inputs[0].Contents = &grpcapi.InferTensorContents{Fp32Contents: []float32{1, 2}}
	if _, _, err := DecodeGRPCRequest(fp16); err == nil || !strings.Contains(err.Error(), `input "h": FP16 has no typed contents field; send it in raw_input_contents`) {
		t.Errorf("typed FP16: %v, want an error pointing to raw_input_contents", err)
	}
}

// FuzzDecodeGRPCRequest decodes protobuf bytes as a ModelInferRequest and
// then to canonical tensors. What decodes is valid, survives a raw round
// trip byte for byte, and encodes as a response (typed where it can) that
// decodes to the same tensors.
func FuzzDecodeGRPCRequest(f *testing.F) {
	for _, m := range grpcSeeds() {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m grpcapi.ModelInferRequest
		if proto.Unmarshal(b, &m) != nil {
			return
		}
		req, _, err := DecodeGRPCRequest(&m)
		if err != nil {
			if inference.KindOf(err) != inference.KindInvalid {
				t.Fatalf("error of kind %v, want invalid input: %v", inference.KindOf(err), err)
			}
			return
		}
		for i := range req.Inputs {
			if err := req.Inputs[i].Validate(); err != nil {
				t.Fatalf("decoded input does not validate: %v", err)
			}
		}
		again, raw, err := DecodeGRPCRequest(EncodeGRPCRequest(&req))
		if err != nil || !raw {
			t.Fatalf("raw round trip: raw %t, %v", raw, err)
		}
		resp := inference.Response{ModelName: req.Model, Outputs: req.Inputs}
		enc, err := EncodeGRPCResponse(&resp, false)
		if err != nil {
			t.Fatalf("EncodeGRPCResponse: %v", err)
		}
		dec, err := DecodeGRPCResponse(enc)
		if err != nil {
			t.Fatalf("DecodeGRPCResponse(EncodeGRPCResponse): %v", err)
		}
		for i := range req.Inputs {
			if !bytes.Equal(req.Inputs[i].Data, again.Inputs[i].Data) || !bytes.Equal(req.Inputs[i].Data, dec.Outputs[i].Data) {
				t.Fatalf("input %q: %x, raw round trip %x, response round trip %x", req.Inputs[i].Name, req.Inputs[i].Data, again.Inputs[i].Data, dec.Outputs[i].Data)
			}
		}
	})
}
