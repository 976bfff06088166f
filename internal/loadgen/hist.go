package loadgen

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// The latency histogram has log-spaced buckets with 64 linear sub-buckets
// per power of two (HDR-style): a bucket is at most 1/64 of its lower bound
// wide, so a reported percentile is within 0.8% of the truth. Values are in
// nanoseconds; those of 2^38 ns (about 275 s) and more share the top bucket.
const (
	subBits    = 6
	subCount   = 1 << subBits
	maxBits    = 38
	numBuckets = (maxBits-subBits-1)*subCount + 2*subCount // bucketOf(2^maxBits-1) is the last
)

// bucketOf returns the bucket index of a duration in nanoseconds.
func bucketOf(ns int64) int {
	if ns < 0 {
		ns = 0
	}
	v := uint64(ns)
	if v >= 1<<maxBits {
		return numBuckets - 1
	}
	if v < 2*subCount {
		return int(v)
	}
	shift := bits.Len64(v) - subBits - 1
	return shift*subCount + int(v>>shift)
}

// bucketRange returns the lowest value of bucket i and the bucket's width.
func bucketRange(i int) (low, width int64) {
	if i < 2*subCount {
		return int64(i), 1
	}
	shift := i/subCount - 1
	return int64(i-shift*subCount) << shift, 1 << shift
}

// hist counts latencies. One goroutine records; others may read it at any
// time (counters are atomic), which the progress reporter does.
type hist struct {
	counts [numBuckets]atomic.Uint32
}

func (h *hist) record(d time.Duration) { h.counts[bucketOf(int64(d))].Add(1) }

// addTo adds h's counts to dst.
func (h *hist) addTo(dst *counts) {
	for i := range h.counts {
		dst[i] += uint64(h.counts[i].Load())
	}
}

// counts is a plain histogram, for merging and reading.
type counts [numBuckets]uint64

func (c *counts) total() uint64 {
	var n uint64
	for _, v := range c {
		n += v
	}
	return n
}

// sub sets c to a - b.
func (c *counts) sub(a, b *counts) {
	for i := range c {
		c[i] = a[i] - b[i]
	}
}

// quantiles returns the value at each quantile q (0..1, ascending) among
// n = c.total() values: the midpoint of the bucket holding the value of
// rank ceil(q*n), never above limit (the largest value seen, when known).
func (c *counts) quantiles(limit time.Duration, qs ...float64) []time.Duration {
	out := make([]time.Duration, len(qs))
	n := c.total()
	if n == 0 {
		return out
	}
	var seen uint64
	j := 0
	for i, v := range c {
		seen += v
		for j < len(qs) && seen >= rank(qs[j], n) {
			low, width := bucketRange(i)
			d := time.Duration(low + width/2)
			if limit > 0 && d > limit {
				d = limit
			}
			out[j] = d
			j++
		}
		if j == len(qs) {
			break
		}
	}
	return out
}

func rank(q float64, n uint64) uint64 {
	r := uint64(math.Ceil(q * float64(n)))
	return min(max(r, 1), n)
}
