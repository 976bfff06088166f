package modelrt

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The safetensors format (https://github.com/huggingface/safetensors):
//
//	8 bytes    N, the header length, unsigned little-endian
//	N bytes    a JSON object: {"NAME": {"dtype": "F32", "shape": [2, 3],
//	           "data_offsets": [BEGIN, END]}, ..., "__metadata__": {"k": "v"}}
//	           optionally padded with trailing spaces
//	rest       the data: tensor NAME is rest[BEGIN:END], little-endian,
//	           row-major
//
// The parser is strict: every tensor needs all three fields and no others,
// the data is exactly covered by the tensors with no gap or overlap (as the
// format requires, so that a file cannot hide a second payload), and each
// tensor's byte length matches its dtype and shape.

const (
	// maxHeaderBytes bounds the JSON header, as the reference
	// implementation does.
	maxHeaderBytes = 100 << 20
	// metadataKey is the reserved header key of the free-form metadata.
	metadataKey = "__metadata__"
	// SupportedDTypes lists the safetensors dtypes this package reads and
	// writes, for error messages.
	SupportedDTypes = "F32"
)

// dtypeSize returns the bytes per element of a supported dtype, or 0.
func dtypeSize(dtype string) int {
	if dtype == "F32" {
		return 4
	}
	return 0
}

// WeightTensor is one named tensor of a safetensors file.
type WeightTensor struct {
	Name  string
	DType string  // safetensors dtype; see SupportedDTypes
	Shape []int64 // empty for a scalar
	Data  []byte  // little-endian, row-major: elements × dtype size bytes
}

// F32Tensor returns a WeightTensor of dtype F32 holding values, which must
// have as many elements as shape asks for (WriteSafetensors checks).
func F32Tensor(name string, shape []int64, values []float32) WeightTensor {
	data := make([]byte, 4*len(values))
	for i, v := range values {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
	}
	return WeightTensor{Name: name, DType: "F32", Shape: slices.Clone(shape), Data: data}
}

// Float32s decodes an F32 tensor into a new slice.
func (t *WeightTensor) Float32s() ([]float32, error) {
	if t.DType != "F32" {
		return nil, fmt.Errorf("modelrt: tensor %q: dtype %q, want F32", t.Name, t.DType)
	}
	if len(t.Data)%4 != 0 {
		return nil, fmt.Errorf("modelrt: tensor %q: %d bytes is not a whole number of F32 elements", t.Name, len(t.Data))
	}
	v := make([]float32, len(t.Data)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
	}
	return v, nil
}

// Weights is the content of a safetensors file: its tensors, in the order of
// their data, and its free-form metadata (nil when the file has none).
//
// Weights from ParseSafetensors alias the parsed buffer. A Weights is safe
// for concurrent reads; nothing in this package modifies one after it is
// built.
type Weights struct {
	Tensors  []WeightTensor
	Metadata map[string]string
}

// Tensor returns the tensor with the given name, or nil.
func (w *Weights) Tensor(name string) *WeightTensor {
	for i := range w.Tensors {
		if w.Tensors[i].Name == name {
			return &w.Tensors[i]
		}
	}
	return nil
}

// ReadSafetensors reads and parses the safetensors file at path.
func ReadSafetensors(path string) (*Weights, error) {
	w, err := readSafetensors(path)
	if err != nil {
		return nil, fmt.Errorf("modelrt: %w", err)
	}
	return w, nil
}

func readSafetensors(path string) (*Weights, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	w, err := parseSafetensors(data)
	if err != nil {
		return nil, fmt.Errorf("safetensors file %s: %w", path, err)
	}
	return w, nil
}

// ParseSafetensors parses a safetensors file held in data. The tensors'
// Data alias data, which the caller must not modify while they are in use.
func ParseSafetensors(data []byte) (*Weights, error) {
	w, err := parseSafetensors(data)
	if err != nil {
		return nil, fmt.Errorf("modelrt: safetensors: %w", err)
	}
	return w, nil
}

// headerEntry is one tensor's header value; a nil field was absent.
type headerEntry struct {
	DType   *string
	Shape   []json.Number
	Offsets []json.Number
}

// decodeEntry decodes one tensor's header value, allowing exactly the
// fields dtype, shape and data_offsets (matched case-sensitively).
func decodeEntry(dec *json.Decoder, name string) (*headerEntry, error) {
	var fields map[string]any
	if err := dec.Decode(&fields); err != nil {
		return nil, fmt.Errorf("tensor %q: %w", name, jsonError(err))
	}
	if fields == nil {
		return nil, fmt.Errorf("tensor %q: the value must be an object", name)
	}
	e := &headerEntry{}
	for k, v := range fields {
		var ok bool
		switch k {
		case "dtype":
			var s string
			s, ok = v.(string)
			e.DType = &s
		case "shape":
			e.Shape, ok = numbers(v)
		case "data_offsets":
			e.Offsets, ok = numbers(v)
		default:
			return nil, fmt.Errorf("tensor %q: unknown field %q; allowed: dtype, shape, data_offsets", name, k)
		}
		if !ok {
			want := "an array of numbers"
			if k == "dtype" {
				want = "a string"
			}
			return nil, fmt.Errorf("tensor %q: field %s must be %s", name, k, want)
		}
	}
	return e, nil
}

// numbers returns v as a non-nil slice of numbers when it is a JSON array of
// numbers (decoded with UseNumber).
func numbers(v any) ([]json.Number, bool) {
	a, ok := v.([]any)
	if !ok {
		return nil, false
	}
	ns := make([]json.Number, len(a))
	for i, x := range a {
		if ns[i], ok = x.(json.Number); !ok {
			return nil, false
		}
	}
	return ns, true
}

// span is where a tensor's bytes lie in the data section.
type span struct{ begin, end uint64 }

func parseSafetensors(data []byte) (*Weights, error) {
	if len(data) < 8 {
		return nil, fmt.Errorf("file is %d bytes; it needs at least the 8-byte header length", len(data))
	}
	n := binary.LittleEndian.Uint64(data)
	if n > maxHeaderBytes {
		return nil, fmt.Errorf("header length %d is over the limit of %d bytes", n, maxHeaderBytes)
	}
	if n > uint64(len(data)-8) {
		return nil, fmt.Errorf("header length %d is more than the %d bytes after it", n, len(data)-8)
	}
	header, body := data[8:8+n], data[8+n:]
	if len(header) == 0 || header[0] != '{' {
		return nil, errors.New("header must be a JSON object starting with '{'")
	}
	if !utf8.Valid(header) {
		return nil, errors.New("header is not valid UTF-8")
	}

	w := &Weights{}
	spans := map[string]span{}
	dec := json.NewDecoder(bytes.NewReader(header))
	dec.UseNumber()
	if _, err := dec.Token(); err != nil { // the '{' checked above
		return nil, fmt.Errorf("header: %w", jsonError(err))
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("header: %w", jsonError(err))
		}
		name, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("header: key %v is not a string", tok)
		}
		if seen[name] {
			return nil, fmt.Errorf("header: key %q appears twice", name)
		}
		seen[name] = true
		if name == metadataKey {
			if err := decodeMetadata(dec, w); err != nil {
				return nil, err
			}
			continue
		}
		e, err := decodeEntry(dec, name)
		if err != nil {
			return nil, err
		}
		t, s, err := checkEntry(name, e, uint64(len(body)))
		if err != nil {
			return nil, err
		}
		t.Data = body[s.begin:s.end:s.end]
		w.Tensors = append(w.Tensors, t)
		spans[name] = s
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, fmt.Errorf("header: %w", jsonError(err))
	}
	if rest := header[dec.InputOffset():]; len(bytes.TrimLeft(rest, " \t\r\n")) != 0 {
		return nil, fmt.Errorf("header: %d unexpected bytes after the JSON object", len(rest))
	}
	if err := checkCoverage(w.Tensors, spans, uint64(len(body))); err != nil {
		return nil, err
	}
	return w, nil
}

