package batch

import (
	"bytes"
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// linearCaller fakes a runtime whose batch of n rows takes fixed +
// perRow·n of (synctest's fake) time, one batch at a time, and echoes its
// input as output "out". It stands for the runtime that the proxy's
// end-to-end tests run for real; here only the timing matters.
type linearCaller struct {
	fixed, perRow time.Duration

	mu    sync.Mutex
	calls []sentBatch
}

func (c *linearCaller) Call(ctx context.Context, endpoint string, req *inference.Request) ([]inference.Tensor, error) {
	in := req.Inputs[0]
	rows := int(in.Shape[0])
	c.mu.Lock()
	c.calls = append(c.calls, sentBatch{endpoint: endpoint, at: time.Now(), rows: rows})
	c.mu.Unlock()
	time.Sleep(c.fixed + time.Duration(rows)*c.perRow)
	return []inference.Tensor{{Name: "out", DataType: in.DataType, Shape: slices.Clone(in.Shape), Data: bytes.Clone(in.Data)}}, nil
}

func (c *linearCaller) sent() []sentBatch {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.calls)
}

// closedLoop runs clients callers that each submit a one-row request, wait
// for its answer, wait think, and submit the next, until the runtime has
// seen batches batches. stop[i], if set, is the batch count after which
// caller i stops.
func closedLoop(t *testing.T, l *Lane, c *linearCaller, clients int, think time.Duration, batches int, stop map[int]int) {
	t.Helper()
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			for n := 0; ; n++ {
				if k := len(c.sent()); k >= batches || (stop[i] > 0 && k >= stop[i]) {
					return
				}
				if _, err := l.Submit(t.Context(), newRequest(i*10+n%10, 1)); err != nil {
					t.Errorf("client %d: %v", i, err)
					return
				}
				time.Sleep(think)
			}
		})
	}
	wg.Wait()
}

func cohortLane(t *testing.T, c Caller, policy Policy) *Lane {
	return newTestLane(t, Config{Policy: policy, MaxBatchSize: 64, MaxQueueDelay: 2 * time.Millisecond,
		Endpoints: []Endpoint{{Address: "a", Slots: 1}}}, c)
}

// TestCohortMergesClosedLoopCallers checks the two-cohort problem: 16
// callers that come back 1ms after their answer, before a runtime of 5ms +
// 0.2ms per row. The transit policy keeps a batch in transit and splits
// them into two cohorts of 8 for ever; the cohort policy brings them back
// into one batch of 16 every 5 + 16·0.2 + 1 = 9.2ms.
func TestCohortMergesClosedLoopCallers(t *testing.T) {
	tests := []struct {
		policy Policy
		rows   int           // of every batch once settled
		gap    time.Duration // between batch starts
	}{
		{policy: PolicyCohort, rows: 16, gap: 9200 * time.Microsecond},
		// a batch always in transit: the callers split into cohorts of 1
		// and 15 (1 + 15 + 1 a cycle), never a batch of all 16
		{policy: PolicyTransit},
	}
	for _, tt := range tests {
		t.Run(string(tt.policy), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c := &linearCaller{fixed: 5 * time.Millisecond, perRow: 200 * time.Microsecond}
				l := cohortLane(t, c, tt.policy)
				closedLoop(t, l, c, 16, time.Millisecond, 60, nil)
				sent := c.sent()
				tail := sent[len(sent)-20 : len(sent)-1] // the last one may be cut short by the stop
				if tt.rows == 0 {
					if slices.Max(sizes(tail)) >= 16 {
						t.Errorf("batch sizes %v: some batch has all 16 callers", sizes(tail))
					}
					return
				}
				ps := l.PolicyStatus()
				if cs := ps.Cohort; ps.Policy != PolicyCohort || cs == nil || cs.ReturningShare < 0.99 || cs.ReturnMs != 1 || !cs.Holding || cs.BatchesShort != 0 {
					t.Errorf("PolicyStatus = %+v %+v; want every caller back (share ≥ 0.99) after 1ms, holding, no short batch", ps, cs)
				}
				for i, b := range tail {
					if b.rows != tt.rows {
						t.Errorf("batch %d has %d rows, want %d (sizes %v)", len(sent)-20+i, b.rows, tt.rows, sizes(tail))
						break
					}
					if i > 0 && b.at.Sub(tail[i-1].at) != tt.gap {
						t.Errorf("batch %d started %v after the one before, want %v", len(sent)-20+i, b.at.Sub(tail[i-1].at), tt.gap)
						break
					}
				}
			})
		})
	}
}

