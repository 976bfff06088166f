package health

import (
	"maps"
	"slices"
	"sync/atomic"
	"time"
)

// Outlier configures outlier detection: ejection of an endpoint whose
// calls on the data path fail in a row, or fail in too large a share
// (failure percentage, see percentage.go). The defaults are Envoy's,
// except EnforcingFailurePercentage.
type Outlier struct {
	// ConsecutiveFailures is the failed calls in a row that eject an
	// endpoint; default 5. Negative turns this ejection off.
	ConsecutiveFailures int
	// BaseEjectionTime is the first ejection's length; the n-th lasts n
	// times as long, up to MaxEjectionTime. Defaults 30s and 300s.
	BaseEjectionTime, MaxEjectionTime time.Duration
	// MaxEjectionPercent bounds the share of an endpoint's peers ejected
	// at once; one may always be ejected, and the last one never is.
	// Default 10.
	MaxEjectionPercent int

	// Interval is how often the failure percentage of every endpoint is
	// evaluated, over the calls since the last time; default 10s.
	Interval time.Duration
	// FailurePercentageThreshold is the share of failed calls, in
	// percent, at which an endpoint is ejected; default 85.
	FailurePercentageThreshold int
	// FailurePercentageMinimumHosts is how many endpoints among the
	// peers (itself included) must have FailurePercentageRequestVolume
	// calls in an Interval for any of them to be ejected; default 5.
	FailurePercentageMinimumHosts int
	// FailurePercentageRequestVolume is the calls an endpoint needs in an
	// Interval for its failure percentage to count; default 50.
	FailurePercentageRequestVolume int
	// EnforcingFailurePercentage is the chance, in percent, that an
	// endpoint over the threshold is ejected; default 100 (Envoy's is 0,
	// off). Negative turns failure-percentage ejection off.
	EnforcingFailurePercentage int
}

// Outlier detection defaults, as Envoy's.
const (
	DefaultConsecutiveFailures = 5
	DefaultBaseEjectionTime    = 30 * time.Second
	DefaultMaxEjectionTime     = 300 * time.Second
	DefaultMaxEjectionPercent  = 10

	DefaultInterval                       = 10 * time.Second
	DefaultFailurePercentageThreshold     = 85
	DefaultFailurePercentageMinimumHosts  = 5
	DefaultFailurePercentageRequestVolume = 50
	// DefaultEnforcingFailurePercentage is 100 where Envoy's is 0: the
	// minimum hosts, request volume and MaxEjectionPercent already keep
	// it from acting on small or idle sets, and an endpoint failing most
	// calls without five in a row (interleaved with successes) should
	// leave the rotation without an opt-in.
	DefaultEnforcingFailurePercentage = 100
)

