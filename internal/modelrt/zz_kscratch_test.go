package modelrt

import ("testing";"fmt";"math/rand";"os";"strings";"strconv")

func BenchmarkKScratch(b *testing.B) {
	sz := os.Getenv("SIZES"); if sz == "" { sz = "256,512,512,16" }
	var sizes []int
	for _, f := range strings.Split(sz, ",") { n, _ := strconv.Atoi(f); sizes = append(sizes, n) }
	rng := rand.New(rand.NewSource(1))
	var ls []*dense
	for i := 0; i+1 < len(sizes); i++ {
		w := make([]float32, sizes[i]*sizes[i+1]); for k := range w { w[k] = rng.Float32()-0.5 }
		ls = append(ls, packDense(w, make([]float32, sizes[i+1]), sizes[i], sizes[i+1]))
	}
	for _, simd := range []bool{false, true} {
	for _, n := range []int{1,8,32,64} {
		b.Run(fmt.Sprintf("simd=%v/n=%d", simd, n), func(b *testing.B) {
			x := make([]float32, n*sizes[0]); for k := range x { x[k] = rng.Float32() }
			bufs := [][]float32{}
			for _, l := range ls { bufs = append(bufs, make([]float32, n*l.stride())) }
			for b.Loop() {
				in, ld := x, sizes[0]
				for i, l := range ls {
					l.forward(bufs[i], l.stride(), in, ld, n, i+1 < len(ls), simd)
					in, ld = bufs[i], l.stride()
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/row")
		})
	}}
}
