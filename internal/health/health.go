// Package health is the sidecar's one view of its endpoints' health.
//
// A Table holds, per endpoint address, whether the endpoint may get
// traffic. Two sources feed it: readiness probes (Probe, Run), and the data
// path (ReportFailure, called by a batch lane whose batch could not reach
// the endpoint). Batching lanes learn of every change through
// Config.OnChange; pass-through picking reads Up. Nothing else decides
// whether an endpoint is healthy.
//
// The rules: an endpoint never seen is up. A failed probe takes an endpoint
// down at once if it has not been seen healthy yet, and otherwise after
// FailAfter failed probes in a row (a busy runtime may miss one). A failure
// on the data path takes it down at once. One successful probe brings it
// back.
//
// Outlier detection (outlier.go) works beside the probes: ReportCall
// counts each data-path call's outcome, and ConsecutiveFailures failures
// in a row eject the endpoint for BaseEjectionTime × its ejections (at most
// MaxEjectionTime), whatever the probes say, unless that would eject more
// than MaxEjectionPercent of its peers or the last of them. Every
// Outlier.Interval, an endpoint that failed FailurePercentageThreshold
// percent of its calls (with enough calls, among enough peers with enough
// calls) is ejected the same way. An ejection ends at Run's first tick
// after its time.
//
// This package exports no metrics; the proxy's /clusters page shows each
// endpoint's state.
package health

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a Table. Zero values are the defaults noted.
type Config struct {
	// Probe checks one endpoint's readiness; required by Probe and Run.
	Probe func(ctx context.Context, address string) error
	// Timeout bounds one probe; default 1s.
	Timeout time.Duration
	// Interval is Run's period; default 1s.
	Interval time.Duration
	// FailAfter is the failed probes in a row that take a healthy endpoint
	// down; default 2.
	FailAfter int
	// OnChange, when set, is called when an endpoint goes up or down, in
	// the order of the changes: the table's lock is held, so it must not
	// call the Table's other methods except Up.
	OnChange func(address string, up bool)
	// Outlier configures outlier detection on the data path (ReportCall);
	// zero fields take the defaults of Outlier.WithDefaults.
	Outlier Outlier
	// Peers, when set, returns the endpoints that share traffic with
	// address (itself included), among which Outlier.MaxEjectionPercent
	// applies; by default every endpoint of the table. Called with the
	// table's lock held: it must not call the Table's methods.
	Peers func(address string) []string
	// Logger receives a line per change (up at info, down at warn, with the
	// failed probes in a row) and one per probe at debug; nil discards. A
	// dead endpoint logs one warning, not one per probe.
	Logger *slog.Logger
}

// Table is the health of every endpoint the sidecar knows. Its methods are
// safe for concurrent use; Up does not lock.
type Table struct {
	cfg    Config
	probed atomic.Bool

	mu  sync.Mutex
	eps map[string]*endpoint
	// up mirrors each endpoint's state for lock-free reads: a
	// map[string]bool replaced on every change (changes are rare).
	up atomic.Pointer[map[string]bool]
	// counters maps each endpoint to its call counts, for ReportCall's
	// lock-free success path; replaced when an endpoint is added.
	counters atomic.Pointer[map[string]*counters]
	// evaluated is when failure percentages were last evaluated (Run
	// starts the first interval); under mu.
	evaluated time.Time
}

type endpoint struct {
	up       bool
	seen     bool // a probe answered, or the data path failed
	failures int  // failed probes in a row
	outlier       // outlier detection's state: see outlier.go
}

// serving reports whether the endpoint may get traffic: up, and not
// ejected by outlier detection.
func (e *endpoint) serving() bool { return e.up && !e.ejected }