// WithDefaults returns o with its zero fields set to the defaults.
func (o Outlier) WithDefaults() Outlier {
	if o.ConsecutiveFailures == 0 {
		o.ConsecutiveFailures = DefaultConsecutiveFailures
	}
	if o.BaseEjectionTime <= 0 {
		o.BaseEjectionTime = DefaultBaseEjectionTime
	}
	if o.MaxEjectionTime <= 0 {
		o.MaxEjectionTime = max(DefaultMaxEjectionTime, o.BaseEjectionTime)
	}
	if o.MaxEjectionPercent <= 0 {
		o.MaxEjectionPercent = DefaultMaxEjectionPercent
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.FailurePercentageThreshold <= 0 {
		o.FailurePercentageThreshold = DefaultFailurePercentageThreshold
	}
	if o.FailurePercentageMinimumHosts <= 0 {
		o.FailurePercentageMinimumHosts = DefaultFailurePercentageMinimumHosts
	}
	if o.FailurePercentageRequestVolume <= 0 {
		o.FailurePercentageRequestVolume = DefaultFailurePercentageRequestVolume
	}
	if o.EnforcingFailurePercentage == 0 {
		o.EnforcingFailurePercentage = DefaultEnforcingFailurePercentage
	}
	return o
}

// outlier is one endpoint's outlier detection state.
type outlier struct {
	counters
	ejected   bool      // out of rotation until until
	until     time.Time // when the ejection ends
	ejections int       // the ejection multiplier; decays while not ejected
	calm      time.Time // since when the multiplier last decayed or the ejection ended
}

// counters are an endpoint's call counts. A success counts without the
// table's lock (the common case on the data path), through the Table's
// counters snapshot; failures count under the lock.
type counters struct {
	consecutive atomic.Int32 // failed calls in a row
	// calls and failures since the last failure-percentage evaluation.
	calls, failed atomic.Int64
}

// ReportCall counts one data-path call to address: failed for a connection
// error, a 5xx or a timeout; a success ends a run of failures. A run of
// ConsecutiveFailures ejects the endpoint (see the package comment).
func (t *Table) ReportCall(address string, failed bool) {
	if !failed {
		// Lock-free: an endpoint the table does not know is counted from
		// its first failure or probe.
		if n := (*t.counters.Load())[address]; n != nil {
			n.calls.Add(1)
			if n.consecutive.Load() != 0 {
				n.consecutive.Store(0)
			}
		}
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	o := t.cfg.Outlier
	e := t.endpointLocked(address)
	e.calls.Add(1)
	e.failed.Add(1)
	if o.ConsecutiveFailures < 0 {
		return
	}
	failures := int(e.consecutive.Add(1))
	if e.ejected || failures < o.ConsecutiveFailures {
		return
	}
	t.ejectLocked(address, e, "consecutive_failures", failures)
}

// ejectLocked ejects address, unless too many of its peers are, for
// BaseEjectionTime × its ejections; t.mu is held. why are log attributes.
func (t *Table) ejectLocked(address string, e *endpoint, why ...any) {
	if !t.mayEjectLocked(address) {
		t.cfg.Logger.Debug("outlier not ejected: too many of its peers are", append([]any{"endpoint", address}, why...)...)
		return
	}
	o := t.cfg.Outlier
	d := min(o.BaseEjectionTime*time.Duration(e.ejections+1), o.MaxEjectionTime)
	attrs := append(append([]any{"source", "outlier detection"}, why...), "ejected_for", d)
	t.changeLocked(address, func(e *endpoint) {
		e.ejected, e.until = true, time.Now().Add(d)
		e.consecutive.Store(0)
		e.ejections++
	}, attrs...)
	if !e.up { // already down by probes: log the ejection all the same
		t.cfg.Logger.Warn("endpoint ejected", append([]any{"endpoint", address}, attrs...)...)
	}
}

// SetOutlier replaces the outlier detection settings (zero fields take
// the defaults), as a new configuration is applied. Ejections in progress
// keep their end.
func (t *Table) SetOutlier(o Outlier) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cfg.Outlier = o.WithDefaults()
}

// mayEjectLocked reports whether ejecting address keeps within
// MaxEjectionPercent of its peers (one may always be ejected) and leaves
// one of them in rotation.
func (t *Table) mayEjectLocked(address string) bool {
	n, ejected := 0, 0
	for _, a := range t.peersLocked(address) {
		n++
		if e := t.eps[a]; a != address && e != nil && e.ejected {
			ejected++
		}
	}
	allowed := max(1, n*t.cfg.Outlier.MaxEjectionPercent/100)
	return ejected+1 <= allowed && ejected+1 < n
}

// peersLocked returns the endpoints that share traffic with address:
// Config.Peers, or every endpoint of the table; address comes first, and
// once.
func (t *Table) peersLocked(address string) []string {
	var all []string
	if t.cfg.Peers != nil {
		all = t.cfg.Peers(address)
	} else {
		all = slices.Collect(maps.Keys(t.eps))
	}
	peers := append(make([]string, 0, len(all)+1), address)
	for _, a := range all {
		if a != address {
			peers = append(peers, a)
		}
	}
	return peers
}

// Ejected reports whether outlier detection has address out of rotation.
func (t *Table) Ejected(address string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.eps[address]
	return e != nil && e.ejected
}

// expire ends the ejections whose time has come, and lets the multiplier
// of an endpoint not ejected decay by one each BaseEjectionTime.
func (t *Table) expire(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	base := t.cfg.Outlier.BaseEjectionTime
	if now.Sub(t.evaluated) >= t.cfg.Outlier.Interval {
		t.evaluated = now
		t.failurePercentageLocked()
	}
	for a, e := range t.eps {
		switch {
		case e.ejected && !now.Before(e.until):
			t.changeLocked(a, func(e *endpoint) { e.ejected, e.calm = false, now }, "source", "outlier detection: ejection ended")
		case !e.ejected && e.ejections > 0 && now.Sub(e.calm) >= base:
			e.ejections--
			e.calm = now
		}
	}
}
