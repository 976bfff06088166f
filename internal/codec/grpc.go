package codec

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"

	"github.com/batchmesh/batchmesh/internal/grpcapi"
	"github.com/batchmesh/batchmesh/internal/inference"
)

// DecodeGRPCRequest turns a gRPC ModelInferRequest into a canonical request,
// the same one the REST body of the same values decodes to. raw reports
// whether the caller sent raw_input_contents (it wants raw_output_contents
// back). Model and Version are copied from the message. Raw tensors alias
// the message's buffers.
func DecodeGRPCRequest(m *grpcapi.ModelInferRequest) (req inference.Request, raw bool, err error) {
	req = inference.Request{Model: m.GetModelName(), Version: m.GetModelVersion(), ID: m.GetId()}
	if req.Model == "" {
		return req, false, invalid("model_name is missing")
	}
	if req.Parameters, err = grpcParams("request", m.GetParameters()); err != nil {
		return req, false, err
	}
	ins := m.GetInputs()
	if len(ins) == 0 {
		return req, false, invalid("inputs: the request has none")
	}
	rawIn := m.GetRawInputContents()
	raw = len(rawIn) > 0
	if raw && len(rawIn) != len(ins) {
		return req, raw, invalid("raw_input_contents has %d entries for %d inputs; give one per input, in order", len(rawIn), len(ins))
	}
	req.Inputs = make([]inference.Tensor, len(ins))
	seen := make(map[string]struct{}, len(ins))
	for i, in := range ins {
		if _, dup := seen[in.GetName()]; dup {
			return req, raw, invalid("input %q appears twice", in.GetName())
		}
		seen[in.GetName()] = struct{}{}
		var data []byte
		if raw {
			data = rawIn[i]
		}
		if req.Inputs[i], err = grpcInput(i, in, raw, data); err != nil {
			return req, raw, err
		}
	}
	if outs := m.GetOutputs(); len(outs) > 0 {
		req.Outputs = make([]inference.OutputSpec, len(outs))
		for i, o := range outs {
			if o.GetName() == "" {
				return req, raw, invalid("outputs[%d]: name is missing", i)
			}
			ps, err := grpcParams(fmt.Sprintf("output %q", o.GetName()), o.GetParameters())
			if err != nil {
				return req, raw, err
			}
			req.Outputs[i] = inference.OutputSpec{Name: o.GetName(), Parameters: ps}
		}
	}
	return req, raw, nil
}

// grpcInput decodes input i: its raw bytes when the request is raw, its
// typed contents otherwise.
func grpcInput(i int, in *grpcapi.ModelInferRequest_InferInputTensor, raw bool, data []byte) (inference.Tensor, error) {
	name := in.GetName()
	if name == "" {
		return inference.Tensor{}, invalid("inputs[%d]: name is missing", i)
	}
	dt, ok := inference.ParseDataType(in.GetDatatype())
	if !ok {
		return inference.Tensor{}, invalid("input %q: unknown datatype %q; allowed: %s", name, in.GetDatatype(), inference.DataTypeNames)
	}
	n, err := inference.ShapeElements(name, in.GetShape())
	if err != nil {
		return inference.Tensor{}, fmt.Errorf("codec: %w", err)
	}
	ps, err := grpcParams(fmt.Sprintf("input %q", name), in.GetParameters())
	if err != nil {
		return inference.Tensor{}, err
	}
	t := inference.Tensor{Name: name, DataType: dt, Shape: in.GetShape(), Parameters: ps}
	switch {
	case raw && in.GetContents() != nil:
		return t, invalid("input %q: has contents but the request uses raw_input_contents; use one form for every input", name)
	case raw:
		t.Data = data
	case in.GetContents() == nil:
		return t, invalid("input %q: contents are missing (give contents, or raw_input_contents for every input)", name)
	default:
		if t.Data, err = typedContents(name, dt, in.GetShape(), n, in.GetContents()); err != nil {
			return t, err
		}
	}
	if err := t.Validate(); err != nil {
		return t, fmt.Errorf("codec: %w", err)
	}
	return t, nil
}

// typedContents lays out the typed contents of a tensor of dt with shape
// (n elements) in canonical bytes. Exactly the field that matches dt may be set.
func typedContents(name string, dt inference.DataType, shape []int64, n int64, c *grpcapi.InferTensorContents) ([]byte, error) {
	field, count := contentsField(dt, c)
	if field == "" {
		return nil, invalid("input %q: %s has no typed contents field; send it in raw_input_contents", name, dt)
	}
	if other, k := otherContents(dt, c); k > 0 {
		return nil, invalid("input %q: datatype %s takes %s, but %s has %d elements", name, dt, field, other, k)
	}
	if int64(count) != n {
		return nil, invalid("input %q: shape %s needs %d elements, %s has %d", name, inference.FormatShape(shape), n, field, count)
	}
	size := dt.Size()
	out := make([]byte, 0, max(size*count, 0))
	switch dt {
	case inference.Bool:
		for _, v := range c.GetBoolContents() {
			out = append(out, b2u(v))
		}
	case inference.Int8, inference.Int16, inference.Int32:
		lo, hi := int64(-1)<<(8*size-1), int64(1)<<(8*size-1)-1
		for j, v := range c.GetIntContents() {
			if int64(v) < lo || int64(v) > hi {
				return nil, invalid("input %q: int_contents[%d] is %d, outside %s's range [%d, %d]", name, j, v, dt, lo, hi)
			}
			out = appendUint(out, uint64(v), size)
		}
	case inference.Uint8, inference.Uint16, inference.Uint32:
		hi := uint64(1)<<(8*size) - 1
		for j, v := range c.GetUintContents() {
			if uint64(v) > hi {
				return nil, invalid("input %q: uint_contents[%d] is %d, outside %s's range [0, %d]", name, j, v, dt, hi)
			}
			out = appendUint(out, uint64(v), size)
		}
	case inference.Int64:
		for _, v := range c.GetInt64Contents() {
			out = binary.LittleEndian.AppendUint64(out, uint64(v))
		}
	case inference.Uint64:
		for _, v := range c.GetUint64Contents() {
			out = binary.LittleEndian.AppendUint64(out, v)
		}
	case inference.FP32:
		for _, v := range c.GetFp32Contents() {
			out = binary.LittleEndian.AppendUint32(out, math.Float32bits(v))
		}
	case inference.FP64:
		for _, v := range c.GetFp64Contents() {
			out = binary.LittleEndian.AppendUint64(out, math.Float64bits(v))
		}
	case inference.Bytes:
		for _, v := range c.GetBytesContents() {
			if uint64(len(v)) > math.MaxUint32 {
				return nil, invalid("input %q: a BYTES element of %d bytes is over 4 GiB", name, len(v))
			}
			out = binary.LittleEndian.AppendUint32(out, uint32(len(v)))
			out = append(out, v...)
		}
	}
	return out, nil
}