// New builds a table. It starts nothing: call Probe once, then Run.
func New(cfg Config) *Table {
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Second
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.FailAfter <= 0 {
		cfg.FailAfter = 2
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Outlier = cfg.Outlier.WithDefaults()
	t := &Table{cfg: cfg, eps: make(map[string]*endpoint)}
	t.up.Store(&map[string]bool{})
	t.counters.Store(&map[string]*counters{})
	return t
}

// Up reports whether address may get traffic: true unless a probe or the
// data path took it down.
func (t *Table) Up(address string) bool {
	up, known := (*t.up.Load())[address]
	return !known || up
}

// Probed reports whether Probe has run once, so that readiness tells the
// truth.
func (t *Table) Probed() bool { return t.probed.Load() }

// ReportFailure takes address down at once: a batch could not reach it. The
// next successful probe brings it back.
func (t *Table) ReportFailure(address string, err error) {
	t.set(address, func(e *endpoint) bool {
		e.seen = true
		return false
	}, "err", err, "source", "data path")
}

// Probe checks every address once, concurrently, and records the results.
// It returns when every probe has answered or timed out.
func (t *Table) Probe(ctx context.Context, addresses []string) {
	var wg sync.WaitGroup
	for _, a := range addresses {
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, t.cfg.Timeout)
			err := t.cfg.Probe(pctx, a)
			cancel()
			if ctx.Err() != nil {
				return // shutting down: a probe cut short says nothing
			}
			t.record(a, err)
		})
	}
	wg.Wait()
	if ctx.Err() == nil {
		t.probed.Store(true)
	}
}

// Run probes the addresses targets returns every Interval until ctx ends.
func (t *Table) Run(ctx context.Context, targets func() []string) {
	tick := time.NewTicker(t.cfg.Interval)
	defer tick.Stop()
	t.mu.Lock()
	t.evaluated = time.Now() // the first failure-percentage interval
	t.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			t.expire(time.Now())
			t.Probe(ctx, targets())
		}
	}
}

func (t *Table) record(address string, err error) {
	if err == nil {
		t.set(address, func(e *endpoint) bool {
			e.seen, e.failures = true, 0
			return true
		}, "source", "probe")
		t.cfg.Logger.Debug("endpoint probe", "endpoint", address, "ok", true)
		return
	}
	t.set(address, func(e *endpoint) bool {
		e.failures++
		down := !e.seen || e.failures >= t.cfg.FailAfter
		e.seen = true
		return e.up && !down
	}, "err", err, "source", "probe")
	t.cfg.Logger.Debug("endpoint probe", "endpoint", address, "ok", false, "err", err)
}

// set applies update to address's state under the lock; update returns
// whether the endpoint is up afterwards (probes and data-path failures).
func (t *Table) set(address string, update func(*endpoint) bool, attrs ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.changeLocked(address, func(e *endpoint) { e.up = update(e) }, attrs...)
}

// changeLocked applies mutate to address's state; t.mu is held. A change
// of whether it serves is published, logged with attrs and reported to
// OnChange.
func (t *Table) changeLocked(address string, mutate func(*endpoint), attrs ...any) {
	e := t.endpointLocked(address)
	was := e.serving()
	mutate(e)
	changed := e.serving() != was
	if changed || !t.known(address) {
		m := make(map[string]bool, len(t.eps))
		for a, s := range t.eps {
			m[a] = s.serving()
		}
		t.up.Store(&m)
	}
	if !changed {
		return
	}
	if e.serving() {
		t.cfg.Logger.Info("endpoint up", append([]any{"endpoint", address}, attrs...)...)
	} else {
		t.cfg.Logger.Warn("endpoint down", append([]any{"endpoint", address, "failed_probes", e.failures}, attrs...)...)
	}
	if t.cfg.OnChange != nil {
		t.cfg.OnChange(address, e.serving())
	}
}

func (t *Table) endpointLocked(address string) *endpoint {
	e := t.eps[address]
	if e == nil {
		e = &endpoint{up: true}
		t.eps[address] = e
		m := make(map[string]*counters, len(t.eps))
		for a, s := range t.eps {
			m[a] = &s.counters
		}
		t.counters.Store(&m)
	}
	return e
}

// Sync calls apply with Up while no change can happen, so that a consumer
// built apart from OnChange (a new lane) catches up without missing a
// change made meanwhile. apply must not call the Table's other methods.
func (t *Table) Sync(apply func(up func(address string) bool)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	apply(t.Up)
}

func (t *Table) known(address string) bool {
	_, ok := (*t.up.Load())[address]
	return ok
}
