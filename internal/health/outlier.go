package health

import (
	"sync/atomic"
	"time"
)

// Outlier configures outlier detection: ejection of an endpoint whose
// calls on the data path fail in a row. The defaults are Envoy's.
type Outlier struct {
	// ConsecutiveFailures is the failed calls in a row that eject an
	// endpoint; default 5. Negative turns outlier detection off.
	ConsecutiveFailures int
	// BaseEjectionTime is the first ejection's length; the n-th lasts n
	// times as long, up to MaxEjectionTime. Defaults 30s and 300s.
	BaseEjectionTime, MaxEjectionTime time.Duration
	// MaxEjectionPercent bounds the share of an endpoint's peers ejected
	// at once; one may always be ejected, and the last one never is.
	// Default 10.
	MaxEjectionPercent int
}

// Outlier detection defaults, as Envoy's.
const (
	DefaultConsecutiveFailures = 5
	DefaultBaseEjectionTime    = 30 * time.Second
	DefaultMaxEjectionTime     = 300 * time.Second
	DefaultMaxEjectionPercent  = 10
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
	return o
}

// outlier is one endpoint's outlier detection state.
type outlier struct {
	// consecutive counts failed calls in a row. A success resets it
	// without the table's lock (the common case on the data path), through
	// the Table's streaks snapshot; failures count under the lock.
	consecutive atomic.Int32
	ejected     bool      // out of rotation until until
	until       time.Time // when the ejection ends
	ejections   int       // the ejection multiplier; decays while not ejected
	calm        time.Time // since when the multiplier last decayed or the ejection ended
}

// ReportCall counts one data-path call to address: failed for a connection
// error, a 5xx or a timeout; a success ends a run of failures. A run of
// ConsecutiveFailures ejects the endpoint (see the package comment).
func (t *Table) ReportCall(address string, failed bool) {
	if !failed {
		// Lock-free: an endpoint the table does not know has no run to end.
		if n := (*t.streaks.Load())[address]; n != nil && n.Load() != 0 {
			n.Store(0)
		}
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	o := t.cfg.Outlier
	if o.ConsecutiveFailures < 0 {
		return
	}
	e := t.endpointLocked(address)
	failures := int(e.consecutive.Add(1))
	if e.ejected || failures < o.ConsecutiveFailures {
		return
	}
	if !t.mayEjectLocked(address) {
		t.cfg.Logger.Debug("outlier not ejected: too many of its peers are", "endpoint", address, "consecutive_failures", failures)
		return
	}
	d := min(o.BaseEjectionTime*time.Duration(e.ejections+1), o.MaxEjectionTime)
	t.changeLocked(address, func(e *endpoint) {
		e.ejected, e.until = true, time.Now().Add(d)
		e.consecutive.Store(0)
		e.ejections++
	}, "source", "outlier detection", "consecutive_failures", failures, "ejected_for", d)
	if !e.up { // already down by probes: log the ejection all the same
		t.cfg.Logger.Warn("endpoint ejected", "endpoint", address, "consecutive_failures", failures, "ejected_for", d)
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
	var peers []string
	if t.cfg.Peers != nil {
		peers = t.cfg.Peers(address)
	} else {
		for a := range t.eps {
			peers = append(peers, a)
		}
	}
	n, ejected := 0, 0
	for _, a := range peers {
		if a == address {
			continue
		}
		n++
		if e := t.eps[a]; e != nil && e.ejected {
			ejected++
		}
	}
	n++ // address itself
	allowed := max(1, n*t.cfg.Outlier.MaxEjectionPercent/100)
	return ejected+1 <= allowed && ejected+1 < n
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
