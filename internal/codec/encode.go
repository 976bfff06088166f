package codec

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// appendParams writes a parameters object with sorted keys, adding
// binary_data_size when size >= 0.
func appendParams(dst []byte, p inference.Parameters, size int) []byte {
	dst = append(dst, '{')
	keys := make([]string, 0, len(p))
	for k := range p {
		if k != inference.ParamBinaryDataSize {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, k)
		dst = append(dst, ':')
		switch v := p[k].(type) {
		case string:
			dst = appendString(dst, v)
		case bool:
			dst = strconv.AppendBool(dst, v)
		case int64:
			dst = strconv.AppendInt(dst, v, 10)
		case int:
			dst = strconv.AppendInt(dst, int64(v), 10)
		case float64:
			if math.IsNaN(v) || math.IsInf(v, 0) {
				dst = append(dst, "null"...)
			} else {
				n := len(dst)
				dst = strconv.AppendFloat(dst, v, 'g', -1, 64)
				if !bytes.ContainsAny(dst[n:], ".e") {
					dst = append(dst, ".0"...) // 1.0 must decode as a float again, not as int64 1
				}
			}
		default:
			dst = appendString(dst, fmt.Sprint(v))
		}
	}
	if size >= 0 {
		if len(keys) > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `"binary_data_size":`...)
		dst = strconv.AppendInt(dst, int64(size), 10)
	}
	return append(dst, '}')
}

func appendShape(dst []byte, shape []int64) []byte {
	dst = append(dst, '[')
	for i, d := range shape {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = strconv.AppendInt(dst, d, 10)
	}
	return append(dst, ']')
}

// appendTensors writes a JSON array of tensors; binary(i) says whether
// tensor i goes as binary data, whose bytes the caller appends after the
// header in the same order.
func appendTensors(dst []byte, ts []inference.Tensor, binary func(i int) bool) ([]byte, error) {
	dst = append(dst, '[')
	for i := range ts {
		t := &ts[i]
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"name":`...)
		dst = appendString(dst, t.Name)
		dst = append(dst, `,"datatype":"`...)
		dst = append(dst, t.DataType.String()...)
		dst = append(dst, `","shape":`...)
		dst = appendShape(dst, t.Shape)
		bin := binary(i)
		if bin || len(t.Parameters) > 0 {
			size := -1
			if bin {
				size = len(t.Data)
			}
			dst = append(dst, `,"parameters":`...)
			dst = appendParams(dst, t.Parameters, size)
		}
		if !bin {
			var err error
			dst = append(dst, `,"data":`...)
			if dst, err = appendData(dst, t); err != nil {
				return dst, err
			}
		}
		dst = append(dst, '}')
	}
	return append(dst, ']'), nil
}

// EncodeRequest appends req as a v2 request body to dst. With binary set,
// every input travels as binary tensor data and headerLen is the JSON
// header's length (send it as Inference-Header-Content-Length); otherwise
// headerLen is NoHeader.
func EncodeRequest(dst []byte, req *inference.Request, binary bool) (body []byte, headerLen int, err error) {
	start := len(dst)
	dst = append(dst, '{')
	if req.ID != "" {
		dst = append(dst, `"id":`...)
		dst = appendString(dst, req.ID)
		dst = append(dst, ',')
	}
	if len(req.Parameters) > 0 {
		dst = append(dst, `"parameters":`...)
		dst = appendParams(dst, req.Parameters, -1)
		dst = append(dst, ',')
	}
	dst = append(dst, `"inputs":`...)
	if dst, err = appendTensors(dst, req.Inputs, func(int) bool { return binary }); err != nil {
		return dst, 0, err
	}
	if req.Outputs != nil {
		dst = append(dst, `,"outputs":[`...)
		for i, o := range req.Outputs {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"name":`...)
			dst = appendString(dst, o.Name)
			if len(o.Parameters) > 0 {
				dst = append(dst, `,"parameters":`...)
				dst = appendParams(dst, o.Parameters, -1)
			}
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	dst = append(dst, '}')
	if !binary {
		return dst, NoHeader, nil
	}
	headerLen = len(dst) - start
	for i := range req.Inputs {
		dst = append(dst, req.Inputs[i].Data...)
	}
	return dst, headerLen, nil
}

// EncodeResponse appends resp as a v2 response body to dst. binary(name)
// says whether an output travels as binary tensor data (use
// Request.BinaryOutput). headerLen is NoHeader when no output is binary.
func EncodeResponse(dst []byte, resp *inference.Response, binary func(name string) bool) (body []byte, headerLen int, err error) {
	start := len(dst)
	anyBinary := false
	isBinary := func(i int) bool {
		b := binary != nil && binary(resp.Outputs[i].Name)
		anyBinary = anyBinary || b
		return b
	}
	dst = append(dst, `{"model_name":`...)
	dst = appendString(dst, resp.ModelName)
	if resp.ModelVersion != "" {
		dst = append(dst, `,"model_version":`...)
		dst = appendString(dst, resp.ModelVersion)
	}
	if resp.ID != "" {
		dst = append(dst, `,"id":`...)
		dst = appendString(dst, resp.ID)
	}
	if len(resp.Parameters) > 0 {
		dst = append(dst, `,"parameters":`...)
		dst = appendParams(dst, resp.Parameters, -1)
	}
	dst = append(dst, `,"outputs":`...)
	if dst, err = appendTensors(dst, resp.Outputs, isBinary); err != nil {
		return dst, 0, err
	}
	dst = append(dst, '}')
	if !anyBinary {
		return dst, NoHeader, nil
	}
	headerLen = len(dst) - start
	for i := range resp.Outputs {
		if binary(resp.Outputs[i].Name) {
			dst = append(dst, resp.Outputs[i].Data...)
		}
	}
	return dst, headerLen, nil
}

// AppendError appends the v2 error body {"error": msg}.
func AppendError(dst []byte, msg string) []byte {
	dst = append(dst, `{"error":`...)
	dst = appendString(dst, msg)
	return append(dst, '}')
}
