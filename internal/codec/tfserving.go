package codec

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// The TensorFlow Serving / KServe v1 predict API:
// POST /v1/models/{m}[/versions/{v}]:predict with
//
//	{"instances": [row, ...]}   the row format: each instance is a row; an
//	                             instance may be an object of named inputs
//	{"inputs": tensor | {name: tensor, ...}}   the columnar format: dim 0 of
//	                             every input is the batch
//
// answered with {"predictions": [...]} or {"outputs": ...} respectively, and
// errors as {"error": "..."}.
//
// JSON carries no datatypes, so values decode as: numbers FP64 (exact for
// every integer up to 2^53 and every float that JSON writes), booleans BOOL,
// strings and {"b64": "..."} objects BYTES. A single unnamed input or output
// has the name "" (TFUnnamed).

// TFUnnamed is the name of a predict request's single unnamed input, and of
// a runtime's single unnamed output.
const TFUnnamed = ""

// maxTFDepth bounds the nesting of a predict tensor.
const maxTFDepth = 32

// Predict is a decoded predict request.
type Predict struct {
	Columnar      bool               // "inputs" rather than "instances"
	Inputs        []inference.Tensor // sorted by name; one named TFUnnamed when unnamed
	SignatureName string
}

// DecodePredictRequest parses a predict request. Errors are KindInvalid and
// name the field (instances[3].x, inputs.x) and what is allowed. Tensors own
// their bytes.
func DecodePredictRequest(body []byte) (Predict, error) {
	var w map[string]json.RawMessage
	if err := strictUnmarshal(body, &w); err != nil || w == nil {
		if err == nil {
			err = fmt.Errorf("null")
		}
		return Predict{}, invalid("predict request: %v; want a JSON object with \"instances\" or \"inputs\"", err)
	}
	var p Predict
	if sig, ok := w["signature_name"]; ok && json.Unmarshal(sig, &p.SignatureName) != nil {
		return p, invalid("signature_name must be a string")
	}
	inst, hasInst := w["instances"]
	cols, hasCols := w["inputs"]
	switch {
	case hasInst && hasCols:
		return p, invalid("predict request has both \"instances\" and \"inputs\"; send one")
	case hasInst:
		v, err := decodeAny(inst)
		if err != nil {
			return p, invalid("instances: %v", err)
		}
		p.Inputs, err = rowInputs(v)
		return p, err
	case hasCols:
		v, err := decodeAny(cols)
		if err != nil {
			return p, invalid("inputs: %v", err)
		}
		p.Columnar = true
		p.Inputs, err = columnarInputs("inputs", v)
		return p, err
	}
	return p, invalid("predict request has neither \"instances\" (row format) nor \"inputs\" (columnar format)")
}

func decodeAny(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("malformed JSON: %w", err)
	}
	return v, nil
}

// isNamed reports whether v is an object of named inputs rather than a
// {"b64": ...} value.
func isNamed(v any) (map[string]any, bool) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, false
	}
	if _, b64 := m["b64"]; b64 && len(m) == 1 {
		return nil, false
	}
	return m, true
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// rowInputs builds the inputs of the row format.
func rowInputs(v any) ([]inference.Tensor, error) {
	list, ok := v.([]any)
	if !ok {
		return nil, invalid("instances must be an array of rows")
	}
	if len(list) == 0 {
		return nil, invalid("instances is empty; give at least one instance")
	}
	first, named := isNamed(list[0])
	if !named {
		t, err := buildTensor("instances", TFUnnamed, list)
		if err != nil {
			return nil, err
		}
		return []inference.Tensor{t}, nil
	}
	if len(first) == 0 {
		return nil, invalid("instances[0] is an empty object; name at least one input")
	}
	names := sortedKeys(first)
	cols := make([][]any, len(names))
	for i, inst := range list {
		m, ok := isNamed(inst)
		if !ok {
			return nil, invalid("instances[%d] is not an object of named inputs, as instances[0] is", i)
		}
		if len(m) != len(names) {
			return nil, invalid("instances[%d] has inputs %v; instances[0] has %v; every instance needs the same inputs", i, sortedKeys(m), names)
		}
		for j, name := range names {
			x, ok := m[name]
			if !ok {
				return nil, invalid("instances[%d] lacks input %q; every instance needs the same inputs %v", i, name, names)
			}
			cols[j] = append(cols[j], x)
		}
	}
	out := make([]inference.Tensor, len(names))
	for j, name := range names {
		if name == "" {
			return nil, invalid("instances[0] has an input with an empty name")
		}
		t, err := buildTensor("instances[*]."+name, name, cols[j])
		if err != nil {
			return nil, err
		}
		out[j] = t
	}
	return out, nil
}

// columnarInputs builds the inputs of the columnar format.
func columnarInputs(field string, v any) ([]inference.Tensor, error) {
	m, named := isNamed(v)
	if !named {
		t, err := buildTensor(field, TFUnnamed, v)
		if err != nil {
			return nil, err
		}
		if len(t.Shape) == 0 {
			return nil, invalid("%s is a scalar; the columnar format needs dim 0 as the batch", field)
		}
		return []inference.Tensor{t}, nil
	}
	if len(m) == 0 {
		return nil, invalid("%s is an empty object; name at least one input", field)
	}
	var out []inference.Tensor
	for _, name := range sortedKeys(m) {
		if name == "" {
			return nil, invalid("%s has an input with an empty name", field)
		}
		t, err := buildTensor(field+"."+name, name, m[name])
		if err != nil {
			return nil, err
		}
		if len(t.Shape) == 0 {
			return nil, invalid("%s.%s is a scalar; the columnar format needs dim 0 as the batch", field, name)
		}
		if len(out) > 0 && t.Shape[0] != out[0].Shape[0] {
			return nil, invalid("%s.%s has %d rows (dim 0) but %s.%s has %d; every input needs the same batch size",
				field, name, t.Shape[0], field, out[0].Name, out[0].Shape[0])
		}
		out = append(out, t)
	}
	return out, nil
}

