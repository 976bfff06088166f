package batch

import (
	"context"
	"testing"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// echoCaller fakes the lane's Caller for benchmarks: it answers at once
// with input 0 as output "out", sharing its data, so that the benchmark
// measures the lane alone.
type echoCaller struct{}

func (echoCaller) Call(_ context.Context, _ string, req *inference.Request) ([]inference.Tensor, error) {
	out := req.Inputs[0]
	out.Name = "out"
	return []inference.Tensor{out}, nil
}

func newBenchLane(b *testing.B) *Lane {
	b.Helper()
	l, err := NewLane(Config{Model: "m", Endpoints: []Endpoint{{Address: "a", Slots: 4}}, Caller: echoCaller{}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := l.Close(context.Background()); err != nil {
			b.Error(err)
		}
	})
	return l
}

// BenchmarkSubmit measures one-row requests from parallel callers, in real
// time: the lane's overhead per request, batching included.
func BenchmarkSubmit(b *testing.B) {
	l := newBenchLane(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := fp32Request(keysOf(1, 1))
		for pb.Next() {
			if _, err := l.Submit(context.Background(), r); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkSubmitSerial measures a one-row request on an idle lane: the
// latency the lane adds when there is nothing to batch.
func BenchmarkSubmitSerial(b *testing.B) {
	l := newBenchLane(b)
	r := fp32Request(keysOf(1, 1))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l.Submit(context.Background(), r); err != nil {
			b.Fatal(err)
		}
	}
}
