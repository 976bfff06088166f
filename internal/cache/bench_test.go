package cache_test

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/batchmesh/batchmesh/internal/cache"
	"github.com/batchmesh/batchmesh/internal/inference"
)

// benchRows is a request of rows rows of cols FP32 values.
func benchRows(rows, cols int) ([]inference.Tensor, [][]int) {
	data := make([]byte, rows*cols*4)
	for i := range data {
		data[i] = byte(i * 31)
	}
	in := []inference.Tensor{{Name: "input", DataType: inference.FP32, Shape: []int64{int64(rows), int64(cols)}, Data: data}}
	return in, [][]int{in[0].RowOffsets(nil)}
}

var benchScope = cache.Scope{
	Model: "bert-base", Version: "1", Protocol: "v2", Route: "infer",
	Outputs: []inference.OutputSpec{{Name: "output"}},
}

// benchOutput is one row of the simulator's answer: 16 FP32 values.
var benchOutput = []inference.Tensor{{Name: "output", DataType: inference.FP32, Shape: []int64{1, 16}, Data: make([]byte, 64)}}

func reportPerRow(b *testing.B, rows int) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*rows), "ns/row")
}

func BenchmarkRowKeys(b *testing.B) {
	for _, cols := range []int{16, 768} {
		b.Run(fmt.Sprintf("1x%dFP32", cols), func(b *testing.B) {
			in, off := benchRows(1, cols)
			dst := make([]cache.Key, 0, 1)
			b.SetBytes(int64(len(in[0].Data)))
			b.ReportAllocs()
			for b.Loop() {
				dst = cache.RowKeys(dst[:0], &benchScope, in, off, 1)
			}
		})
	}
	b.Run("32x768FP32", func(b *testing.B) {
		in, off := benchRows(32, 768)
		dst := make([]cache.Key, 0, 32)
		b.SetBytes(int64(len(in[0].Data)))
		b.ReportAllocs()
		for b.Loop() {
			dst = cache.RowKeys(dst[:0], &benchScope, in, off, 32)
		}
		reportPerRow(b, 32)
	})
}

// BenchmarkLookupMiss is what the cache adds to a row it does not hold:
// the row's key, a missed lookup, and storing the answer (copied) when it
// comes back. Every iteration is a new row, so the cache fills and evicts.
func BenchmarkLookupMiss(b *testing.B) {
	for _, cols := range []int{16, 768} {
		b.Run(fmt.Sprintf("1x%dFP32", cols), func(b *testing.B) {
			c, _ := newCache(b, cache.Config{MaxBytes: 64 << 20})
			in, off := benchRows(1, cols)
			dst := make([]cache.Key, 0, 1)
			now, expires := time.Now(), time.Now().Add(time.Hour)
			var seq uint64
			b.ReportAllocs()
			for b.Loop() {
				seq++
				binary.LittleEndian.PutUint64(in[0].Data, seq)
				dst = cache.RowKeys(dst[:0], &benchScope, in, off, 1)
				_, call, role := c.Lookup("bert-base", dst[0], now, true)
				if role != cache.Leader {
					b.Fatalf("role %d, want Leader", role)
				}
				c.Complete("bert-base", dst[0], call, cache.NewValue(benchOutput), nil, expires, true)
			}
			reportPerRow(b, 1)
		})
	}
}

// BenchmarkLookupHit is a row answered from the cache: its key and a hit.
func BenchmarkLookupHit(b *testing.B) {
	for _, cols := range []int{16, 768} {
		b.Run(fmt.Sprintf("1x%dFP32", cols), func(b *testing.B) {
			c, _ := newCache(b, cache.Config{})
			in, off := benchRows(1, cols)
			now := time.Now()
			dst := cache.RowKeys(nil, &benchScope, in, off, 1)
			fill(b, c, dst[0], cache.NewValue(benchOutput), now, now.Add(time.Hour))
			b.ReportAllocs()
			for b.Loop() {
				dst = cache.RowKeys(dst[:0], &benchScope, in, off, 1)
				if _, _, role := c.Lookup("bert-base", dst[0], now, true); role != cache.Hit {
					b.Fatalf("role %d, want Hit", role)
				}
			}
			reportPerRow(b, 1)
		})
	}
}
