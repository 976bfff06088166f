package codec

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// benchShapes are the batch sizes and row widths (FP32 elements per row)
// every benchmark runs: a small feature vector and a BERT-base embedding.
var benchShapes = []struct{ rows, width int }{{1, 16}, {64, 16}, {1, 768}, {64, 768}}

// fp32Tensor returns a [rows, width] FP32 tensor of values in [-1, 1), whose
// JSON text is as long as real activations'.
func fp32Tensor(name string, rows, width int) inference.Tensor {
	r := rand.New(rand.NewPCG(uint64(rows), uint64(width)))
	data := make([]byte, 0, rows*width*4)
	for range rows * width {
		data = binary.LittleEndian.AppendUint32(data, math.Float32bits(r.Float32()*2-1))
	}
	return inference.Tensor{Name: name, DataType: inference.FP32, Shape: []int64{int64(rows), int64(width)}, Data: data}
}

// reportPerRow adds the ns/row metric; b.N is the loop count once b.Loop
// has returned false.
func reportPerRow(b *testing.B, rows int) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*rows), "ns/row")
}

func BenchmarkDecodeRequest(b *testing.B) {
	for _, enc := range []string{"json", "binary"} {
		for _, s := range benchShapes {
			b.Run(fmt.Sprintf("%s/rows=%d/width=%d", enc, s.rows, s.width), func(b *testing.B) {
				req := inference.Request{ID: "bench", Inputs: []inference.Tensor{fp32Tensor("input", s.rows, s.width)}}
				body, hlen, err := EncodeRequest(nil, &req, enc == "binary")
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(len(body)))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := DecodeRequest(body, hlen); err != nil {
						b.Fatal(err)
					}
				}
				reportPerRow(b, s.rows)
			})
		}
	}
}

func BenchmarkEncodeResponse(b *testing.B) {
	for _, enc := range []string{"json", "binary"} {
		for _, s := range benchShapes {
			b.Run(fmt.Sprintf("%s/rows=%d/width=%d", enc, s.rows, s.width), func(b *testing.B) {
				resp := inference.Response{ModelName: "bench", ID: "bench", Outputs: []inference.Tensor{fp32Tensor("output", s.rows, s.width)}}
				binary := func(string) bool { return enc == "binary" }
				body, _, err := EncodeResponse(nil, &resp, binary)
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(len(body)))
				b.ReportAllocs()
				for b.Loop() {
					if body, _, err = EncodeResponse(body[:0], &resp, binary); err != nil {
						b.Fatal(err)
					}
				}
				reportPerRow(b, s.rows)
			})
		}
	}
}

// BenchmarkSplitRows cuts a batch into one tensor per row, as a batcher does
// when it answers each caller.
func BenchmarkSplitRows(b *testing.B) {
	strs := make([]string, 64*4)
	for i := range strs {
		strs[i] = fmt.Sprintf("token %d", i)
	}
	tensors := map[string]inference.Tensor{
		"fp32/rows=64/width=16":  fp32Tensor("x", 64, 16),
		"fp32/rows=64/width=768": fp32Tensor("x", 64, 768),
		"bytes/rows=64/width=4":  {Name: "s", DataType: inference.Bytes, Shape: []int64{64, 4}, Data: lenPrefixed(strs...)},
	}
	for _, name := range []string{"fp32/rows=64/width=16", "fp32/rows=64/width=768", "bytes/rows=64/width=4"} {
		t := tensors[name]
		b.Run(name, func(b *testing.B) {
			rows := int(t.Shape[0])
			off := make([]int, 0, rows+1)
			parts := make([]inference.Tensor, rows)
			b.ReportAllocs()
			for b.Loop() {
				off = t.RowOffsets(off[:0])
				for i := range rows {
					parts[i] = t.Slice(off, i, i+1)
				}
			}
			reportPerRow(b, rows)
		})
	}
}

// BenchmarkConcat stacks 64 one-row tensors into a batch.
func BenchmarkConcat(b *testing.B) {
	for _, width := range []int{16, 768} {
		b.Run(fmt.Sprintf("rows=64/width=%d", width), func(b *testing.B) {
			t := fp32Tensor("x", 64, width)
			off := t.RowOffsets(nil)
			parts := make([]inference.Tensor, 64)
			for i := range parts {
				parts[i] = t.Slice(off, i, i+1)
			}
			b.SetBytes(int64(len(t.Data)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := inference.Concat(parts); err != nil {
					b.Fatal(err)
				}
			}
			reportPerRow(b, len(parts))
		})
	}
}

func BenchmarkParseRoute(b *testing.B) {
	for _, path := range []string{"/v2/health/ready", "/v2/models/resnet/infer", "/v2/models/resnet/versions/3/infer"} {
		b.Run(path, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				ParseRoute(path)
			}
		})
	}
}
