package modelrt

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/batchmesh/batchmesh/internal/inference"
)

func mustSim(t testing.TB, arg string) *Sim {
	t.Helper()
	s, err := ParseSim(arg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestProfileNames(t *testing.T) {
	if _, err := simProfiles(); err != nil {
		t.Fatal(err)
	}
	want := []string{"h200/bert-base", "h200/minilm-l6", "h200/resnet50"}
	if got := ProfileNames(); !slices.Equal(got, want) {
		t.Errorf("ProfileNames = %q, want %q", got, want)
	}
}

func TestSimLatency(t *testing.T) {
	tests := []struct {
		sim  string
		n    int
		want time.Duration
	}{
		{sim: "h200/bert-base", n: 0, want: 0},
		{sim: "h200/bert-base", n: 1, want: 4877800 * time.Nanosecond},
		{sim: "h200/bert-base", n: 2, want: 4313800 * time.Nanosecond},
		{sim: "h200/bert-base", n: 3, want: 4261800 * time.Nanosecond},   // halfway from 2 to 4
		{sim: "h200/bert-base", n: 100, want: 6223619 * time.Nanosecond}, // 36/64 of the way from 64 to 128, rounded
		{sim: "h200/bert-base", n: 256, want: 14705700 * time.Nanosecond},
		{sim: "h200/bert-base", n: 512, want: 28793300 * time.Nanosecond}, // 128→256 slope continued
		{sim: "h200/minilm-l6", n: 64, want: 2537600 * time.Nanosecond},
		{sim: "h200/resnet50", n: 1, want: 5759100 * time.Nanosecond},
		{sim: "linear/5ms+200us", n: 10, want: 7 * time.Millisecond},
		{sim: "linear/5ms+200us", n: 1, want: 5200 * time.Microsecond},
		{sim: "linear/0s+0s", n: 1000, want: 0},
		{sim: "linear/1h+1h", n: math.MaxInt, want: math.MaxInt64},
	}
	for _, tt := range tests {
		if got := mustSim(t, tt.sim).Latency(tt.n); got != tt.want {
			t.Errorf("%s: Latency(%d) = %v, want %v", tt.sim, tt.n, got, tt.want)
		}
	}
}

// TestSimLatencyExtremes checks the profile edges: a single point, and
// extrapolation that would go below zero.
func TestSimLatencyExtremes(t *testing.T) {
	one := &Sim{points: []simPoint{{4, time.Millisecond}}}
	falling := &Sim{points: []simPoint{{1, 2 * time.Millisecond}, {2, time.Millisecond}}}
	tests := []struct {
		s    *Sim
		n    int
		want time.Duration
	}{
		{one, 1, time.Millisecond},
		{one, 100, time.Millisecond},
		{falling, 3, 0},
		{falling, 1 << 40, 0},
	}
	for _, tt := range tests {
		if got := tt.s.Latency(tt.n); got != tt.want {
			t.Errorf("%+v: Latency(%d) = %v, want %v", tt.s.points, tt.n, got, tt.want)
		}
	}
}

func TestParseSimErrors(t *testing.T) {
	tests := []struct {
		arg, want string
	}{
		{arg: "", want: `sim "": unknown profile; known: h200/bert-base, h200/minilm-l6, h200/resnet50, or linear/BASE+PERROW`},
		{arg: "h100/bert-base", want: "unknown profile; known: h200/bert-base"},
		{arg: "linear/5ms", want: "want linear/BASE+PERROW"},
		{arg: "linear/5ms+", want: `PERROW ""`},
		{arg: "linear/+5ms+1ms", want: `BASE "": want an unsigned Go duration`},
		{arg: "linear/5ms++1ms", want: `PERROW "+1ms"`},
		{arg: "linear/-5ms+1ms", want: `BASE "-5ms"`},
		{arg: "linear/5xs+1ms", want: `BASE "5xs"`},
		{arg: "linear/2h+1ms", want: "over an hour"},
	}
	for _, tt := range tests {
		_, err := ParseSim(tt.arg)
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "modelrt: ") {
			t.Errorf("ParseSim(%q): error %v, want modelrt: ...%s...", tt.arg, err, tt.want)
		}
	}
}

func TestXXH64(t *testing.T) {
	tests := []struct {
		in   string
		seed uint64
		want uint64
	}{
		{"", 0, 0xef46db3751d8e999},
		{"a", 0, 0xd24ec4f1a98c6e5b},
		{"abc", 0, 0x44bc2cf5ad770999},
		{"Nobody inspects the spammish repetition", 0, 0xfbcea83c8a378bf1},
		{"0123456789abcdef0123456789abcdef0123456789", 0, 0xa76190c3acf08a1c},
		{"Nobody inspects the spammish repetition", 0x9E3779B97F4A7C15, 0xeb8b157ca26cbf34},
	}
	for _, tt := range tests {
		if got := xxh64([]byte(tt.in), tt.seed); got != tt.want {
			t.Errorf("xxh64(%q, %#x) = %#x, want %#x", tt.in, tt.seed, got, tt.want)
		}
	}
}

// bytesRows returns a BYTES tensor of n rows of 2 elements each.
func bytesRows(rng *rand.Rand, n int) inference.Tensor {
	var data []byte
	for range 2 * n {
		s := make([]byte, rng.IntN(12))
		for i := range s {
			s[i] = byte(rng.Uint32())
		}
		data = binary.LittleEndian.AppendUint32(data, uint32(len(s)))
		data = append(data, s...)
	}
	return inference.Tensor{Name: "text", DataType: inference.Bytes, Shape: []int64{int64(n), 2}, Data: data}
}

func TestSimRowsBitIdentical(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	int64s := func(n int) inference.Tensor {
		data := make([]byte, 8*3*n)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		return inference.Tensor{Name: "ids", DataType: inference.Int64, Shape: []int64{int64(n), 3}, Data: data}
	}
	tests := []struct {
		name  string
		input inference.Tensor
	}{
		{name: "FP32", input: fp32Rows(rng, 9, 5)},
		{name: "INT64", input: int64s(7)},
		{name: "BYTES", input: bytesRows(rng, 11)},
		{name: "rank 1", input: inference.Tensor{Name: "x", DataType: inference.Uint8, Shape: []int64{5}, Data: []byte{1, 2, 3, 4, 5}}},
	}
	s := mustSim(t, "linear/0s+0s")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkRowsAlone(t, s, tt.input)
			out := inferRows(t, s, tt.input)
			n := int(tt.input.Shape[0])
			if out.Name != SimOutput || out.DataType != inference.FP32 || inference.FormatShape(out.Shape) != inference.FormatShape([]int64{int64(n), 16}) {
				t.Fatalf("output %q %s %s, want output FP32 [%d,16]", out.Name, out.DataType, inference.FormatShape(out.Shape), n)
			}
			seen := map[float32]bool{}
			for i := range 16 * n {
				v := math.Float32frombits(binary.LittleEndian.Uint32(out.Data[4*i:]))
				if !(v >= -1 && v < 1) {
					t.Fatalf("value %d = %v, want [-1, 1)", i, v)
				}
				seen[v] = true
			}
			if len(seen) < 15*n {
				t.Errorf("only %d distinct values in %d", len(seen), 16*n)
			}
		})
	}
}

