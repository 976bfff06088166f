package batch

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// TestCloseDrains checks that Close refuses new requests at once and
// returns when, and only when, every queued and in-flight request has its
// answer.
func TestCloseDrains(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeCaller(map[string]time.Duration{"a": 10 * time.Millisecond})
		l := newTestLane(t, Config{MaxBatchSize: 4, MaxQueueDelay: 2 * time.Millisecond, Endpoints: []Endpoint{{Address: "a", Slots: 1}}}, f)
		warm(t, l)
		t1 := time.Now()
		// One running, one full in transit, 7 rows queued.
		var reqs []*Request
		var outs []<-chan outcome
		for i, rows := range []int{4, 4, 4, 2, 1} {
			r := newRequest(i, rows)
			reqs = append(reqs, r)
			outs = append(outs, submit(t.Context(), l, r))
			synctest.Wait()
		}
		closed := make(chan time.Time, 1)
		go func() {
			if err := l.Close(context.Background()); err != nil {
				t.Errorf("Close: %v", err)
			}
			closed <- time.Now()
		}()
		synctest.Wait()
		start := time.Now()
		_, err := l.Submit(t.Context(), newRequest(50, 1))
		checkKind(t, "Submit while draining", err, inference.KindUnavailable)
		if time.Since(start) != 0 {
			t.Errorf("refusal while draining took %v", time.Since(start))
		}

		closeAt := <-closed
		synctest.Wait() // every Submit that has its answer has returned
		var last time.Time
		for i, ch := range outs {
			select {
			case o := <-ch:
				checkKind(t, "request "+itoa(i), o.err, noError)
				checkEcho(t, reqs[i], o.res)
				if o.at.After(closeAt) {
					t.Errorf("request %d answered at +%v, after Close returned at +%v", i, o.at.Sub(t1), closeAt.Sub(t1))
				}
				if o.at.After(last) {
					last = o.at
				}
			default:
				t.Errorf("request %d had no answer when Close returned", i)
			}
		}
		if !closeAt.Equal(last) {
			t.Errorf("Close returned at +%v, want when the last answer came, +%v", closeAt.Sub(t1), last.Sub(t1))
		}
		eps, queued := l.Status()
		if queued != 0 || eps[0].InFlight != 0 || eps[0].InFlightRows != 0 {
			t.Errorf("after Close: %d rows queued, %+v", queued, eps[0])
		}
		_, err = l.Submit(t.Context(), newRequest(51, 1))
		checkKind(t, "Submit after Close", err, inference.KindUnavailable)
		if err := l.Close(context.Background()); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})
}

// TestCloseGivesUp checks that Close returns ctx's error when the drain
// outlasts it, and that the requests still get their answers.
func TestCloseGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeCaller(map[string]time.Duration{"a": 500 * time.Millisecond})
		l := newTestLane(t, Config{}, f)
		if err := l.Close(context.Background()); err != nil {
			t.Fatalf("Close of an idle lane: %v", err)
		}
		l = newTestLane(t, Config{}, f)
		r := newRequest(1, 1)
		out := submit(t.Context(), l, r)
		synctest.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := l.Close(ctx)
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != 100*time.Millisecond {
			t.Errorf("Close = %v after %v, want context.DeadlineExceeded after 100ms", err, time.Since(start))
		}
		checkEcho(t, r, must(t, "request", out).res)
		if err := l.Close(context.Background()); err != nil {
			t.Errorf("Close after the drain: %v", err)
		}
	})
}