// jsonError turns the JSON decoder's bare EOF into a message.
func jsonError(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("the JSON ends early")
	}
	return err
}

// decodeMetadata decodes the "__metadata__" value into w.Metadata.
func decodeMetadata(dec *json.Decoder, w *Weights) error {
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return fmt.Errorf("header: %s: %w", metadataKey, jsonError(err))
	}
	var m map[string]string
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return fmt.Errorf("header: %s must be an object of strings", metadataKey)
	}
	w.Metadata = m
	return nil
}

// checkEntry checks one tensor's header entry against a data section of
// bodyLen bytes and returns the tensor (without Data) and its span.
func checkEntry(name string, e *headerEntry, bodyLen uint64) (WeightTensor, span, error) {
	t := WeightTensor{Name: name}
	switch {
	case name == "":
		return t, span{}, errors.New("a tensor has an empty name")
	case e.DType == nil:
		return t, span{}, fmt.Errorf("tensor %q: missing dtype", name)
	case e.Shape == nil:
		return t, span{}, fmt.Errorf("tensor %q: missing shape", name)
	case e.Offsets == nil:
		return t, span{}, fmt.Errorf("tensor %q: missing data_offsets", name)
	}
	t.DType = *e.DType
	size := dtypeSize(t.DType)
	if size == 0 {
		return t, span{}, fmt.Errorf("tensor %q: dtype %q is not supported; supported: %s", name, t.DType, SupportedDTypes)
	}
	if len(e.Offsets) != 2 {
		return t, span{}, fmt.Errorf("tensor %q: data_offsets has %d values; want [BEGIN, END]", name, len(e.Offsets))
	}
	var off [2]uint64
	for i, v := range e.Offsets {
		u, err := strconv.ParseUint(v.String(), 10, 64)
		if err != nil {
			return t, span{}, fmt.Errorf("tensor %q: data_offsets[%d] = %s is not a non-negative integer", name, i, v)
		}
		off[i] = u
	}
	s := span{off[0], off[1]}
	if s.begin > s.end {
		return t, span{}, fmt.Errorf("tensor %q: data_offsets [%d, %d] end before they begin", name, s.begin, s.end)
	}
	if s.end > bodyLen {
		return t, span{}, fmt.Errorf("tensor %q: data_offsets [%d, %d] run past the %d data bytes", name, s.begin, s.end, bodyLen)
	}
	// Every element lies in the data, so a valid element count is at most
	// bodyLen/size; checking against that bound also prevents overflow.
	limit := bodyLen / uint64(size)
	elems := uint64(1)
	t.Shape = make([]int64, len(e.Shape))
	for i, v := range e.Shape {
		d, err := strconv.ParseInt(v.String(), 10, 64)
		if err != nil || d < 0 {
			return t, span{}, fmt.Errorf("tensor %q: shape[%d] = %s is not a non-negative integer", name, i, v)
		}
		t.Shape[i] = d
		if d != 0 && elems > limit/uint64(d) {
			elems = limit + 1 // too many, whatever the other dimensions
		} else {
			elems *= uint64(d)
		}
	}
	if elems > limit || elems*uint64(size) != s.end-s.begin {
		need := "more than 2^63"
		if n, ok := shapeBytes(t.Shape, size); ok {
			need = strconv.FormatUint(n, 10)
		}
		return t, span{}, fmt.Errorf("tensor %q: shape %s of %s needs %s bytes, data_offsets [%d, %d] hold %d",
			name, shapeString(t.Shape), t.DType, need, s.begin, s.end, s.end-s.begin)
	}
	return t, s, nil
}