// TestSimRowType checks that rows with equal bytes but a different datatype
// or row shape give different outputs.
func TestSimRowType(t *testing.T) {
	s := mustSim(t, "linear/0s+0s")
	data := make([]byte, 8)
	a := inferRows(t, s, inference.Tensor{Name: "x", DataType: inference.Int32, Shape: []int64{1, 2}, Data: data})
	b := inferRows(t, s, inference.Tensor{Name: "x", DataType: inference.FP32, Shape: []int64{1, 2}, Data: data})
	c := inferRows(t, s, inference.Tensor{Name: "x", DataType: inference.Int32, Shape: []int64{1, 1, 2}, Data: data})
	d := inferRows(t, s, inference.Tensor{Name: "other", DataType: inference.Int32, Shape: []int64{1, 2}, Data: data})
	if string(a.Data) == string(b.Data) || string(a.Data) == string(c.Data) {
		t.Error("datatype or row shape does not change the output")
	}
	if string(a.Data) != string(d.Data) {
		t.Error("the input's name changes the output")
	}
}

func TestSimValidate(t *testing.T) {
	s := mustSim(t, "h200/bert-base")
	tests := []struct {
		name   string
		inputs []inference.Tensor
		want   string
	}{
		{name: "no inputs", want: "modelrt: the simulator takes exactly one input (any name, datatype and shape [rows, ...]), got 0 inputs"},
		{name: "two inputs", inputs: make([]inference.Tensor, 2), want: "got 2 inputs"},
		{name: "scalar", inputs: []inference.Tensor{{Name: "x", DataType: inference.FP32, Data: make([]byte, 4)}}, want: `modelrt: input "x": a scalar has no batch dimension`},
		{name: "short data", inputs: []inference.Tensor{{Name: "x", DataType: inference.FP32, Shape: []int64{2}, Data: make([]byte, 4)}}, want: `modelrt: input "x": shape [2] of FP32 needs 2 elements (8 bytes), data has 4 bytes`},
		{name: "bad BYTES", inputs: []inference.Tensor{{Name: "x", DataType: inference.Bytes, Shape: []int64{1}, Data: []byte{9, 0, 0, 0, 1}}}, want: `modelrt: input "x": BYTES element 0: length 9`},
		{name: "bad datatype", inputs: []inference.Tensor{{Name: "x", Shape: []int64{1}}}, want: `unknown datatype`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &inference.Request{Inputs: tt.inputs}
			for _, err := range []error{s.Validate(req), second(s.Infer(context.Background(), req))} {
				if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, inference.ErrInvalid) {
					t.Fatalf("error %v, want a KindInvalid one containing %q", err, tt.want)
				}
			}
		})
	}
}

