// Package balancer chooses the endpoint a batch goes to.
//
// Every policy has the method Pick(loads []inference.EndpointLoad) int,
// returning an index into loads or -1 when none is eligible, so the batch
// lane can use any of them: Picker (P2C, the default), EDF (weighted round
// robin), RingHash (consistent hashing with bounded loads, keyed by tenant
// through PickKey) and Zoned (prefer the local zone, wrapping another
// policy). None locks: a policy belongs to one batch lane, which picks
// under its own lock, so a policy is not safe for concurrent use and needs
// no mutex of its own. None blocks or allocates per pick.
//
// P2C is the power of two choices on in-flight rows, weighted by endpoint
// weight: draw two eligible endpoints at random and keep the one with the
// lower (in-flight rows + 1) / weight. It never blocks and allocates
// nothing. The xDS issue replaces where the weights come from, not this
// picking.
//
// This package exports no metrics.
package balancer

import (
	"github.com/batchmesh/batchmesh/internal/inference"
)

// Load is what the picker knows of one endpoint.
type Load = inference.EndpointLoad

// Rand is the source of randomness (math/rand/v2's *Rand satisfies it).
type Rand interface {
	IntN(n int) int
}

// Picker is P2C with its own source of randomness. It is not safe for
// concurrent use (nor is its Rand); the lane serialises its picks. The zero
// value is not usable; build it with NewPicker.
type Picker struct {
	r Rand
}

// NewPicker returns a Picker drawing from r.
func NewPicker(r Rand) *Picker { return &Picker{r: r} }

// Pick returns the index of the chosen endpoint, or -1 when none is
// eligible.
func (p *Picker) Pick(loads []inference.EndpointLoad) int {
	return P2C(p.r, loads)
}

// P2C returns the index of the chosen endpoint, or -1 when none is
// eligible.
func P2C(r Rand, loads []Load) int {
	n := 0
	for i := range loads {
		if loads[i].Eligible {
			n++
		}
	}
	switch n {
	case 0:
		return -1
	case 1:
		for i := range loads {
			if loads[i].Eligible {
				return i
			}
		}
	}
	ka := r.IntN(n)
	kb := r.IntN(n - 1)
	if kb >= ka {
		kb++ // two distinct endpoints
	}
	a, b := nth(loads, ka), nth(loads, kb)
	if cost(&loads[b]) < cost(&loads[a]) {
		return b
	}
	return a
}

// nth returns the index of the k-th eligible load.
func nth(loads []Load, k int) int {
	for i := range loads {
		if loads[i].Eligible {
			if k == 0 {
				return i
			}
			k--
		}
	}
	return -1
}

// cost is (in-flight rows + 1) / weight.
func cost(l *Load) float64 {
	w := l.Weight
	if w <= 0 {
		w = 1
	}
	return float64(l.InFlightRows+1) / float64(w)
}
