package health

import (
	"maps"
	"math/rand/v2"
	"slices"
)

// callCount is an endpoint's calls in one interval.
type callCount struct{ calls, failures int64 }

// failurePercentageLocked ejects, as Envoy's failure-percentage outlier
// detection does, each endpoint that failed at least
// FailurePercentageThreshold percent of its calls since the last
// evaluation, when it made FailurePercentageRequestVolume calls or more
// and so did FailurePercentageMinimumHosts of its peers (itself
// included); EnforcingFailurePercentage is the chance that it is. The
// counts start again from zero. t.mu is held.
func (t *Table) failurePercentageLocked() {
	o := t.cfg.Outlier
	counts := make(map[string]callCount, len(t.eps))
	for a, e := range t.eps {
		counts[a] = callCount{e.calls.Swap(0), e.failed.Swap(0)}
	}
	if o.EnforcingFailurePercentage < 0 {
		return
	}
	volume := int64(o.FailurePercentageRequestVolume)
	// In address order, so that MaxEjectionPercent picks the same ones
	// every time.
	for _, a := range slices.Sorted(maps.Keys(counts)) {
		c, e := counts[a], t.eps[a]
		if e.ejected || c.calls < volume || c.failures*100 < int64(o.FailurePercentageThreshold)*c.calls {
			continue
		}
		if hosts := t.busyPeersLocked(a, counts, volume); hosts < o.FailurePercentageMinimumHosts {
			t.cfg.Logger.Debug("outlier not ejected: too few endpoints with enough calls", "endpoint", a, "hosts", hosts)
			continue
		}
		if o.EnforcingFailurePercentage < 100 && rand.IntN(100) >= o.EnforcingFailurePercentage {
			continue
		}
		t.ejectLocked(a, e, "failure_percentage", c.failures*100/c.calls, "calls", c.calls)
	}
}

// busyPeersLocked counts address's peers, itself included, that made
// volume calls or more.
func (t *Table) busyPeersLocked(address string, counts map[string]callCount, volume int64) int {
	n := 0
	for _, p := range t.peersLocked(address) {
		if p == address || counts[p].calls >= volume {
			n++
		}
	}
	return n
}