func TestSimMetadata(t *testing.T) {
	s := mustSim(t, "h200/resnet50")
	if s.String() != "h200/resnet50" {
		t.Errorf("String = %q", s.String())
	}
	in, out := s.Inputs(), s.Outputs()
	if len(in) != 1 || in[0].Name != "input" || in[0].DataType != "" || !slices.Equal(in[0].Shape, []int64{-1, -1}) {
		t.Errorf("Inputs = %+v", in)
	}
	if len(out) != 1 || out[0].Name != "output" || out[0].DataType != "FP32" || !slices.Equal(out[0].Shape, []int64{-1, 16}) {
		t.Errorf("Outputs = %+v", out)
	}
}

// TestSimInferSleeps checks, in fake time, that Infer takes exactly
// Latency(rows), and returns early with ctx's error when ctx ends.
func TestSimInferSleeps(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	tests := []struct {
		name    string
		sim     string
		rows    int
		cancel  time.Duration // cancel after this long; 0: never
		timeout time.Duration // ctx deadline; 0: none
		want    time.Duration
		wantErr error
	}{
		{name: "bert one row", sim: "h200/bert-base", rows: 1, want: 4877800 * time.Nanosecond},
		{name: "bert three rows", sim: "h200/bert-base", rows: 3, want: 4261800 * time.Nanosecond},
		{name: "linear", sim: "linear/5ms+200us", rows: 10, want: 7 * time.Millisecond},
		{name: "zero rows", sim: "linear/5ms+200us", rows: 0, want: 0},
		{name: "cancelled", sim: "h200/bert-base", rows: 1, cancel: time.Millisecond, want: time.Millisecond, wantErr: context.Canceled},
		{name: "deadline", sim: "linear/5ms+200us", rows: 10, timeout: 2 * time.Millisecond, want: 2 * time.Millisecond, wantErr: context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustSim(t, tt.sim)
			req := &inference.Request{Inputs: []inference.Tensor{fp32Rows(rng, tt.rows, 4)}}
			synctest.Test(t, func(t *testing.T) {
				ctx := t.Context()
				if tt.timeout > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tt.timeout)
					defer cancel()
				}
				if tt.cancel > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithCancel(ctx)
					go func() {
						time.Sleep(tt.cancel)
						cancel()
					}()
				}
				start := time.Now()
				out, err := s.Infer(ctx, req)
				if elapsed := time.Since(start); elapsed != tt.want {
					t.Errorf("Infer took %v, want %v", elapsed, tt.want)
				}
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("error %v, want %v", err, tt.wantErr)
				}
				if err == nil && (len(out) != 1 || out[0].Shape[0] != int64(tt.rows)) {
					t.Errorf("outputs %+v", out)
				}
			})
		})
	}
}

func TestSimInferAlreadyCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req := &inference.Request{Inputs: []inference.Tensor{fp32Rows(rand.New(rand.NewPCG(1, 1)), 0, 4)}}
	if _, err := mustSim(t, "linear/0s+0s").Infer(ctx, req); !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want context.Canceled", err)
	}
}

func BenchmarkSimRows(b *testing.B) {
	s := mustSim(b, "linear/0s+0s")
	req := &inference.Request{Inputs: []inference.Tensor{fp32Rows(rand.New(rand.NewPCG(1, 2)), 64, 768)}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Infer(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(req.Inputs[0].Data)))
}