// TestCohortLoneCallerNeverWaits checks that one closed-loop caller's
// request is sent at the instant it arrives: it is the whole echo of the
// answer before, so nothing else is expected.
func TestCohortLoneCallerNeverWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := &linearCaller{fixed: 5 * time.Millisecond, perRow: 200 * time.Microsecond}
		l := cohortLane(t, c, PolicyCohort)
		start := time.Now()
		closedLoop(t, l, c, 1, time.Millisecond, 20, nil)
		for i, b := range c.sent() {
			// each cycle: 5.2ms of runtime, then 1ms until the caller is back
			if want := start.Add(time.Duration(i) * 6200 * time.Microsecond); !b.at.Equal(want) || b.rows != 1 {
				t.Fatalf("batch %d: %d rows at +%v, want 1 row at +%v", i, b.rows, b.at.Sub(start), want.Sub(start))
			}
		}
	})
}

// TestCohortHoldEndsAtReturnTime checks the bound of a hold for callers
// that do not come back: when 8 of 16 callers stop, the other 8 are held
// until 3/2 of the learned return time (1ms) after the answer, and once
// the lane has learned that fewer come back, not at all.
func TestCohortHoldEndsAtReturnTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := &linearCaller{fixed: 5 * time.Millisecond, perRow: 200 * time.Microsecond}
		l := cohortLane(t, c, PolicyCohort)
		stop := map[int]int{}
		for i := 8; i < 16; i++ {
			stop[i] = 40
		}
		closedLoop(t, l, c, 16, time.Millisecond, 46, stop)
		sent := c.sent()
		// Batch 39 has the 16 (its callers see 40 batches started and the
		// last 8 stop); batch 40 the 8 that remain, held from their return
		// (1ms after the answer) to 1.5ms; from 41 on, no hold.
		answer39 := sent[39].at.Add(5*time.Millisecond + 16*200*time.Microsecond)
		if sent[39].rows != 16 || sent[40].rows != 8 || !sent[40].at.Equal(answer39.Add(1500*time.Microsecond)) {
			t.Fatalf("batches 39, 40: %d and %d rows, the second at +%v after the answer; want 16, 8 at +1.5ms",
				sent[39].rows, sent[40].rows, sent[40].at.Sub(answer39))
		}
		if cs := l.PolicyStatus().Cohort; cs == nil || cs.BatchesShort != 1 {
			t.Errorf("cohort status %+v: want BatchesShort 1 (batch 40, sent with 8 callers out)", cs)
		}
		for i := 41; i < len(sent)-1; i++ {
			answer := sent[i-1].at.Add(5*time.Millisecond + time.Duration(sent[i-1].rows)*200*time.Microsecond)
			if sent[i].rows != 8 || !sent[i].at.Equal(answer.Add(time.Millisecond)) {
				t.Fatalf("batch %d: %d rows +%v after the answer before, want 8 at +1ms", i, sent[i].rows, sent[i].at.Sub(answer))
			}
		}
	})
}

// TestCohortHoldRespectsDeadline checks that a hold ends early enough for
// its member with the shortest deadline to get its answer in time.
func TestCohortHoldRespectsDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := &linearCaller{fixed: 5 * time.Millisecond, perRow: 200 * time.Microsecond}
		l := cohortLane(t, c, PolicyCohort)
		stop := map[int]int{}
		for i := 1; i < 16; i++ {
			stop[i] = 20
		}
		// Client 0 stays: at its next return it is alone, with the other
		// 15 expected back.
		closedLoop(t, l, c, 16, time.Millisecond, 20, stop)
		synctest.Wait()
		sent := c.sent()
		last := sent[len(sent)-1]
		answer := last.at.Add(5*time.Millisecond + time.Duration(last.rows)*200*time.Microsecond)
		time.Sleep(time.Until(answer.Add(time.Millisecond)))
		// The batch of 16 rows is predicted to take 8.2ms (all batches so
		// far had 16 rows, or the fit is exact); a deadline 8.4ms away
		// leaves 0.2ms of hold out of the 0.5ms the echo allows.
		ctx, cancel := context.WithTimeout(t.Context(), 8400*time.Microsecond)
		defer cancel()
		at := time.Now()
		if _, err := l.Submit(ctx, newRequest(7, 1)); err != nil {
			t.Fatalf("Submit: %v", err)
		}
		b := c.sent()[len(sent)]
		if got := b.at.Sub(at); got != 200*time.Microsecond {
			t.Errorf("held for %v, want 200µs (deadline 8.4ms less the predicted 8.2ms)", got)
		}
	})
}

