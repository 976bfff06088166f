package modelrt

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"unicode/utf8"
)

// WriteSafetensors writes tensors, in the order given, and metadata (omitted
// when empty) to w in the safetensors format. The header is padded with
// spaces so that the data starts at a multiple of 8 bytes. It checks every
// tensor first and writes nothing when one is invalid: names must be unique,
// non-empty, valid UTF-8 and not "__metadata__"; dtypes supported; and Data
// exactly as long as the shape asks.
func WriteSafetensors(w io.Writer, tensors []WeightTensor, metadata map[string]string) error {
	header, err := encodeHeader(tensors, metadata)
	if err != nil {
		return fmt.Errorf("modelrt: write safetensors: %w", err)
	}
	if _, err := w.Write(header); err != nil {
		return fmt.Errorf("modelrt: write safetensors: %w", err)
	}
	for i := range tensors {
		if _, err := w.Write(tensors[i].Data); err != nil {
			return fmt.Errorf("modelrt: write safetensors: tensor %q: %w", tensors[i].Name, err)
		}
	}
	return nil
}

// encodeHeader returns the 8-byte length and the padded JSON header.
func encodeHeader(tensors []WeightTensor, metadata map[string]string) ([]byte, error) {
	b := make([]byte, 8, 8+64*(len(tensors)+len(metadata)+1))
	b = append(b, '{')
	if len(metadata) > 0 {
		keys := make([]string, 0, len(metadata))
		for k, v := range metadata {
			if !utf8.ValidString(k) || !utf8.ValidString(v) {
				return nil, fmt.Errorf("metadata %q: keys and values must be valid UTF-8", k)
			}
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = appendJSONString(b, metadataKey)
		b = append(b, ":{"...)
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, k)
			b = append(b, ':')
			b = appendJSONString(b, metadata[k])
		}
		b = append(b, '}')
	}
	seen := make(map[string]bool, len(tensors))
	var pos uint64
	for i := range tensors {
		t := &tensors[i]
		switch {
		case t.Name == "":
			return nil, fmt.Errorf("tensor %d has an empty name", i)
		case t.Name == metadataKey:
			return nil, fmt.Errorf("tensor %q: the name is reserved for metadata", t.Name)
		case !utf8.ValidString(t.Name):
			return nil, fmt.Errorf("tensor %q: the name is not valid UTF-8", t.Name)
		case seen[t.Name]:
			return nil, fmt.Errorf("tensor %q appears twice", t.Name)
		}
		seen[t.Name] = true
		size := dtypeSize(t.DType)
		if size == 0 {
			return nil, fmt.Errorf("tensor %q: dtype %q is not supported; supported: %s", t.Name, t.DType, SupportedDTypes)
		}
		need, ok := shapeBytes(t.Shape, size)
		if !ok {
			return nil, fmt.Errorf("tensor %q: shape %s: dimensions must be non-negative with fewer than 2^63 bytes in all", t.Name, shapeString(t.Shape))
		}
		if need != uint64(len(t.Data)) {
			return nil, fmt.Errorf("tensor %q: shape %s of %s needs %d bytes, data has %d", t.Name, shapeString(t.Shape), t.DType, need, len(t.Data))
		}
		if len(b) > 9 {
			b = append(b, ',')
		}
		b = appendJSONString(b, t.Name)
		b = append(b, `:{"dtype":`...)
		b = appendJSONString(b, t.DType)
		b = append(b, `,"shape":`...)
		b = append(b, shapeString(t.Shape)...)
		b = append(b, `,"data_offsets":[`...)
		b = strconv.AppendUint(b, pos, 10)
		b = append(b, ',')
		pos += uint64(len(t.Data))
		b = strconv.AppendUint(b, pos, 10)
		b = append(b, "]}"...)
	}
	b = append(b, '}')
	for len(b)%8 != 0 {
		b = append(b, ' ')
	}
	if len(b)-8 > maxHeaderBytes {
		return nil, fmt.Errorf("header of %d bytes is over the limit of %d", len(b)-8, maxHeaderBytes)
	}
	binary.LittleEndian.PutUint64(b, uint64(len(b)-8))
	return b, nil
}

// appendJSONString appends s as a JSON string. s must be valid UTF-8.
func appendJSONString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always marshals
	return append(b, q...)
}