// checkCoverage checks that the tensors' spans tile the data section
// exactly, and sorts the tensors into data order (ties by name).
func checkCoverage(ts []WeightTensor, spans map[string]span, bodyLen uint64) error {
	slices.SortFunc(ts, func(a, b WeightTensor) int {
		sa, sb := spans[a.Name], spans[b.Name]
		if sa.begin != sb.begin {
			return cmpU64(sa.begin, sb.begin)
		}
		if sa.end != sb.end {
			return cmpU64(sa.end, sb.end)
		}
		return strings.Compare(a.Name, b.Name)
	})
	pos, prev := uint64(0), ""
	for _, t := range ts {
		s := spans[t.Name]
		switch {
		case s.begin > pos && prev == "":
			return fmt.Errorf("tensor %q: data_offsets [%d, %d] leave bytes [0, %d) unused; the data must be covered exactly", t.Name, s.begin, s.end, s.begin)
		case s.begin > pos:
			return fmt.Errorf("tensor %q: data_offsets [%d, %d] leave a gap after tensor %q, which ends at %d", t.Name, s.begin, s.end, prev, pos)
		case s.begin < pos:
			return fmt.Errorf("tensor %q: data_offsets [%d, %d] overlap tensor %q, which ends at %d", t.Name, s.begin, s.end, prev, pos)
		}
		pos, prev = s.end, t.Name
	}
	if pos != bodyLen {
		return fmt.Errorf("the tensors cover %d data bytes but the file has %d; the data must be covered exactly", pos, bodyLen)
	}
	return nil
}

func cmpU64(a, b uint64) int {
	if a < b {
		return -1
	}
	return 1
}

// shapeString writes a shape as "[2,3]".
func shapeString(shape []int64) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, d := range shape {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(d, 10))
	}
	b.WriteByte(']')
	return b.String()
}

// shapeBytes returns the bytes that shape needs at size bytes per element;
// ok is false for a negative dimension or a count over 2^63.
func shapeBytes(shape []int64, size int) (n uint64, ok bool) {
	n = uint64(size)
	for _, d := range shape {
		if d < 0 {
			return 0, false
		}
		if d != 0 && n > math.MaxInt64/uint64(d) {
			return 0, false
		}
		n *= uint64(d)
	}
	return n, true
}

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
