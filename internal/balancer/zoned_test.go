package balancer

import (
	"math/rand/v2"
	"testing"
)

func TestZoned(t *testing.T) {
	zones := []string{"a", "b", "a", "b"}
	tests := []struct {
		name      string
		loads     []Load
		wantLocal bool // the pick must be in zone a
		wantAny   []int
	}{
		{
			name:      "local eligible and idle",
			loads:     []Load{{Weight: 1, Eligible: true}, {Weight: 1, Eligible: true}, {Weight: 1, Eligible: true}, {Weight: 1, Eligible: true}},
			wantLocal: true,
		},
		{
			name:      "local more loaded than remote but within spill",
			loads:     []Load{{InFlightRows: 20, Weight: 1, Eligible: true}, {InFlightRows: 0, Weight: 1, Eligible: true}, {InFlightRows: 20, Weight: 1, Eligible: true}, {InFlightRows: 0, Weight: 1, Eligible: true}},
			wantLocal: true,
		},
		{
			name:    "local ineligible",
			loads:   []Load{{Weight: 1}, {Weight: 1, Eligible: true}, {Weight: 1}, {Weight: 1, Eligible: true}},
			wantAny: []int{1, 3},
		},
		{
			name:    "local over spill",
			loads:   []Load{{InFlightRows: 90, Weight: 1, Eligible: true}, {Weight: 1, Eligible: true}, {Weight: 1}, {Weight: 1, Eligible: true}},
			wantAny: []int{1, 3},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			z := &Zoned{Local: "a", Zones: zones, Inner: NewPicker(rand.New(rand.NewPCG(1, 2)))}
			in := append([]Load(nil), tt.loads...)
			for range 100 {
				got := z.Pick(in)
				switch {
				case got < 0:
					t.Fatalf("picked %d", got)
				case tt.wantLocal && zones[got] != "a":
					t.Fatalf("picked %d in zone %s, want the local zone", got, zones[got])
				case tt.wantAny != nil && got != tt.wantAny[0] && got != tt.wantAny[1]:
					t.Fatalf("picked %d, want one of %v", got, tt.wantAny)
				}
			}
			for i := range in {
				if in[i] != tt.loads[i] {
					t.Fatalf("Pick changed the caller's loads: %+v", in)
				}
			}
		})
	}
}

// TestZonedSpillsToAll checks that spilling hands Inner every endpoint,
// the local ones included.
func TestZonedSpillsToAll(t *testing.T) {
	var e EDF
	z := &Zoned{Local: "a", Zones: []string{"a", "b"}, Inner: &e, Spill: 1}
	loads := []Load{{InFlightRows: 10, Weight: 1, Eligible: true}, {InFlightRows: 0, Weight: 1, Eligible: true}}
	counts := make([]int, 2)
	for range 100 {
		counts[z.Pick(loads)]++
	}
	if counts[0] != 50 || counts[1] != 50 {
		t.Errorf("spilled picks %v, want 50/50 from EDF over both", counts)
	}
}

func TestZonedNoneEligible(t *testing.T) {
	z := &Zoned{Local: "a", Zones: []string{"a"}, Inner: &EDF{}}
	if got := z.Pick([]Load{{Weight: 1}, {Weight: 1}}); got != -1 {
		t.Errorf("got %d, want -1", got)
	}
}

func TestZonedPickAllocs(t *testing.T) {
	z := &Zoned{Local: "a", Zones: []string{"a", "b", "a", "b", "a", "b", "a", "b"}, Inner: &EDF{}}
	loads := benchLoads()
	z.Pick(loads)
	if a := testing.AllocsPerRun(1000, func() { z.Pick(loads) }); a != 0 {
		t.Errorf("Pick allocates %v times per call, want 0", a)
	}
}

func BenchmarkZoned(b *testing.B) {
	z := &Zoned{
		Local: "a",
		Zones: []string{"a", "b", "a", "b", "a", "b", "a", "b"},
		Inner: NewPicker(rand.New(rand.NewPCG(1, 2))),
	}
	loads := benchLoads()
	b.ReportAllocs()
	for b.Loop() {
		z.Pick(loads)
	}
}
