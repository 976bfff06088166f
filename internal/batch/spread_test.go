package batch

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// queuedCaller is linearCaller behind a one-batch-at-a-time runtime that
// queues what it is sent, with trip/2 of (fake) HTTP path each way: a
// batch sent in transit waits at the runtime, as it does at the simulated
// runtime of examples/bench/batching.sh.
type queuedCaller struct {
	linearCaller
	trip time.Duration
	run  chan struct{} // a semaphore of 1: the runtime's one slot
}

func (c *queuedCaller) Call(ctx context.Context, endpoint string, req *inference.Request) ([]inference.Tensor, error) {
	time.Sleep(c.trip / 2)
	c.run <- struct{}{}
	out, err := c.linearCaller.Call(ctx, endpoint, req)
	<-c.run
	time.Sleep(c.trip / 2)
	return out, err
}

// spreadRowsPerSec runs 64 closed-loop callers for 3 s of fake time
// against 1ms + 5ms + 0.2ms per row; after each answer the callers come
// back one at a time, step apart (as two shared cores serve them in
// turn), and it returns the rows per second served.
func spreadRowsPerSec(t *testing.T, policy Policy, step time.Duration) float64 {
	var rate float64
	synctest.Test(t, func(t *testing.T) {
		c := &queuedCaller{linearCaller: linearCaller{fixed: 5 * time.Millisecond, perRow: 200 * time.Microsecond},
			trip: time.Millisecond, run: make(chan struct{}, 1)}
		l := cohortLane(t, c, policy)
		start := time.Now()
		var mu sync.Mutex // guards done and next
		done, next := 0, start
		var wg sync.WaitGroup
		for i := range 64 {
			wg.Go(func() {
				for n := 0; time.Since(start) < 3*time.Second; n++ {
					if _, err := l.Submit(t.Context(), newRequest(i*10+n%10, 1)); err != nil {
						t.Errorf("client %d: %v", i, err)
						return
					}
					mu.Lock()
					done++
					next = maxTime(next, time.Now()).Add(step)
					back := next
					mu.Unlock()
					time.Sleep(time.Until(back))
				}
			})
		}
		wg.Wait()
		rate = float64(done) / time.Since(start).Seconds()
	})
	return rate
}

// TestCohortSpreadReturns checks 64 closed-loop callers whose returns
// spread over time: while the last is back within max_queue_delay (2ms)
// of the answer, cohort serves them in one batch and beats transit's two
// cohorts by more than 15%; when they spread over longer, the hold (never
// longer than max_queue_delay) catches only part of them, and cohort does
// no worse than transit (within 1%: the rows cut off at 3 s).
func TestCohortSpreadReturns(t *testing.T) {
	for _, tt := range []struct {
		step time.Duration
		min  float64 // × transit's rows/s
	}{
		{step: 20 * time.Microsecond, min: 1.15}, // the 64 back within 1.3ms
		{step: 50 * time.Microsecond, min: 1},    // within 3.2ms
		{step: 80 * time.Microsecond, min: 0.99}, // within 5.1ms: decides as transit
	} {
		transit := spreadRowsPerSec(t, PolicyTransit, tt.step)
		cohort := spreadRowsPerSec(t, PolicyCohort, tt.step)
		t.Logf("returns %v apart: cohort %.0f rows/s, transit %.0f", tt.step, cohort, transit)
		if cohort < tt.min*transit {
			t.Errorf("returns %v apart: cohort %.0f rows/s, want at least %.2f× transit's %.0f", tt.step, cohort, tt.min, transit)
		}
	}
}
