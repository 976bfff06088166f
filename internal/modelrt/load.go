package modelrt

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// loadWindow is how often the ORCA utilization and rate are recomputed.
const loadWindow = time.Second

// loadTracker measures what the runtime reports in its ORCA
// endpoint-load-metrics header: the share of slot-time spent computing and
// the rows per second, over the last complete window. Safe for concurrent
// use.
type loadTracker struct {
	waiting  atomic.Int64 // batches waiting for a slot
	admitted atomic.Int64 // batches waiting or running

	mu    sync.Mutex
	start time.Time // start of the current window
	busy  time.Duration
	rows  int64
	util  float64 // of the last complete window
	rps   float64
}

// finish records a batch that took d to compute n rows.
func (l *loadTracker) finish(d time.Duration, n int) {
	l.mu.Lock()
	l.busy += d
	l.rows += int64(n)
	l.mu.Unlock()
}

// orca returns the header value in ORCA's TEXT form. slots is the slot
// count, inUse the slots busy now and queued the batches waiting beyond
// the free slots.
func (l *loadTracker) orca(slots, inUse int, queued int64) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if elapsed := now.Sub(l.start); elapsed >= loadWindow {
		l.util = l.busy.Seconds() / (elapsed.Seconds() * float64(slots))
		l.rps = float64(l.rows) / elapsed.Seconds()
		l.start, l.busy, l.rows = now, 0, 0
	}
	util := l.util
	if util == 0 && inUse > 0 { // first window: report the instantaneous share
		util = float64(inUse) / float64(slots)
	}
	b := make([]byte, 0, 96)
	b = append(b, "TEXT application_utilization="...)
	b = strconv.AppendFloat(b, util, 'f', 4, 64)
	b = append(b, ", rps_fractional="...)
	b = strconv.AppendFloat(b, l.rps, 'f', 2, 64)
	b = append(b, ", named_metrics.queue_depth="...)
	b = strconv.AppendInt(b, queued, 10)
	return string(b)
}