// TestCohortOpenLoopIsTransit checks that Poisson arrivals, which do not
// come back after their answer, get exactly the transit policy's batches.
func TestCohortOpenLoopIsTransit(t *testing.T) {
	run := func(policy Policy) []sentBatch {
		var out []sentBatch
		synctest.Test(t, func(t *testing.T) {
			c := &linearCaller{fixed: 5 * time.Millisecond, perRow: 200 * time.Microsecond}
			l := cohortLane(t, c, policy)
			rng := rand.New(rand.NewPCG(1, 2))
			start := time.Now()
			var wg sync.WaitGroup
			for i := range 3000 { // 1.5 rows per ms: 2 s
				time.Sleep(time.Duration(rng.ExpFloat64() / 1.5 * float64(time.Millisecond)))
				wg.Go(func() {
					if _, err := l.Submit(t.Context(), newRequest(i%9000, 1)); err != nil {
						t.Errorf("request %d: %v", i, err)
					}
				})
			}
			wg.Wait()
			for _, b := range c.sent() {
				b.at = time.Time{}.Add(b.at.Sub(start))
				out = append(out, b)
			}
		})
		return out
	}
	cohort, transit := run(PolicyCohort), run(PolicyTransit)
	if len(cohort) != len(transit) {
		t.Fatalf("cohort policy sent %d batches, transit %d", len(cohort), len(transit))
	}
	for i := range cohort {
		if cohort[i].at != transit[i].at || cohort[i].rows != transit[i].rows {
			t.Fatalf("batch %d: cohort %d rows at %v, transit %d rows at %v", i, cohort[i].rows, cohort[i].at, transit[i].rows, transit[i].at)
		}
	}
}

func TestParsePolicy(t *testing.T) {
	for in, want := range map[string]Policy{"": PolicyTransit, "transit": PolicyTransit, "cohort": PolicyCohort} {
		if got, err := ParsePolicy(in); err != nil || got != want {
			t.Errorf("ParsePolicy(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParsePolicy("fifo"); err == nil || inference.KindOf(err) != inference.KindInvalid {
		t.Errorf("ParsePolicy(fifo) = %v, want an invalid-input error", err)
	}
}

func sizes(bs []sentBatch) []int {
	var s []int
	for _, b := range bs {
		s = append(s, b.rows)
	}
	return s
}

// TestCostFit checks the least-squares fit of batch latency that Status
// reports: exact on a linear runtime once two sizes were seen, and all
// fixed with one size only.
func TestCostFit(t *testing.T) {
	var m costModel
	if a, b := m.fit(); a != 0 || b != 0 {
		t.Errorf("empty fit = %v + %v/row, want 0", a, b)
	}
	m.observe(10, 7*time.Millisecond)
	m.observe(10, 7*time.Millisecond)
	if a, b := m.fit(); a != 7*time.Millisecond || b != 0 {
		t.Errorf("one size: %v + %v/row, want 7ms all fixed", a, b)
	}
	for _, n := range []int{1, 30, 64, 5} {
		m.observe(n, 5*time.Millisecond+time.Duration(n)*200*time.Microsecond)
	}
	a, b := m.fit()
	if a.Round(time.Microsecond) != 5*time.Millisecond || b.Round(time.Microsecond) != 200*time.Microsecond {
		t.Errorf("linear runtime: %v + %v/row, want 5ms + 200µs/row", a, b)
	}
}
