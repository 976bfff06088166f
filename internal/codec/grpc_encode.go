package codec

import (
	"encoding/binary"

	"math"

	"github.com/batchmesh/batchmesh/internal/grpcapi"
	"github.com/batchmesh/batchmesh/internal/inference"
)

// EncodeGRPCResponse writes resp as a gRPC ModelInferResponse: outputs in
// raw_output_contents when raw is true or when an output's datatype has no
// typed field (FP16, BF16), in typed contents otherwise. The message
// aliases the outputs' Data when raw.
func EncodeGRPCResponse(resp *inference.Response, raw bool) (*grpcapi.ModelInferResponse, error) {
	m := &grpcapi.ModelInferResponse{
		ModelName: resp.ModelName, ModelVersion: resp.ModelVersion, Id: resp.ID,
		Parameters: GRPCParams(resp.Parameters),
		Outputs:    make([]*grpcapi.ModelInferResponse_InferOutputTensor, len(resp.Outputs)),
	}
	for i := range resp.Outputs {
		if f, _ := contentsField(resp.Outputs[i].DataType, nil); f == "" {
			raw = true
		}
	}
	if raw {
		m.RawOutputContents = make([][]byte, len(resp.Outputs))
	}
	for i := range resp.Outputs {
		t := &resp.Outputs[i]
		o := &grpcapi.ModelInferResponse_InferOutputTensor{
			Name: t.Name, Datatype: t.DataType.String(), Shape: t.Shape, Parameters: GRPCParams(t.Parameters),
		}
		if raw {
			m.RawOutputContents[i] = t.Data
		} else {
			c, err := TypedContents(t)
			if err != nil {
				return nil, err
			}
			o.Contents = c
		}
		m.Outputs[i] = o
	}
	return m, nil
}

// TypedContents returns t's elements in the typed contents field of its
// datatype. It fails for FP16 and BF16 (raw only) and for data that does not
// hold whole elements.
func TypedContents(t *inference.Tensor) (*grpcapi.InferTensorContents, error) {
	size := t.DataType.Size()
	if size > 0 && len(t.Data)%size != 0 {
		return nil, inference.Errorf(inference.KindUpstream, "codec: output %q: %d bytes is not a whole number of %s elements", t.Name, len(t.Data), t.DataType)
	}
	c := &grpcapi.InferTensorContents{}
	d := t.Data
	switch t.DataType {
	case inference.Bool:
		c.BoolContents = make([]bool, len(d))
		for j, b := range d {
			c.BoolContents[j] = b != 0
		}
	case inference.Int8, inference.Int16, inference.Int32:
		c.IntContents = make([]int32, len(d)/size)
		for j := range c.IntContents {
			c.IntContents[j] = int32(signed(d[j*size:], size))
		}
	case inference.Uint8, inference.Uint16, inference.Uint32:
		c.UintContents = make([]uint32, len(d)/size)
		for j := range c.UintContents {
			c.UintContents[j] = uint32(unsigned(d[j*size:], size))
		}
	case inference.Int64:
		c.Int64Contents = make([]int64, len(d)/8)
		for j := range c.Int64Contents {
			c.Int64Contents[j] = int64(binary.LittleEndian.Uint64(d[j*8:]))
		}
	case inference.Uint64:
		c.Uint64Contents = make([]uint64, len(d)/8)
		for j := range c.Uint64Contents {
			c.Uint64Contents[j] = binary.LittleEndian.Uint64(d[j*8:])
		}
	case inference.FP32:
		c.Fp32Contents = make([]float32, len(d)/4)
		for j := range c.Fp32Contents {
			c.Fp32Contents[j] = math.Float32frombits(binary.LittleEndian.Uint32(d[j*4:]))
		}
	case inference.FP64:
		c.Fp64Contents = make([]float64, len(d)/8)
		for j := range c.Fp64Contents {
			c.Fp64Contents[j] = math.Float64frombits(binary.LittleEndian.Uint64(d[j*8:]))
		}
	case inference.Bytes:
		for off := 0; off < len(d); {
			if len(d)-off < 4 {
				return nil, inference.Errorf(inference.KindUpstream, "codec: output %q: BYTES data ends inside a length", t.Name)
			}
			l := int(binary.LittleEndian.Uint32(d[off:]))
			off += 4
			if l > len(d)-off {
				return nil, inference.Errorf(inference.KindUpstream, "codec: output %q: BYTES element of %d bytes runs past the data", t.Name, l)
			}
			c.BytesContents = append(c.BytesContents, d[off:off+l])
			off += l
		}
	default:
		return nil, inference.Errorf(inference.KindUpstream, "codec: output %q: %s has no typed contents field", t.Name, t.DataType)
	}
	return c, nil
}

