package balancer

import (
	"math/rand/v2"
	"sync"
	"testing"
)

// Every policy has the shape the batch lane's Picker asks for.
var (
	_ Policy = (*Picker)(nil)
	_ Policy = (*EDF)(nil)
	_ Policy = (*RingHash)(nil)
	_ Policy = (*Zoned)(nil)
)

// TestPoliciesConcurrent picks from every policy on several goroutines at
// once; run with -race.
func TestPoliciesConcurrent(t *testing.T) {
	policies := map[string]Policy{
		"p2c":      NewPicker(rand.New(rand.NewPCG(1, 2))),
		"edf":      &EDF{},
		"ringhash": NewRingHash(fourAddrs, nil, 0),
		"zoned":    &Zoned{Local: "a", Zones: []string{"a", "b", "a", "b"}, Inner: &EDF{}},
	}
	for name, p := range policies {
		t.Run(name, func(t *testing.T) {
			var wg sync.WaitGroup
			for range 4 {
				wg.Go(func() {
					loads := idle(4)
					for range 500 {
						if got := p.Pick(loads); got < 0 || got >= len(loads) {
							t.Errorf("picked %d", got)
							return
						}
					}
				})
			}
			wg.Wait()
		})
	}
}
