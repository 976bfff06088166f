package modelrt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// rawSafetensors assembles a file from a header and data, unchecked.
func rawSafetensors(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, data...)
}

func sampleTensors() []WeightTensor {
	return []WeightTensor{
		F32Tensor("w", []int64{2, 3}, []float32{1, 2, 3, 4, 5, 6}),
		F32Tensor("empty", []int64{0, 4}, nil),
		F32Tensor("scalar", nil, []float32{-0.5}),
		F32Tensor("odd \"name\" <&>\u00e9", []int64{1}, []float32{7}),
	}
}

func TestSafetensorsRoundTrip(t *testing.T) {
	tests := []struct {
		name     string
		tensors  []WeightTensor
		metadata map[string]string
	}{
		{name: "empty file"},
		{name: "metadata only", metadata: map[string]string{"format": "pt"}},
		{name: "tensors", tensors: sampleTensors()},
		{name: "tensors and metadata", tensors: sampleTensors(), metadata: map[string]string{"a": "1", "b\n": "\u2603"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteSafetensors(&buf, tt.tensors, tt.metadata); err != nil {
				t.Fatal(err)
			}
			n := binary.LittleEndian.Uint64(buf.Bytes())
			if (8+n)%8 != 0 {
				t.Errorf("data starts at %d, want a multiple of 8", 8+n)
			}
			w, err := ParseSafetensors(buf.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			checkWeights(t, w, &Weights{Tensors: tt.tensors, Metadata: tt.metadata})
		})
	}
}

// checkWeights compares tensors and metadata, treating nil and empty alike.
func checkWeights(t *testing.T, got, want *Weights) {
	t.Helper()
	if len(got.Tensors) != len(want.Tensors) {
		t.Fatalf("got %d tensors, want %d", len(got.Tensors), len(want.Tensors))
	}
	for i := range want.Tensors {
		g, w := got.Tensors[i], want.Tensors[i]
		if g.Name != w.Name || g.DType != w.DType || !bytes.Equal(g.Data, w.Data) ||
			shapeString(g.Shape) != shapeString(w.Shape) {
			t.Errorf("tensor %d = %q %s %s %x, want %q %s %s %x", i,
				g.Name, g.DType, shapeString(g.Shape), g.Data, w.Name, w.DType, shapeString(w.Shape), w.Data)
		}
	}
	if len(got.Metadata)+len(want.Metadata) > 0 && !reflect.DeepEqual(got.Metadata, want.Metadata) {
		t.Errorf("metadata = %v, want %v", got.Metadata, want.Metadata)
	}
}

func TestParseSafetensorsErrors(t *testing.T) {
	f32 := func(n int) []byte { return make([]byte, 4*n) }
	tests := []struct {
		name string
		file []byte
		want string // a substring of the error
	}{
		{name: "short", file: []byte{1, 2, 3}, want: "at least the 8-byte header length"},
		{name: "header too long", file: rawSafetensors("{}", nil)[:9], want: "more than the 1 bytes after it"},
		{name: "header over limit", file: binary.LittleEndian.AppendUint64(nil, 200<<20), want: "over the limit"},
		{name: "empty header", file: rawSafetensors("", nil), want: "JSON object"},
		{name: "not an object", file: rawSafetensors(`[]`, nil), want: "JSON object"},
		{name: "leading space", file: rawSafetensors(` {}`, nil), want: "starting with '{'"},
		{name: "bad utf-8", file: rawSafetensors("{\"\xff\":1}", nil), want: "UTF-8"},
		{name: "bad json", file: rawSafetensors(`{"a":`, nil), want: `tensor "a": the JSON ends early`},
		{name: "unclosed", file: rawSafetensors(`{"__metadata__":{}`, nil), want: `header: the JSON ends early`},
		{name: "bad key", file: rawSafetensors(`{1:2}`, nil), want: `header: invalid character`},
		{name: "trailing garbage", file: rawSafetensors(`{}x`, nil), want: "after the JSON object"},
		{name: "trailing object", file: rawSafetensors(`{}{}`, nil), want: "after the JSON object"},
		{name: "duplicate tensor", file: rawSafetensors(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, f32(1)), want: `key "a" appears twice`},
		{name: "metadata not strings", file: rawSafetensors(`{"__metadata__":{"a":1}}`, nil), want: "__metadata__ must be an object of strings"},
		{name: "metadata null", file: rawSafetensors(`{"__metadata__":null}`, nil), want: "__metadata__ must be an object of strings"},
		{name: "entry not object", file: rawSafetensors(`{"a":[1]}`, nil), want: `tensor "a"`},
		{name: "entry null", file: rawSafetensors(`{"a":null}`, nil), want: `tensor "a": the value must be an object`},
		{name: "empty name", file: rawSafetensors(`{"":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}`, f32(1)), want: "empty name"},
		{name: "missing dtype", file: rawSafetensors(`{"a":{"shape":[1],"data_offsets":[0,4]}}`, f32(1)), want: `tensor "a": missing dtype`},
		{name: "missing shape", file: rawSafetensors(`{"a":{"dtype":"F32","data_offsets":[0,4]}}`, f32(1)), want: `tensor "a": missing shape`},
		{name: "missing offsets", file: rawSafetensors(`{"a":{"dtype":"F32","shape":[1]}}`, f32(1)), want: `tensor "a": missing data_offsets`},
		{name: "unknown field", file: rawSafetensors(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}`, f32(1)), want: `tensor "a": unknown field "x"`},
		{name: "field case", file: rawSafetensors(`{"a":{"DTYPE":"F32","shape":[1],"data_offsets":[0,4]}}`, f32(1)), want: `unknown field "DTYPE"`},
		{name: "dtype not string", file: rawSafetensors(`{"a":{"dtype":4,"shape":[1],"data_offsets":[0,4]}}`, f32(1)), want: `tensor "a": field dtype must be a string`},
		{name: "unsupported dtype", file: rawSafetensors(`{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}`, f32(1)), want: `tensor "a": dtype "F16" is not supported; supported: F32`},
		{name: "shape not array", file: rawSafetensors(`{"a":{"dtype":"F32","shape":1,"data_offsets":[0,4]}}`, f32(1)), want: `tensor "a": field shape must be an array of numbers`},
		{name: "shape of strings", file: rawSafetensors(`{"a":{"dtype":"F32","shape":["1"],"data_offsets":[0,4]}}`, f32(1)), want: `field shape must be an array of numbers`},
		{name: "negative dim", file: rawSafetensors(`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, f32(1)), want: `tensor "a": shape[0] = -1 is not a non-negative integer`},
		{name: "fractional dim", file: rawSafetensors(`{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}`, f32(1)), want: `shape[0] = 1.5`},
		{name: "shape too big", file: rawSafetensors(`{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}}`, f32(1)), want: `needs more than 2^63 bytes`},
		{name: "shape mismatch", file: rawSafetensors(`{"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}`, f32(5)), want: `tensor "a": shape [2,3] of F32 needs 24 bytes, data_offsets [0, 20] hold 20`},
		{name: "one offset", file: rawSafetensors(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4]}}`, f32(1)), want: `data_offsets has 1 values`},
		{name: "negative offset", file: rawSafetensors(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}`, f32(1)), want: `data_offsets[0] = -4`},
		{name: "huge offset", file: rawSafetensors(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551616]}}`, f32(1)), want: `data_offsets[1]`},
		{name: "reversed offsets", file: rawSafetensors(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}}`, f32(1)), want: `end before they begin`},
		{name: "offsets past data", file: rawSafetensors(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, f32(1)), want: `run past the 4 data bytes`},
		{name: "overlap", file: rawSafetensors(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, f32(3)), want: `tensor "b": data_offsets [4, 12] overlap tensor "a"`},
		{name: "gap", file: rawSafetensors(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}`, f32(3)), want: `tensor "b": data_offsets [8, 12] leave a gap after tensor "a"`},
		{name: "gap at start", file: rawSafetensors(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, f32(2)), want: `leave bytes [0, 4) unused`},
		{name: "unused tail", file: rawSafetensors(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, f32(2)), want: `cover 4 data bytes but the file has 8`},
		{name: "data without tensors", file: rawSafetensors(`{}`, f32(1)), want: `cover 0 data bytes but the file has 4`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := ParseSafetensors(tt.file)
			if err == nil {
				t.Fatalf("parsed %+v, want an error containing %q", w, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "modelrt: safetensors: ") {
				t.Errorf("error %q, want modelrt: safetensors: ...%s...", err, tt.want)
			}
		})
	}
}

func TestParseSafetensorsAccepts(t *testing.T) {
	tests := []struct {
		name string
		file []byte
	}{
		{name: "padded header", file: rawSafetensors(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}      `, make([]byte, 4))},
		{name: "out of order", file: rawSafetensors(`{"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"a":{"data_offsets":[0,4],"shape":[],"dtype":"F32"}}`, make([]byte, 8))},
		{name: "zero-size tensors", file: rawSafetensors(`{"b":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"a":{"dtype":"F32","shape":[3,0],"data_offsets":[0,0]}}`, nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := ParseSafetensors(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			if len(w.Tensors) == 2 && w.Tensors[0].Name != "a" {
				t.Errorf("tensors in order %q, %q; want a first", w.Tensors[0].Name, w.Tensors[1].Name)
			}
		})
	}
}