func unsigned(b []byte, size int) uint64 {
	switch size {
	case 1:
		return uint64(b[0])
	case 2:
		return uint64(binary.LittleEndian.Uint16(b))
	default:
		return uint64(binary.LittleEndian.Uint32(b))
	}
}

func signed(b []byte, size int) int64 {
	switch size {
	case 1:
		return int64(int8(b[0]))
	case 2:
		return int64(int16(binary.LittleEndian.Uint16(b)))
	default:
		return int64(int32(binary.LittleEndian.Uint32(b)))
	}
}

// EncodeGRPCRequest writes req as a ModelInferRequest with every input in
// raw_input_contents, as the sidecar sends batches to a gRPC runtime. The
// message aliases the inputs' Data.
func EncodeGRPCRequest(req *inference.Request) *grpcapi.ModelInferRequest {
	m := &grpcapi.ModelInferRequest{
		ModelName: req.Model, ModelVersion: req.Version, Id: req.ID,
		Parameters:       GRPCParams(req.Parameters),
		Inputs:           make([]*grpcapi.ModelInferRequest_InferInputTensor, len(req.Inputs)),
		RawInputContents: make([][]byte, len(req.Inputs)),
	}
	for i := range req.Inputs {
		t := &req.Inputs[i]
		m.Inputs[i] = &grpcapi.ModelInferRequest_InferInputTensor{
			Name: t.Name, Datatype: t.DataType.String(), Shape: t.Shape, Parameters: GRPCParams(t.Parameters),
		}
		m.RawInputContents[i] = t.Data
	}
	for _, o := range req.Outputs {
		m.Outputs = append(m.Outputs, &grpcapi.ModelInferRequest_InferRequestedOutputTensor{Name: o.Name, Parameters: GRPCParams(o.Parameters)})
	}
	return m
}

// DecodeGRPCResponse turns a runtime's ModelInferResponse into a canonical
// response, accepting raw or typed outputs. Errors are KindUpstream: the
// runtime answered nonsense.
func DecodeGRPCResponse(m *grpcapi.ModelInferResponse) (inference.Response, error) {
	resp := inference.Response{ModelName: m.GetModelName(), ModelVersion: m.GetModelVersion(), ID: m.GetId()}
	// The request decoder checks every field; reuse it by viewing the
	// outputs as inputs.
	req := &grpcapi.ModelInferRequest{ModelName: "response", RawInputContents: m.GetRawOutputContents()}
	for _, o := range m.GetOutputs() {
		req.Inputs = append(req.Inputs, &grpcapi.ModelInferRequest_InferInputTensor{
			Name: o.GetName(), Datatype: o.GetDatatype(), Shape: o.GetShape(), Parameters: o.GetParameters(), Contents: o.GetContents(),
		})
	}
	if len(req.Inputs) == 0 {
		return resp, inference.Errorf(inference.KindUpstream, "codec: the runtime's ModelInferResponse has no outputs")
	}
	dec, _, err := DecodeGRPCRequest(req)
	if err != nil {
		return resp, inference.Errorf(inference.KindUpstream, "codec: the runtime's ModelInferResponse: %w", err)
	}
	resp.Outputs = dec.Inputs
	var perr error
	if resp.Parameters, perr = grpcParams("response", m.GetParameters()); perr != nil {
		return resp, inference.Errorf(inference.KindUpstream, "codec: the runtime's ModelInferResponse: %w", perr)
	}
	return resp, nil
}
