package modelrt

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

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