// TestExactlyOnceUnderLoad submits 200 requests at once-ish, of random
// sizes and priorities, some with short deadlines, some cancelled, one
// poisoned, and checks that each gets one answer of an allowed kind and
// every answer holds its own rows.
func TestExactlyOnceUnderLoad(t *testing.T) {
	const (
		n        = 200
		poisonID = 77
	)
	type class int
	const (
		plain     class = iota // must succeed
		short                  // may fail with 504 or 429
		cancelled              // may fail with 504
		poisoned               // must fail with 400
	)
	for _, seed := range []uint64{1, 2, 3} {
		t.Run("seed="+itoa(int(seed)), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeCaller(map[string]time.Duration{"a": 5 * time.Millisecond, "b": 7 * time.Millisecond})
				l := newTestLane(t, Config{
					MaxBatchSize: 16, MaxQueueDelay: time.Millisecond,
					Endpoints: []Endpoint{{Address: "a", Slots: 2}, {Address: "b", Weight: 2}},
				}, f)
				rnd := rand.New(rand.NewPCG(seed, 99))
				var returned [n]atomic.Int32
				var counts [4][2]atomic.Int32 // [class][failed]
				var wg sync.WaitGroup
				for id := range n {
					rows := 1 + rnd.IntN(10)
					keys := keysOf(id, rows)
					timeout, cls := 10*time.Second, plain
					switch {
					case id == poisonID:
						keys[rnd.IntN(rows)] = poisonKey
						cls = poisoned
					case rnd.IntN(5) == 0:
						timeout, cls = time.Duration(1+rnd.IntN(15))*time.Millisecond, short
					case rnd.IntN(8) == 0:
						cls = cancelled
					}
					prio := Priority(rnd.IntN(int(numPriorities)))
					arrive := time.Duration(rnd.IntN(50_000)) * time.Microsecond
					cancelAfter := time.Duration(rnd.IntN(20_000))*time.Microsecond - 5*time.Millisecond
					wg.Go(func() {
						time.Sleep(arrive)
						r := fp32Request(keys)
						r.Priority = prio
						ctx, cancelTimeout := context.WithTimeout(t.Context(), timeout)
						defer cancelTimeout()
						if cls == cancelled {
							var cancel context.CancelFunc
							ctx, cancel = context.WithCancel(ctx)
							defer cancel()
							if cancelAfter <= 0 {
								cancel()
							} else {
								time.AfterFunc(cancelAfter, cancel)
							}
						}
						res, err := l.Submit(ctx, r)
						returned[id].Add(1)
						failed := 0
						if err != nil {
							failed = 1
						}
						counts[cls][failed].Add(1)
						what := "request " + itoa(id)
						switch {
						case err == nil && cls != poisoned:
							checkEcho(t, r, res)
						case cls == plain:
							checkKind(t, what, err, noError)
						case cls == poisoned:
							checkKind(t, what+" (poisoned)", err, inference.KindInvalid)
						case cls == short && inference.KindOf(err) == inference.KindOverloaded:
						default:
							checkKind(t, what, err, inference.KindDeadline)
						}
					})
				}
				wg.Wait()
				for id := range returned {
					if got := returned[id].Load(); got != 1 {
						t.Errorf("request %d: Submit returned %d times", id, got)
					}
				}
				for _, b := range f.sent() {
					if b.rows > 16 {
						t.Errorf("batch of %d rows, over MaxBatchSize 16", b.rows)
					}
				}
				synctest.Wait()
				eps, queued := l.Status()
				if queued != 0 {
					t.Errorf("%d rows still queued", queued)
				}
				for _, e := range eps {
					if e.InFlight != 0 || e.InFlightRows != 0 {
						t.Errorf("endpoint %s: %d batches, %d rows still in flight", e.Address, e.InFlight, e.InFlightRows)
					}
				}
				if err := l.Close(context.Background()); err != nil {
					t.Errorf("Close: %v", err)
				}
				t.Logf("ok/failed: plain %d/%d, short %d/%d, cancelled %d/%d; %d batches",
					counts[plain][0].Load(), counts[plain][1].Load(), counts[short][0].Load(), counts[short][1].Load(),
					counts[cancelled][0].Load(), counts[cancelled][1].Load(), len(f.sent()))
			})
		})
	}
}