// tfBuilder flattens one nested JSON tensor.
type tfBuilder struct {
	field string
	dt    inference.DataType
	typed bool
	shape []int64
	data  []byte
}

// buildTensor turns a nested JSON value into a tensor named name; field
// names it in errors.
func buildTensor(field, name string, v any) (inference.Tensor, error) {
	b := tfBuilder{field: field}
	// The shape is the first element's chain; every other must match it.
	for x := v; ; {
		l, ok := x.([]any)
		if !ok {
			break
		}
		if len(b.shape) >= maxTFDepth {
			return inference.Tensor{}, invalid("%s is nested deeper than %d", field, maxTFDepth)
		}
		b.shape = append(b.shape, int64(len(l)))
		if len(l) == 0 {
			break
		}
		x = l[0]
	}
	if err := b.walk(field, v, 0); err != nil {
		return inference.Tensor{}, err
	}
	if !b.typed {
		b.dt = inference.FP64 // an empty tensor
	}
	return inference.Tensor{Name: name, DataType: b.dt, Shape: b.shape, Data: b.data}, nil
}

func (b *tfBuilder) walk(path string, v any, depth int) error {
	if l, ok := v.([]any); ok {
		if depth >= len(b.shape) {
			return invalid("%s is an array where %s holds values at that depth; every row needs the same shape %s",
				path, b.field, inference.FormatShape(b.shape))
		}
		if int64(len(l)) != b.shape[depth] {
			return invalid("%s has %d elements where the first has %d; every row needs the same shape %s",
				path, len(l), b.shape[depth], inference.FormatShape(b.shape))
		}
		for i, x := range l {
			if err := b.walk(path+"["+strconv.Itoa(i)+"]", x, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	if depth != len(b.shape) {
		return invalid("%s is a value where an array is expected; every row needs the same shape %s", path, inference.FormatShape(b.shape))
	}
	var dt inference.DataType
	switch x := v.(type) {
	case json.Number:
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil {
			return invalid("%s: %s is not a representable number", path, x)
		}
		dt = inference.FP64
		b.data = binary.LittleEndian.AppendUint64(b.data, math.Float64bits(f))
	case bool:
		dt = inference.Bool
		if x {
			b.data = append(b.data, 1)
		} else {
			b.data = append(b.data, 0)
		}
	case string:
		dt = inference.Bytes
		b.data = binary.LittleEndian.AppendUint32(b.data, uint32(len(x)))
		b.data = append(b.data, x...)
	case map[string]any:
		s, ok := x["b64"].(string)
		if !ok || len(x) != 1 {
			return invalid("%s is an object; a value is a number, a boolean, a string or {\"b64\": \"...\"}", path)
		}
		raw, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return invalid("%s.b64 is not standard base64: %v", path, err)
		}
		dt = inference.Bytes
		b.data = binary.LittleEndian.AppendUint32(b.data, uint32(len(raw)))
		b.data = append(b.data, raw...)
	default:
		return invalid("%s is null; a value is a number, a boolean, a string or {\"b64\": \"...\"}", path)
	}
	if b.typed && dt != b.dt {
		return invalid("%s is %s where %s holds %s; one tensor holds one kind of value", path, tfKind(dt), b.field, tfKind(b.dt))
	}
	b.dt, b.typed = dt, true
	return nil
}

func tfKind(dt inference.DataType) string {
	switch dt {
	case inference.Bool:
		return "a boolean"
	case inference.Bytes:
		return "a string"
	}
	return "a number"
}

// DecodePredictResponse parses a runtime's predict answer, columnar
// ({"outputs": ...}) or rows ({"predictions": [...]}), into output tensors:
// one named TFUnnamed when the answer names none. Errors are KindInvalid.
func DecodePredictResponse(body []byte) ([]inference.Tensor, error) {
	var w map[string]json.RawMessage
	if err := strictUnmarshal(body, &w); err != nil || w == nil {
		return nil, invalid("predict response: not a JSON object with \"outputs\" or \"predictions\"")
	}
	if raw, ok := w["outputs"]; ok {
		v, err := decodeAny(raw)
		if err != nil {
			return nil, invalid("outputs: %v", err)
		}
		return columnarInputs("outputs", v)
	}
	raw, ok := w["predictions"]
	if !ok {
		return nil, invalid("predict response has neither \"outputs\" nor \"predictions\"")
	}
	v, err := decodeAny(raw)
	if err != nil {
		return nil, invalid("predictions: %v", err)
	}
	list, ok := v.([]any)
	if !ok {
		return nil, invalid("predictions must be an array of rows")
	}
	if len(list) > 0 {
		if _, named := isNamed(list[0]); named {
			return rowInputs(v)
		}
	}
	t, err := buildTensor("predictions", TFUnnamed, list)
	if err != nil {
		return nil, err
	}
	return []inference.Tensor{t}, nil
}