func TestWriteSafetensorsErrors(t *testing.T) {
	good := F32Tensor("a", []int64{1}, []float32{1})
	tests := []struct {
		name     string
		tensors  []WeightTensor
		metadata map[string]string
		want     string
	}{
		{name: "empty name", tensors: []WeightTensor{F32Tensor("", nil, []float32{1})}, want: "tensor 0 has an empty name"},
		{name: "reserved name", tensors: []WeightTensor{F32Tensor("__metadata__", nil, []float32{1})}, want: "reserved"},
		{name: "duplicate", tensors: []WeightTensor{good, good}, want: `tensor "a" appears twice`},
		{name: "bad utf-8 name", tensors: []WeightTensor{F32Tensor("\xff", nil, []float32{1})}, want: "UTF-8"},
		{name: "bad utf-8 metadata", tensors: []WeightTensor{good}, metadata: map[string]string{"k": "\xff"}, want: "UTF-8"},
		{name: "dtype", tensors: []WeightTensor{{Name: "a", DType: "BF16", Shape: []int64{1}, Data: []byte{0, 0}}}, want: `dtype "BF16" is not supported; supported: F32`},
		{name: "negative dim", tensors: []WeightTensor{{Name: "a", DType: "F32", Shape: []int64{-1}}}, want: "non-negative"},
		{name: "short data", tensors: []WeightTensor{{Name: "a", DType: "F32", Shape: []int64{2}, Data: make([]byte, 4)}}, want: `tensor "a": shape [2] of F32 needs 8 bytes, data has 4`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := WriteSafetensors(&buf, tt.tensors, tt.metadata)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
			if buf.Len() != 0 {
				t.Errorf("wrote %d bytes before failing", buf.Len())
			}
		})
	}
}

