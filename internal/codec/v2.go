package codec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// HeaderContentLength is the binary tensor extension's header: the length of
// the JSON part of a body followed by binary tensors.
const HeaderContentLength = "Inference-Header-Content-Length"

// NoHeader is the headerLen to pass when a body carries no
// Inference-Header-Content-Length header: the whole body is JSON.
const NoHeader = -1

type wireTensor struct {
	Name       string          `json:"name"`
	Shape      []int64         `json:"shape"`
	Datatype   string          `json:"datatype"`
	Parameters map[string]any  `json:"parameters"`
	Data       json.RawMessage `json:"data"`
	parsed     []byte          // the data already parsed in place by the reader
	hasParsed  bool
}

type wireOutput struct {
	Name       string         `json:"name"`
	Parameters map[string]any `json:"parameters"`
}

type wireRequest struct {
	ID         *string        `json:"id"`
	Parameters map[string]any `json:"parameters"`
	Inputs     []wireTensor   `json:"inputs"`
	Outputs    []wireOutput   `json:"outputs"`
}

type wireResponse struct {
	ModelName    string         `json:"model_name"`
	ModelVersion string         `json:"model_version"`
	ID           string         `json:"id"`
	Parameters   map[string]any `json:"parameters"`
	Outputs      []wireTensor   `json:"outputs"`
}

func invalid(format string, args ...any) error {
	return inference.Errorf(inference.KindInvalid, "codec: "+format, args...)
}

// splitBody returns the JSON header and the binary part of a body.
func splitBody(body []byte, headerLen int) (header, bin []byte, err error) {
	switch {
	case headerLen == NoHeader:
		return body, nil, nil
	case headerLen == 0:
		return nil, nil, inference.Errorf(inference.KindInvalid,
			"codec: %s: 0 (a raw binary request without a JSON header) is not supported; send a JSON header that names the input", HeaderContentLength)
	case headerLen < 0 || headerLen > len(body):
		return nil, nil, invalid("%s is %d but the body has %d bytes", HeaderContentLength, headerLen, len(body))
	}
	return body[:headerLen], body[headerLen:], nil
}

// ParseHeaderLen parses an Inference-Header-Content-Length value. An empty
// value means the header is absent and gives NoHeader.
func ParseHeaderLen(v []byte) (int, error) {
	if len(v) == 0 {
		return NoHeader, nil
	}
	n, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 10, 31)
	if err != nil {
		return 0, invalid("%s must be a byte count, got %q", HeaderContentLength, v)
	}
	return int(n), nil
}

