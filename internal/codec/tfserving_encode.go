package codec

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// AppendPredictRequest appends a columnar predict body for inputs: one
// input named TFUnnamed as {"inputs": tensor}, otherwise {"inputs": {name:
// tensor}}.
func AppendPredictRequest(dst []byte, inputs []inference.Tensor) ([]byte, error) {
	dst = append(dst, `{"inputs":`...)
	dst, err := appendTFTensors(dst, inputs)
	if err != nil {
		return dst, err
	}
	return append(dst, '}'), nil
}

// AppendPredictResponse appends the answer to a predict request: columnar
// as {"outputs": ...}, rows as {"predictions": [...]}. A single output is
// written unnamed, as TensorFlow Serving does; several as objects by name.
func AppendPredictResponse(dst []byte, outputs []inference.Tensor, columnar bool) ([]byte, error) {
	if columnar {
		dst = append(dst, `{"outputs":`...)
		var err error
		if len(outputs) == 1 {
			dst, err = appendTFValue(dst, &outputs[0], outputs[0].Shape)
		} else {
			dst, err = appendTFTensors(dst, outputs)
		}
		if err != nil {
			return dst, err
		}
		return append(dst, '}'), nil
	}
	if len(outputs) == 0 {
		return dst, fmt.Errorf("codec: predict response has no outputs")
	}
	n := -1
	offs := make([][]int, len(outputs))
	for i := range outputs {
		rows, err := outputs[i].BatchRows()
		if err != nil {
			return dst, err
		}
		if n >= 0 && rows != n {
			return dst, fmt.Errorf("codec: predict outputs disagree on rows: %d and %d", n, rows)
		}
		n = rows
		offs[i] = outputs[i].RowOffsets(nil)
	}
	dst = append(dst, `{"predictions":[`...)
	var err error
	for r := range n {
		if r > 0 {
			dst = append(dst, ',')
		}
		if len(outputs) == 1 {
			row := outputs[0].Slice(offs[0], r, r+1)
			if dst, err = appendTFValue(dst, &row, row.Shape[1:]); err != nil {
				return dst, err
			}
			continue
		}
		dst = append(dst, '{')
		for i := range outputs {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendString(dst, outputs[i].Name)
			dst = append(dst, ':')
			row := outputs[i].Slice(offs[i], r, r+1)
			if dst, err = appendTFValue(dst, &row, row.Shape[1:]); err != nil {
				return dst, err
			}
		}
		dst = append(dst, '}')
	}
	return append(dst, "]}"...), nil
}

func appendTFTensors(dst []byte, ts []inference.Tensor) ([]byte, error) {
	var err error
	if len(ts) == 1 && ts[0].Name == TFUnnamed {
		return appendTFValue(dst, &ts[0], ts[0].Shape)
	}
	dst = append(dst, '{')
	for i := range ts {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, ts[i].Name)
		dst = append(dst, ':')
		if dst, err = appendTFValue(dst, &ts[i], ts[i].Shape); err != nil {
			return dst, err
		}
	}
	return append(dst, '}'), nil
}

// appendTFValue writes t's elements nested by shape (t's own shape, or a
// row's shape past dim 0).
func appendTFValue(dst []byte, t *inference.Tensor, shape []int64) ([]byte, error) {
	w := tfWriter{t: t, b64: strings.HasSuffix(t.Name, "_bytes")}
	if err := t.Validate(); err != nil {
		return dst, fmt.Errorf("codec: %w", err)
	}
	dst, err := w.nest(dst, shape)
	return dst, err
}

type tfWriter struct {
	t   *inference.Tensor
	off int  // next byte of t.Data
	i   int  // next element
	b64 bool // write BYTES as {"b64": ...}
}

func (w *tfWriter) nest(dst []byte, shape []int64) ([]byte, error) {
	if len(shape) == 0 {
		return w.value(dst)
	}
	dst = append(dst, '[')
	var err error
	for k := int64(0); k < shape[0]; k++ {
		if k > 0 {
			dst = append(dst, ',')
		}
		if dst, err = w.nest(dst, shape[1:]); err != nil {
			return dst, err
		}
	}
	return append(dst, ']'), nil
}

func (w *tfWriter) value(dst []byte) ([]byte, error) {
	d := w.t.Data
	defer func() { w.i++ }()
	switch w.t.DataType {
	case inference.Bytes:
		n := int(binary.LittleEndian.Uint32(d[w.off:]))
		s := d[w.off+4 : w.off+4+n]
		w.off += 4 + n
		if w.b64 || !utf8.Valid(s) {
			dst = append(dst, `{"b64":"`...)
			dst = base64.StdEncoding.AppendEncode(dst, s)
			return append(dst, `"}`...), nil
		}
		return appendString(dst, s), nil
	case inference.FP64, inference.FP32:
		var f float64
		bits := 64
		if w.t.DataType == inference.FP32 {
			f, bits = float64(math.Float32frombits(binary.LittleEndian.Uint32(d[4*w.i:]))), 32
		} else {
			f = math.Float64frombits(binary.LittleEndian.Uint64(d[8*w.i:]))
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return dst, nonFinite(w.t, w.i, f)
		}
		return strconv.AppendFloat(dst, f, 'g', -1, bits), nil
	}
	// Every other datatype: one element through the v2 writer.
	sz := w.t.DataType.Size()
	one := inference.Tensor{Name: w.t.Name, DataType: w.t.DataType, Shape: []int64{1}, Data: d[sz*w.i : sz*(w.i+1)]}
	out, err := appendData(dst, &one)
	if err != nil {
		return dst, err
	}
	// appendData wrote [x]: drop the brackets.
	n := copy(out[len(dst):], out[len(dst)+1:len(out)-1])
	return out[:len(dst)+n], nil
}
