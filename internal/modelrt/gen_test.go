package modelrt

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestGenerateMLPDeterministic(t *testing.T) {
	encode := func(seed int64, sizes []int) []byte {
		w, err := GenerateMLP(seed, sizes)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := WriteSafetensors(&buf, w.Tensors, w.Metadata); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	a, b, c := encode(1, []int{3, 5, 2}), encode(1, []int{3, 5, 2}), encode(2, []int{3, 5, 2})
	if !bytes.Equal(a, b) {
		t.Error("the same seed gave different weights")
	}
	if bytes.Equal(a, c) {
		t.Error("different seeds gave the same weights")
	}
	// Pin the generator: these bytes must never change, or every weights
	// file generated before would stop matching its seed.
	w, err := GenerateMLP(1, []int{3, 5, 2})
	if err != nil {
		t.Fatal(err)
	}
	v, err := w.Tensor("layers.0.weight").Float32s()
	if err != nil {
		t.Fatal(err)
	}
	bound := float32(1.4142135) // √(6/3)
	for _, x := range v {
		if x < -bound || x >= bound {
			t.Errorf("weight %v outside ±%v", x, bound)
		}
	}
	if got, want := v[:3], []float32{0.18826441, 0.6951757, 1.3321968}; !slices.Equal(got, want) {
		t.Errorf("first weights %v, want %v", got, want)
	}
	if w.Metadata["batchmesh.sizes"] != "3,5,2" || w.Metadata["batchmesh.seed"] != "1" {
		t.Errorf("metadata %v", w.Metadata)
	}
}

func TestGenerateMLPDefaults(t *testing.T) {
	w, err := GenerateMLP(1, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMLP(w)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(m.Sizes(), DefaultMLPSizes()) {
		t.Errorf("sizes %v, want %v", m.Sizes(), DefaultMLPSizes())
	}
}

func TestGenerateMLPErrors(t *testing.T) {
	tests := []struct {
		sizes []int
		want  string
	}{
		{sizes: []int{4}, want: "need at least an input and an output width"},
		{sizes: []int{4, 0, 2}, want: "width 1 is 0"},
		{sizes: []int{4, -1}, want: "width 1 is -1"},
		{sizes: []int{1 << 20, 1 << 20}, want: "more than 268435456 parameters"},
	}
	for _, tt := range tests {
		_, err := GenerateMLP(1, tt.sizes)
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "modelrt: ") {
			t.Errorf("sizes %v: error %v, want modelrt: ...%s...", tt.sizes, err, tt.want)
		}
	}
}

func TestGenerateWeightsFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "w.safetensors")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := GenerateWeightsFile(path, 9, []int{6, 4}); err != nil {
		t.Fatal(err)
	}
	w, err := ReadSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := GenerateMLP(9, []int{6, 4})
	checkWeights(t, w, want)
	if err := GenerateWeightsFile(path, 9, []int{6}); err == nil {
		t.Error("bad sizes: no error")
	}
	if err := GenerateWeightsFile(filepath.Join(dir, "no", "dir", "w"), 9, nil); err == nil {
		t.Error("missing directory: no error")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want 1 (no temporary files left)", len(entries))
	}
}