type failWriter struct{ n int }

func (w *failWriter) Write(p []byte) (int, error) {
	if w.n == 0 {
		return 0, errors.New("disk full")
	}
	w.n--
	return len(p), nil
}

func TestWriteSafetensorsWriterError(t *testing.T) {
	for n := range 2 {
		err := WriteSafetensors(&failWriter{n: n}, sampleTensors()[:1], nil)
		if err == nil || !strings.Contains(err.Error(), "disk full") {
			t.Errorf("after %d writes: error %v, want disk full", n, err)
		}
	}
}

func TestReadSafetensors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "w.safetensors")
	var buf bytes.Buffer
	if err := WriteSafetensors(&buf, sampleTensors()[:1], nil); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := ReadSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := w.Tensor("w").Float32s()
	if err != nil || !reflect.DeepEqual(v, []float32{1, 2, 3, 4, 5, 6}) {
		t.Errorf("Float32s = %v, %v", v, err)
	}
	if w.Tensor("nope") != nil {
		t.Error("Tensor(nope) != nil")
	}
	if _, err := ReadSafetensors(filepath.Join(dir, "missing")); err == nil || !strings.HasPrefix(err.Error(), "modelrt: ") {
		t.Errorf("missing file: error %v", err)
	}
	if err := os.WriteFile(path, []byte("garbage!!"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSafetensors(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("bad file: error %v, want one naming %s", err, path)
	}
}

func FuzzParseSafetensors(f *testing.F) {
	var buf bytes.Buffer
	if err := WriteSafetensors(&buf, sampleTensors(), map[string]string{"k": "v"}); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add(rawSafetensors(`{}`, nil))
	f.Add(rawSafetensors(`{"a":{"dtype":"F32","shape":[2,0],"data_offsets":[0,0]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}  `, make([]byte, 4)))
	f.Add(rawSafetensors(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}`, make([]byte, 8)))
	f.Fuzz(func(t *testing.T, data []byte) {
		w, err := ParseSafetensors(data)
		if err != nil {
			return
		}
		var out bytes.Buffer
		if err := WriteSafetensors(&out, w.Tensors, w.Metadata); err != nil {
			t.Fatalf("accepted file does not write back: %v", err)
		}
		w2, err := ParseSafetensors(out.Bytes())
		if err != nil {
			t.Fatalf("written file does not parse: %v", err)
		}
		checkWeights(t, w2, w)
	})
}
