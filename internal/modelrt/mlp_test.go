package modelrt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// testSizes is small enough for -race yet exercises every kernel path:
// more than 4 panels (a single-row 4-panel group plus leftovers), a
// leftover-free layer, a width that is not a multiple of 16, and a
// 1-panel output.
var testSizes = []int{37, 100, 64, 10}

func testMLP(t testing.TB, sizes []int, simd bool) *MLP {
	t.Helper()
	w, err := GenerateMLP(3, sizes)
	if err != nil {
		t.Fatal(err)
	}
	m, err := newMLP(w, simd)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// kernels returns the kernel choices to test on this machine.
func kernels() []bool {
	if haveSIMD() {
		return []bool{false, true}
	}
	return []bool{false}
}

// fp32Rows returns an "input" tensor of n pseudo-random rows of width in.
func fp32Rows(rng *rand.Rand, n, in int) inference.Tensor {
	data := make([]byte, 4*n*in)
	for i := range n * in {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(float32(rng.NormFloat64())))
	}
	return inference.Tensor{Name: MLPInput, DataType: inference.FP32, Shape: []int64{int64(n), int64(in)}, Data: data}
}

func inferRows(t testing.TB, m Model, in inference.Tensor) inference.Tensor {
	t.Helper()
	req := &inference.Request{Inputs: []inference.Tensor{in}}
	if err := m.Validate(req); err != nil {
		t.Fatal(err)
	}
	out, err := m.Infer(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 {
		t.Fatalf("%d outputs, want 1", len(out))
	}
	return out[0]
}

// checkRowsAlone checks that every row of the batch gives the same bytes
// computed alone.
func checkRowsAlone(t *testing.T, m Model, batch inference.Tensor) {
	t.Helper()
	got := inferRows(t, m, batch)
	n := int(batch.Shape[0])
	inOff := batch.RowOffsets(nil)
	outOff := got.RowOffsets(nil)
	for r := range n {
		alone := inferRows(t, m, batch.Slice(inOff, r, r+1))
		if !bytes.Equal(alone.Data, got.Data[outOff[r]:outOff[r+1]]) {
			t.Fatalf("batch of %d: row %d differs from the row alone", n, r)
		}
	}
}

func TestMLPRowsBitIdentical(t *testing.T) {
	for _, simd := range kernels() {
		t.Run(fmt.Sprintf("simd=%v", simd), func(t *testing.T) {
			m := testMLP(t, testSizes, simd)
			rng := rand.New(rand.NewPCG(1, 2))
			t.Run("batch=8", func(t *testing.T) {
				checkRowsAlone(t, m, fp32Rows(rng, 8, testSizes[0]))
			})
			t.Run("random batches", func(t *testing.T) {
				for range 12 {
					checkRowsAlone(t, m, fp32Rows(rng, 1+rng.IntN(70), testSizes[0]))
				}
			})
		})
	}
}

// TestMLPKernelsAgree checks that the SIMD and portable kernels give the
// same bits, so a row's output does not depend on the machine either.
func TestMLPKernelsAgree(t *testing.T) {
	if !haveSIMD() {
		t.Skip("no SIMD kernels on this machine")
	}
	sizes := []int{130, 200, 90, 17}
	goMLP, simdMLP := testMLP(t, sizes, false), testMLP(t, sizes, true)
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{1, 3, 4, 9, 33} {
		in := fp32Rows(rng, n, sizes[0])
		if a, b := inferRows(t, goMLP, in), inferRows(t, simdMLP, in); !bytes.Equal(a.Data, b.Data) {
			t.Errorf("batch of %d: SIMD and portable kernels differ", n)
		}
	}
}

// naiveMLP computes the MLP from the unpacked weights in float64.
func naiveMLP(t *testing.T, w *Weights, x []float32, n int) []float64 {
	t.Helper()
	act := make([]float64, len(x))
	for i, v := range x {
		act[i] = float64(v)
	}
	for l := 0; ; l++ {
		wt, bt := w.Tensor(fmt.Sprintf("layers.%d.weight", l)), w.Tensor(fmt.Sprintf("layers.%d.bias", l))
		if wt == nil {
			return act
		}
		wv, _ := wt.Float32s()
		bv, _ := bt.Float32s()
		out, in := int(wt.Shape[0]), int(wt.Shape[1])
		next := make([]float64, n*out)
		last := w.Tensor(fmt.Sprintf("layers.%d.weight", l+1)) == nil
		for r := range n {
			for j := range out {
				s := float64(bv[j])
				for k := range in {
					s += act[r*in+k] * float64(wv[j*in+k])
				}
				if !last && s < 0 {
					s = 0
				}
				next[r*out+j] = s
			}
		}
		act = next
	}
}

func TestMLPMatchesNaive(t *testing.T) {
	for _, simd := range kernels() {
		t.Run(fmt.Sprintf("simd=%v", simd), func(t *testing.T) {
			w, err := GenerateMLP(11, testSizes)
			if err != nil {
				t.Fatal(err)
			}
			m, err := newMLP(w, simd)
			if err != nil {
				t.Fatal(err)
			}
			const n = 13
			in := fp32Rows(rand.New(rand.NewPCG(5, 6)), n, testSizes[0])
			x := make([]float32, n*testSizes[0])
			for i := range x {
				x[i] = math.Float32frombits(binary.LittleEndian.Uint32(in.Data[4*i:]))
			}
			want := naiveMLP(t, w, x, n)
			got := inferRows(t, m, in)
			if s := inference.FormatShape(got.Shape); got.Name != MLPOutput || got.DataType != inference.FP32 || s != "[13,10]" {
				t.Fatalf("output %q %s %s, want output FP32 [13,10]", got.Name, got.DataType, s)
			}
			for i, ref := range want {
				v := float64(math.Float32frombits(binary.LittleEndian.Uint32(got.Data[4*i:])))
				if math.Abs(v-ref) > 1e-4*(1+math.Abs(ref)) {
					t.Fatalf("element %d = %v, want %v", i, v, ref)
				}
			}
		})
	}
}

func TestMLPZeroRows(t *testing.T) {
	m := testMLP(t, testSizes, haveSIMD())
	out := inferRows(t, m, inference.Tensor{Name: MLPInput, DataType: inference.FP32, Shape: []int64{0, 37}, Data: []byte{}})
	if s := inference.FormatShape(out.Shape); s != "[0,10]" || len(out.Data) != 0 {
		t.Errorf("output %s with %d bytes, want [0,10] and none", s, len(out.Data))
	}
}

func TestMLPValidate(t *testing.T) {
	m := testMLP(t, []int{64, 16, 8}, false)
	good := fp32Rows(rand.New(rand.NewPCG(1, 1)), 3, 64)
	with := func(f func(*inference.Tensor)) []inference.Tensor {
		t := good
		t.Shape = append([]int64(nil), good.Shape...)
		f(&t)
		return []inference.Tensor{t}
	}
	tests := []struct {
		name   string
		inputs []inference.Tensor
		want   string
	}{
		{name: "no inputs", want: `modelrt: the model takes one input "input" of shape [-1,64] of FP32, got 0 inputs`},
		{name: "two inputs", inputs: []inference.Tensor{good, good}, want: "got 2 inputs"},
		{name: "wrong name", inputs: with(func(t *inference.Tensor) { t.Name = "x" }), want: `modelrt: unknown input "x"; the model takes one input "input" of shape [-1,64] of FP32`},
		{name: "wrong width", inputs: with(func(t *inference.Tensor) { t.Shape = []int64{3, 5}; t.Data = t.Data[:60] }), want: `modelrt: input "input": expected shape [-1,64] of FP32, got [3,5] of FP32`},
		{name: "wrong rank", inputs: with(func(t *inference.Tensor) { t.Shape = []int64{192} }), want: `expected shape [-1,64] of FP32, got [192] of FP32`},
		{name: "wrong datatype", inputs: with(func(t *inference.Tensor) { t.DataType = inference.Int32 }), want: `expected shape [-1,64] of FP32, got [3,64] of INT32`},
		{name: "negative rows", inputs: with(func(t *inference.Tensor) { t.Shape[0] = -3 }), want: `got [-3,64] of FP32`},
		{name: "short data", inputs: with(func(t *inference.Tensor) { t.Data = t.Data[:10] }), want: `modelrt: input "input": shape [3,64] of FP32 needs 192 elements (768 bytes), data has 10 bytes`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &inference.Request{Inputs: tt.inputs}
			for _, err := range []error{m.Validate(req), second(m.Infer(context.Background(), req))} {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("error %v, want one containing %q", err, tt.want)
				}
				if !errors.Is(err, inference.ErrInvalid) {
					t.Errorf("error %v is not KindInvalid", err)
				}
			}
		})
	}
}

