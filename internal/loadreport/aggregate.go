package loadreport

import (
	"slices"
	"strings"
	"sync"
	"time"
)

// Key names one endpoint of one cluster.
type Key struct {
	Cluster  string // the xDS cluster: batchmesh|{model}|{version}
	Endpoint string // host:port
}

// Stats is what was seen of one endpoint over an interval.
type Stats struct {
	Key
	Batches int64 // calls that got an answer without error
	Errors  int64 // calls that failed
	Rows    int64 // rows of the successful calls
	// LatencySum is the sum of the latencies of every call.
	LatencySum time.Duration
	// UtilSum and UtilSamples sum the utilizations reported by the runtime
	// over the interval; RPSSum sums the rates it reported, with as many
	// samples.
	UtilSum     float64
	UtilSamples int64
	RPSSum      float64
	// Utilization and RPS are the last values the runtime reported, -1
	// if it reported none.
	Utilization, RPS float64
}

// Aggregator sums Stats per endpoint until Take. The zero value is not
// usable; call New. Safe for concurrent use; a nil *Aggregator records
// nothing.
type Aggregator struct {
	mu sync.Mutex
	m  map[Key]*Stats
}

// New returns an empty Aggregator.
func New() *Aggregator { return &Aggregator{m: map[Key]*Stats{}} }

// Record adds one upstream call: its rows, latency, whether it failed and
// the raw ORCA header of its answer ("" if none; an unparsable one is
// ignored).
func (a *Aggregator) Record(cluster, endpoint string, rows int, latency time.Duration, failed bool, orca string) {
	if a == nil {
		return
	}
	var rep *Report
	if orca != "" {
		if r, err := Parse(orca); err == nil {
			rep = &r
		}
	}
	a.RecordReport(cluster, endpoint, rows, latency, failed, rep)
}

// RecordReport is Record with the ORCA report already parsed (nil if
// none).
func (a *Aggregator) RecordReport(cluster, endpoint string, rows int, latency time.Duration, failed bool, rep *Report) {
	if a == nil {
		return
	}
	haveRep := rep != nil
	k := Key{cluster, endpoint}
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.m[k]
	if s == nil {
		s = &Stats{Key: k, Utilization: -1, RPS: -1}
		a.m[k] = s
	}
	if failed {
		s.Errors++
	} else {
		s.Batches++
		s.Rows += int64(rows)
	}
	s.LatencySum += latency
	if haveRep && rep.Utilization >= 0 {
		s.Utilization = rep.Utilization
		s.UtilSum += rep.Utilization
		s.UtilSamples++
		if rep.RPS >= 0 {
			s.RPS = rep.RPS
			s.RPSSum += rep.RPS
		}
	}
}

// Take returns the stats since the previous Take, sorted by cluster and
// endpoint, and starts a new interval.
func (a *Aggregator) Take() []Stats {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	m := a.m
	a.m = make(map[Key]*Stats, len(m))
	a.mu.Unlock()
	out := make([]Stats, 0, len(m))
	for _, s := range m {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(x, y Stats) int {
		if c := strings.Compare(x.Cluster, y.Cluster); c != 0 {
			return c
		}
		return strings.Compare(x.Endpoint, y.Endpoint)
	})
	return out
}
