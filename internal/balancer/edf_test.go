package balancer

import (
	"math"
	"testing"
)

func TestEDFFollowsWeights(t *testing.T) {
	var e EDF
	loads := []Load{{Weight: 1, Eligible: true}, {Weight: 2, Eligible: true}, {Weight: 3, Eligible: true}}
	const n = 6000
	counts := make([]int, len(loads))
	for range n {
		counts[e.Pick(loads)]++
	}
	for i, want := range []float64{1.0 / 6, 2.0 / 6, 3.0 / 6} {
		if got := float64(counts[i]) / n; math.Abs(got-want) > 0.01 {
			t.Errorf("endpoint %d (weight %d): share %.4f, want %.4f ± 0.01", i, loads[i].Weight, got, want)
		}
	}
}

func TestEDFInterleaves(t *testing.T) {
	var e EDF
	loads := []Load{{Weight: 1, Eligible: true}, {Weight: 1, Eligible: true}}
	prev := e.Pick(loads)
	for range 10 {
		got := e.Pick(loads)
		if got == prev {
			t.Fatalf("equal weights picked %d twice in a row", got)
		}
		prev = got
	}
}

func TestEDFNoneEligible(t *testing.T) {
	var e EDF
	if got := e.Pick([]Load{{Weight: 1}, {Weight: 2}}); got != -1 {
		t.Errorf("got %d, want -1", got)
	}
	if got := e.Pick(nil); got != -1 {
		t.Errorf("no endpoints: got %d, want -1", got)
	}
}

// TestEDFIneligibleRejoins checks that an ineligible endpoint is skipped
// and, when it comes back, gets its share from then on: no burst to make
// up for the picks it missed, and no starvation.
func TestEDFIneligibleRejoins(t *testing.T) {
	var e EDF
	loads := []Load{{Weight: 1, Eligible: true}, {Weight: 1, Eligible: true}, {Weight: 2, Eligible: true}}
	for range 100 {
		e.Pick(loads)
	}
	loads[2].Eligible = false
	for range 1000 {
		if got := e.Pick(loads); got == 2 {
			t.Fatal("ineligible endpoint picked")
		}
	}
	loads[2].Eligible = true
	counts := make([]int, len(loads))
	for k := range 400 {
		counts[e.Pick(loads)]++
		if k == 7 && (counts[2] < 3 || counts[2] > 5) {
			t.Errorf("first 8 picks after rejoining: endpoint 2 got %d, want its share 4 ± 1", counts[2])
		}
	}
	for i, want := range []int{100, 100, 200} {
		if d := counts[i] - want; d < -2 || d > 2 {
			t.Errorf("after rejoining, endpoint %d got %d of 400 picks, want %d ± 2", i, counts[i], want)
		}
	}
}

func TestEDFZeroWeightCountsAsOne(t *testing.T) {
	var e EDF
	loads := []Load{{Weight: 0, Eligible: true}, {Weight: 1, Eligible: true}}
	counts := make([]int, 2)
	for range 100 {
		counts[e.Pick(loads)]++
	}
	if counts[0] != 50 || counts[1] != 50 {
		t.Errorf("counts %v, want 50 each", counts)
	}
}

func TestEDFRebaseKeepsShares(t *testing.T) {
	var e EDF
	loads := []Load{{Weight: 1, Eligible: true}, {Weight: 3, Eligible: true}}
	e.Pick(loads)
	e.now = rebase - 1 // jump close to the rebase point
	e.deadline[0], e.deadline[1] = rebase-0.5, rebase-1+1.0/3
	counts := make([]int, 2)
	for range 4000 {
		counts[e.Pick(loads)]++
	}
	if d := counts[1] - 3000; d < -2 || d > 2 {
		t.Errorf("across a rebase: counts %v, want 1000/3000 ± 2", counts)
	}
	if e.now > rebase {
		t.Errorf("virtual time %v not rebased", e.now)
	}
}

func TestEDFPickAllocs(t *testing.T) {
	var e EDF
	loads := benchLoads()
	e.Pick(loads)
	if a := testing.AllocsPerRun(1000, func() { e.Pick(loads) }); a != 0 {
		t.Errorf("Pick allocates %v times per call, want 0", a)
	}
}

func BenchmarkEDF(b *testing.B) {
	var e EDF
	loads := benchLoads()
	b.ReportAllocs()
	for b.Loop() {
		e.Pick(loads)
	}
}

// benchLoads is 8 endpoints of mixed weight and load, one ineligible.
func benchLoads() []Load {
	loads := make([]Load, 8)
	for i := range loads {
		loads[i] = Load{InFlightRows: i * 3, Weight: 1 + i%3, Eligible: i != 4}
	}
	return loads
}