func second[T any](_ T, err error) error { return err }

func TestMLPInferCancelled(t *testing.T) {
	m := testMLP(t, testSizes, false)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req := &inference.Request{Inputs: []inference.Tensor{fp32Rows(rand.New(rand.NewPCG(1, 1)), 2, 37)}}
	if _, err := m.Infer(ctx, req); !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want context.Canceled", err)
	}
}

func TestMLPConcurrent(t *testing.T) {
	m := testMLP(t, testSizes, haveSIMD())
	rng := rand.New(rand.NewPCG(8, 9))
	inputs := make([]inference.Tensor, 8)
	want := make([][]byte, len(inputs))
	for i := range inputs {
		inputs[i] = fp32Rows(rng, 1+i*5, testSizes[0])
		want[i] = inferRows(t, m, inputs[i]).Data
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 20 {
				k := (g + i) % len(inputs)
				out, err := m.Infer(context.Background(), &inference.Request{Inputs: []inference.Tensor{inputs[k]}})
				if err != nil {
					t.Error(err)
					return
				}
				if !bytes.Equal(out[0].Data, want[k]) {
					t.Errorf("concurrent call %d gave different bytes", k)
				}
			}
		})
	}
	wg.Wait()
}

func TestNewMLPErrors(t *testing.T) {
	f := func(name string, shape ...int64) WeightTensor {
		n := int64(1)
		for _, d := range shape {
			n *= d
		}
		return F32Tensor(name, shape, make([]float32, n))
	}
	tests := []struct {
		name    string
		tensors []WeightTensor
		want    string
	}{
		{name: "empty", want: "no layers"},
		{name: "missing bias", tensors: []WeightTensor{f("layers.0.weight", 2, 3)}, want: "layer 0 needs both layers.0.weight and layers.0.bias"},
		{name: "weight rank", tensors: []WeightTensor{f("layers.0.weight", 6), f("layers.0.bias", 6)}, want: `tensor "layers.0.weight": shape [6], want [out, in]`},
		{name: "zero width", tensors: []WeightTensor{f("layers.0.weight", 0, 3), f("layers.0.bias", 0)}, want: "both at least 1"},
		{name: "bias shape", tensors: []WeightTensor{f("layers.0.weight", 2, 3), f("layers.0.bias", 3)}, want: `tensor "layers.0.bias": shape [3], want [2]`},
		{name: "chain", tensors: []WeightTensor{f("layers.0.weight", 2, 3), f("layers.0.bias", 2), f("layers.1.weight", 4, 5), f("layers.1.bias", 4)}, want: "takes 5 inputs but layer 0 has 2 outputs"},
		{name: "gap", tensors: []WeightTensor{f("layers.0.weight", 2, 3), f("layers.0.bias", 2), f("layers.2.weight", 4, 2), f("layers.2.bias", 4)}, want: `unexpected tensor "layers.2.weight"`},
		{name: "extra", tensors: []WeightTensor{f("layers.0.weight", 2, 3), f("layers.0.bias", 2), f("embed", 2)}, want: `unexpected tensor "embed"`},
		{name: "leading zero", tensors: []WeightTensor{f("layers.0.weight", 2, 3), f("layers.0.bias", 2), f("layers.00.bias", 2)}, want: `unexpected tensor "layers.00.bias"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewMLP(&Weights{Tensors: tt.tensors})
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "modelrt: ") {
				t.Fatalf("error %v, want modelrt: ...%s...", err, tt.want)
			}
		})
	}
}

func TestLoadMLP(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mlp.safetensors")
	if err := GenerateWeightsFile(path, 5, []int{8, 16, 4}); err != nil {
		t.Fatal(err)
	}
	m, err := LoadMLP(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(m.Sizes()); got != "[8 16 4]" {
		t.Errorf("Sizes = %s", got)
	}
	in, out := m.Inputs(), m.Outputs()
	if len(in) != 1 || in[0].Name != "input" || in[0].DataType != "FP32" || fmt.Sprint(in[0].Shape) != "[-1 8]" {
		t.Errorf("Inputs = %+v", in)
	}
	if len(out) != 1 || out[0].Name != "output" || out[0].DataType != "FP32" || fmt.Sprint(out[0].Shape) != "[-1 4]" {
		t.Errorf("Outputs = %+v", out)
	}
	if _, err := LoadMLP(filepath.Join(t.TempDir(), "missing")); err == nil || !strings.HasPrefix(err.Error(), "modelrt: ") {
		t.Errorf("missing file: error %v", err)
	}
}

func BenchmarkMLP(b *testing.B) {
	m := testMLP(b, DefaultMLPSizes(), haveSIMD())
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 8, 32, 64} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			req := &inference.Request{Inputs: []inference.Tensor{fp32Rows(rng, n, m.in())}}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.Infer(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/row")
		})
	}
}
