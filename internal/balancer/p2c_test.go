package balancer

import (
	"math/rand/v2"
	"testing"
)

func TestP2CNoneOrOne(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	if got := P2C(r, []Load{{Eligible: false}, {Eligible: false}}); got != -1 {
		t.Errorf("no eligible endpoint: got %d, want -1", got)
	}
	if got := P2C(r, []Load{{Eligible: false}, {Eligible: true, InFlightRows: 99}}); got != 1 {
		t.Errorf("one eligible endpoint: got %d, want 1", got)
	}
}

func TestP2CPrefersLessLoaded(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	loads := []Load{{InFlightRows: 64, Weight: 1, Eligible: true}, {InFlightRows: 0, Weight: 1, Eligible: true}}
	for range 100 {
		if got := P2C(r, loads); got != 1 {
			t.Fatalf("with two endpoints both are drawn; picked the loaded one (%d)", got)
		}
	}
}

// TestP2CWeightedShare checks that with equal in-flight counts the picks
// follow the weights' order and never pick an ineligible endpoint.
func TestP2CWeightedShare(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	loads := []Load{
		{InFlightRows: 10, Weight: 3, Eligible: true},
		{InFlightRows: 10, Weight: 1, Eligible: true},
		{InFlightRows: 0, Weight: 100, Eligible: false},
		{InFlightRows: 10, Weight: 1, Eligible: true},
	}
	counts := make([]int, len(loads))
	for range 3000 {
		counts[P2C(r, loads)]++
	}
	if counts[2] != 0 {
		t.Errorf("ineligible endpoint picked %d times", counts[2])
	}
	if counts[0] < counts[1]+counts[3] {
		t.Errorf("weight 3 endpoint got %d picks, the two weight-1 ones %d and %d; want it to win every draw it is in", counts[0], counts[1], counts[3])
	}
	if counts[1] == 0 || counts[3] == 0 {
		t.Errorf("equal endpoints never picked: %v", counts)
	}
}

func BenchmarkP2C(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	loads := make([]Load, 8)
	for i := range loads {
		loads[i] = Load{InFlightRows: i * 3, Weight: 1 + i%3, Eligible: i != 4}
	}
	b.ReportAllocs()
	for b.Loop() {
		P2C(r, loads)
	}
}

func TestPickerPickAllocs(t *testing.T) {
	p := NewPicker(rand.New(rand.NewPCG(1, 2)))
	loads := benchLoads()
	if a := testing.AllocsPerRun(1000, func() { p.Pick(loads) }); a != 0 {
		t.Errorf("Pick allocates %v times per call, want 0", a)
	}
}

func BenchmarkPicker(b *testing.B) {
	p := NewPicker(rand.New(rand.NewPCG(1, 2)))
	loads := benchLoads()
	b.ReportAllocs()
	for b.Loop() {
		p.Pick(loads)
	}
}