func b2u(v bool) byte {
	if v {
		return 1
	}
	return 0
}

func appendUint(out []byte, v uint64, size int) []byte {
	switch size {
	case 1:
		return append(out, byte(v))
	case 2:
		return binary.LittleEndian.AppendUint16(out, uint16(v))
	default:
		return binary.LittleEndian.AppendUint32(out, uint32(v))
	}
}

// contentsField names the typed contents field of dt and its length; ""
// when dt has none (FP16, BF16).
func contentsField(dt inference.DataType, c *grpcapi.InferTensorContents) (string, int) {
	switch dt {
	case inference.Bool:
		return "bool_contents", len(c.GetBoolContents())
	case inference.Int8, inference.Int16, inference.Int32:
		return "int_contents", len(c.GetIntContents())
	case inference.Int64:
		return "int64_contents", len(c.GetInt64Contents())
	case inference.Uint8, inference.Uint16, inference.Uint32:
		return "uint_contents", len(c.GetUintContents())
	case inference.Uint64:
		return "uint64_contents", len(c.GetUint64Contents())
	case inference.FP32:
		return "fp32_contents", len(c.GetFp32Contents())
	case inference.FP64:
		return "fp64_contents", len(c.GetFp64Contents())
	case inference.Bytes:
		return "bytes_contents", len(c.GetBytesContents())
	}
	return "", 0
}

// otherContents returns a non-empty contents field that dt does not take.
func otherContents(dt inference.DataType, c *grpcapi.InferTensorContents) (string, int) {
	own, _ := contentsField(dt, c)
	for _, f := range []struct {
		name string
		n    int
	}{
		{"bool_contents", len(c.GetBoolContents())},
		{"int_contents", len(c.GetIntContents())},
		{"int64_contents", len(c.GetInt64Contents())},
		{"uint_contents", len(c.GetUintContents())},
		{"uint64_contents", len(c.GetUint64Contents())},
		{"fp32_contents", len(c.GetFp32Contents())},
		{"fp64_contents", len(c.GetFp64Contents())},
		{"bytes_contents", len(c.GetBytesContents())},
	} {
		if f.name != own && f.n > 0 {
			return f.name, f.n
		}
	}
	return "", 0
}

// grpcParams converts gRPC parameters; an unset value is an error naming
// it.
func grpcParams(where string, m map[string]*grpcapi.InferParameter) (inference.Parameters, error) {
	if len(m) == 0 {
		return nil, nil
	}
	out := make(inference.Parameters, len(m))
	for k, v := range m {
		switch c := v.GetParameterChoice().(type) {
		case *grpcapi.InferParameter_BoolParam:
			out[k] = c.BoolParam
		case *grpcapi.InferParameter_Int64Param:
			out[k] = c.Int64Param
		case *grpcapi.InferParameter_StringParam:
			out[k] = c.StringParam
		default:
			return nil, invalid("%s parameter %q has no value; set bool_param, int64_param or string_param", where, k)
		}
	}
	return out, nil
}

// GRPCParams converts parameters to their gRPC form. A float64 that is a
// whole number becomes int64_param; any other becomes string_param, as the
// service has no floating-point parameter.
func GRPCParams(ps inference.Parameters) map[string]*grpcapi.InferParameter {
	if len(ps) == 0 {
		return nil
	}
	out := make(map[string]*grpcapi.InferParameter, len(ps))
	for k, v := range ps {
		p := &grpcapi.InferParameter{}
		switch v := v.(type) {
		case bool:
			p.ParameterChoice = &grpcapi.InferParameter_BoolParam{BoolParam: v}
		case int64:
			p.ParameterChoice = &grpcapi.InferParameter_Int64Param{Int64Param: v}
		case string:
			p.ParameterChoice = &grpcapi.InferParameter_StringParam{StringParam: v}
		case float64:
			if i, ok := ps.Int(k); ok {
				p.ParameterChoice = &grpcapi.InferParameter_Int64Param{Int64Param: i}
			} else {
				p.ParameterChoice = &grpcapi.InferParameter_StringParam{StringParam: strconv.FormatFloat(v, 'g', -1, 64)}
			}
		default:
			continue
		}
		out[k] = p
	}
	return out
}