// params converts decoded JSON parameters to inference.Parameters, dropping
// the wire-only keys in drop.
func params(where string, m map[string]any, drop ...string) (inference.Parameters, error) {
	if len(m) == 0 {
		return nil, nil
	}
	out := make(inference.Parameters, len(m))
	for k, v := range m {
		if slices.Contains(drop, k) {
			continue
		}
		switch v := v.(type) {
		case string, bool:
			out[k] = v
		case json.Number:
			if i, err := v.Int64(); err == nil {
				out[k] = i
			} else if f, err := v.Float64(); err == nil {
				out[k] = f
			} else {
				return nil, invalid("%s parameter %q: %s is not a representable number", where, k, v)
			}
		default:
			return nil, invalid("%s parameter %q must be a string, number or boolean", where, k)
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// tensors turns wire tensors into inference tensors, taking binary data from
// bin in order. what is "input" or "output", for messages.
func tensors(what string, ws []wireTensor, bin []byte) ([]inference.Tensor, error) {
	out := make([]inference.Tensor, len(ws))
	seen := make(map[string]struct{}, len(ws))
	for i := range ws {
		w := &ws[i]
		if w.Name == "" {
			return nil, invalid("%ss[%d]: name is missing", what, i)
		}
		if _, dup := seen[w.Name]; dup {
			return nil, invalid("%s %q appears twice", what, w.Name)
		}
		seen[w.Name] = struct{}{}
		if w.Datatype == "" {
			return nil, invalid("%s %q: datatype is missing; allowed: %s", what, w.Name, inference.DataTypeNames)
		}
		dt, ok := inference.ParseDataType(w.Datatype)
		if !ok {
			return nil, invalid("%s %q: unknown datatype %q; allowed: %s", what, w.Name, w.Datatype, inference.DataTypeNames)
		}
		if w.Shape == nil {
			return nil, invalid("%s %q: shape is missing", what, w.Name)
		}
		n, err := inference.ShapeElements(w.Name, w.Shape)
		if err != nil {
			return nil, fmt.Errorf("codec: %w", err)
		}
		ps, err := params(fmt.Sprintf("%s %q", what, w.Name), w.Parameters, inference.ParamBinaryDataSize)
		if err != nil {
			return nil, err
		}
		t := inference.Tensor{Name: w.Name, DataType: dt, Shape: w.Shape, Parameters: ps}
		if size, has := w.Parameters[inference.ParamBinaryDataSize]; has {
			num, isNum := size.(json.Number)
			sz, err := num.Int64()
			if !isNum || err != nil || sz < 0 {
				return nil, invalid("%s %q: %s must be a byte count, got %v", what, w.Name, inference.ParamBinaryDataSize, size)
			}
			if w.hasParsed || len(w.Data) > 0 && string(w.Data) != "null" {
				return nil, invalid("%s %q: has both data and %s; send one", what, w.Name, inference.ParamBinaryDataSize)
			}
			if sz > int64(len(bin)) {
				return nil, invalid("%s %q: %s is %d but only %d binary bytes are left in the body", what, w.Name, inference.ParamBinaryDataSize, sz, len(bin))
			}
			t.Data, bin = bin[:sz:sz], bin[sz:]
		} else {
			if w.hasParsed {
				t.Data = w.parsed
			} else {
				if len(w.Data) == 0 || string(w.Data) == "null" {
					return nil, invalid("%s %q: data is missing (give data, or parameters.%s with binary data)", what, w.Name, inference.ParamBinaryDataSize)
				}
				if t.Data, err = parseData(w.Name, dt, w.Data, n); err != nil {
					return nil, err
				}
			}
			if sz := dt.Size(); sz > 0 && int64(len(t.Data)/sz) != n {
				return nil, invalid("%s %q: shape %s needs %d elements, data has %d",
					what, w.Name, inference.FormatShape(w.Shape), n, len(t.Data)/sz)
			}
		}
		if err := t.Validate(); err != nil {
			return nil, fmt.Errorf("codec: %w", err)
		}
		out[i] = t
	}
	if len(bin) != 0 {
		return nil, invalid("%d bytes of binary data follow the tensors that binary_data_size accounts for", len(bin))
	}
	return out, nil
}

// DecodeRequest parses a v2 inference request. headerLen is the value of
// Inference-Header-Content-Length, or NoHeader. Model and Version are left
// empty for the caller to fill from the route. Binary tensors alias body.
func DecodeRequest(body []byte, headerLen int) (inference.Request, error) {
	header, bin, err := splitBody(body, headerLen)
	if err != nil {
		return inference.Request{}, err
	}
	var w wireRequest
	if err := readRequest(header, &w); err != nil {
		return inference.Request{}, err
	}
	if len(w.Inputs) == 0 {
		return inference.Request{}, invalid("request has no inputs; \"inputs\" must list at least one tensor")
	}
	req := inference.Request{}
	if w.ID != nil {
		req.ID = *w.ID
	}
	if req.Parameters, err = params("request", w.Parameters); err != nil {
		return inference.Request{}, err
	}
	if req.Inputs, err = tensors("input", w.Inputs, bin); err != nil {
		return inference.Request{}, err
	}
	if w.Outputs != nil {
		req.Outputs = make([]inference.OutputSpec, len(w.Outputs))
		for i, o := range w.Outputs {
			if o.Name == "" {
				return inference.Request{}, invalid("outputs[%d]: name is missing", i)
			}
			ps, err := params(fmt.Sprintf("output %q", o.Name), o.Parameters)
			if err != nil {
				return inference.Request{}, err
			}
			req.Outputs[i] = inference.OutputSpec{Name: o.Name, Parameters: ps}
		}
	}
	return req, nil
}

// DecodeResponse parses a v2 inference response. Binary tensors alias body.
func DecodeResponse(body []byte, headerLen int) (inference.Response, error) {
	header, bin, err := splitBody(body, headerLen)
	if err != nil {
		return inference.Response{}, err
	}
	var w wireResponse
	if err := readResponse(header, &w); err != nil {
		return inference.Response{}, err
	}
	resp := inference.Response{ModelName: w.ModelName, ModelVersion: w.ModelVersion, ID: w.ID}
	if resp.Parameters, err = params("response", w.Parameters); err != nil {
		return inference.Response{}, err
	}
	if resp.Outputs, err = tensors("output", w.Outputs, bin); err != nil {
		return inference.Response{}, err
	}
	return resp, nil
}
