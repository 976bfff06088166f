package balancer

import (
	"math/rand/v2"
	"testing"
)

// Every policy has the shape the batch lane's Picker asks for.
var (
	_ Policy = (*Picker)(nil)
	_ Policy = (*EDF)(nil)
	_ Policy = (*RingHash)(nil)
	_ Policy = (*Zoned)(nil)
)

// TestPoliciesPickInRange picks from every policy as eligibility changes
// (the lane's use: one pick at a time, under its lock) and checks each pick
// is an eligible endpoint.
func TestPoliciesPickInRange(t *testing.T) {
	policies := map[string]Policy{
		"p2c":      NewPicker(rand.New(rand.NewPCG(1, 2))),
		"edf":      &EDF{},
		"ringhash": NewRingHash(fourAddrs, nil, 0),
		"zoned":    &Zoned{Local: "a", Zones: []string{"a", "b", "a", "b"}, Inner: &EDF{}},
	}
	for name, p := range policies {
		t.Run(name, func(t *testing.T) {
			loads := idle(4)
			for i := range 2000 {
				for k := range loads {
					loads[k].Eligible = (i>>k)&1 == 0 || k == i%4
				}
				got := p.Pick(loads)
				if got < 0 || got >= len(loads) || !loads[got].Eligible {
					t.Fatalf("pick %d: got %d, want an eligible endpoint of %+v", i, got, loads)
				}
			}
		})
	}
}
