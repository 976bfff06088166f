package batch

import (
	"context"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// queueBehindBlocker warms l up, occupies its only slot with a one-row
// request and submits reqs 100µs apart, so that they ride together in the
// batch in transit. It returns their outcomes, the blocker's, and the
// number of batches sent before reqs.
func queueBehindBlocker(t *testing.T, l *Lane, f *fakeCaller, reqs []*Request) (outs []<-chan outcome, blocker <-chan outcome, before int) {
	t.Helper()
	warm(t, l)
	blocker = submit(t.Context(), l, newRequest(8000, 1))
	synctest.Wait()
	before = len(f.sent())
	for _, r := range reqs {
		outs = append(outs, submit(t.Context(), l, r))
		synctest.Wait()
		time.Sleep(100 * time.Microsecond)
	}
	return outs, blocker, before
}

// TestBisection checks that when the runtime refuses a batch, the lane
// bisects it so that only the requests with bad rows fail, with the
// runtime's message, and the others get their own rows back.
func TestBisection(t *testing.T) {
	type bad struct{ req, row int }
	tests := []struct {
		name   string
		n      int // requests
		rows   int // rows per request
		poison []bad
		want   []int // rows of each batch sent
	}{
		{name: "none", n: 8, rows: 1, want: []int{8}},
		{name: "one of eight", n: 8, rows: 1, poison: []bad{{5, 0}}, want: []int{8, 4, 4, 2, 1, 1, 2}},
		{name: "first and last", n: 8, rows: 1, poison: []bad{{0, 0}, {7, 0}}, want: []int{8, 4, 2, 1, 1, 2, 4, 2, 2, 1, 1}},
		{name: "alone", n: 1, rows: 3, poison: []bad{{0, 2}}, want: []int{3}},
		{name: "multi-row requests", n: 4, rows: 3, poison: []bad{{2, 1}}, want: []int{12, 6, 6, 3, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeCaller(map[string]time.Duration{"a": 10 * time.Millisecond})
				l := newTestLane(t, Config{MaxQueueDelay: 2 * time.Millisecond, Endpoints: []Endpoint{{Address: "a", Slots: 1}}}, f)
				var reqs []*Request
				poisoned := map[int]bool{}
				for i := range tt.n {
					keys := keysOf(i, tt.rows)
					for _, p := range tt.poison {
						if p.req == i {
							keys[p.row] = poisonKey
							poisoned[i] = true
						}
					}
					reqs = append(reqs, fp32Request(keys))
				}
				outs, blocker, before := queueBehindBlocker(t, l, f, reqs)
				for i, ch := range outs {
					o := <-ch
					if !poisoned[i] {
						checkKind(t, "request "+itoa(i), o.err, noError)
						checkEcho(t, reqs[i], o.res)
						continue
					}
					checkKind(t, "poisoned request "+itoa(i), o.err, inference.KindInvalid)
					if o.err != nil && !strings.Contains(o.err.Error(), poisonMsg) {
						t.Errorf("poisoned request %d: %q does not carry the runtime's message %q", i, o.err, poisonMsg)
					}
				}
				must(t, "blocker", blocker)
				var sizes []int
				for _, b := range f.sentAfter(before) {
					sizes = append(sizes, b.rows)
				}
				if !slices.Equal(sizes, tt.want) {
					t.Errorf("batch sizes %v, want %v", sizes, tt.want)
				}
			})
		})
	}
}

// TestRetryElsewhere checks that a batch whose endpoint cannot be reached
// is retried once on another, that the failed endpoint leaves rotation, and
// that with no healthy endpoint Submit fails at once.
func TestRetryElsewhere(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeCaller(map[string]time.Duration{"a": 5 * time.Millisecond, "b": 5 * time.Millisecond}, "a")
		l := newTestLane(t, Config{Endpoints: []Endpoint{{Address: "a"}, {Address: "b"}}}, f)
		hitA := false
		for i := 0; i < 50 && !hitA; i++ {
			r := newRequest(i, 2)
			start := time.Now()
			res, err := l.Submit(t.Context(), r)
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			checkEcho(t, r, res)
			if res.Endpoint != "b" {
				t.Errorf("request %d answered by %q, want \"b\"", i, res.Endpoint)
			}
			sent := f.sent()
			hitA = slices.ContainsFunc(sent, func(b sentBatch) bool { return b.endpoint == "a" })
			if d := time.Since(start); hitA && d != 5*time.Millisecond {
				t.Errorf("retried request took %v, want b's 5ms (a refuses at once)", d)
			}
		}
		if !hitA {
			t.Fatal("no batch went to endpoint a in 50 requests")
		}
		eps, _ := l.Status()
		if a := eps[0]; a.Healthy || a.Batches != 1 || a.Failures != 1 {
			t.Errorf("a: %+v; want unhealthy after 1 batch, 1 failure", a)
		}
		if b := eps[1]; !b.Healthy || b.Failures != 0 || b.LatencyMs != 5 {
			t.Errorf("b: %+v; want healthy, no failure, 5ms latency", b)
		}

		// a is out of rotation: nothing more goes there.
		n := len(f.sent())
		for i := range 10 {
			if _, err := l.Submit(t.Context(), newRequest(100+i, 1)); err != nil {
				t.Fatalf("Submit: %v", err)
			}
		}
		for _, b := range f.sentAfter(n) {
			if b.endpoint != "b" {
				t.Errorf("batch sent to unhealthy %s", b.endpoint)
			}
		}

		l.SetHealthy("b", false)
		if l.Healthy() {
			t.Error("Healthy() with every endpoint unhealthy")
		}
		n = len(f.sent())
		start := time.Now()
		_, err := l.Submit(t.Context(), newRequest(200, 1))
		checkKind(t, "no healthy endpoint", err, inference.KindUnavailable)
		if time.Since(start) != 0 || len(f.sent()) != n {
			t.Errorf("refusal took %v and sent %d batches, want at once and none", time.Since(start), len(f.sent())-n)
		}
	})
}

// TestRetryOnlyOnce checks that when every endpoint is down the batch fails
// with 503 after one retry, and both endpoints leave rotation.
func TestRetryOnlyOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeCaller(nil, "a", "b", "c")
		l := newTestLane(t, Config{Endpoints: []Endpoint{{Address: "a"}, {Address: "b"}, {Address: "c"}}}, f)
		_, err := l.Submit(t.Context(), newRequest(1, 1))
		checkKind(t, "all down", err, inference.KindUnavailable)
		if n := len(f.sent()); n != 2 {
			t.Errorf("%d calls, want 2 (one retry)", n)
		}
		eps, _ := l.Status()
		unhealthy := 0
		for _, e := range eps {
			if !e.Healthy {
				unhealthy++
			}
		}
		if unhealthy != 2 {
			t.Errorf("%d endpoints unhealthy, want the 2 tried: %+v", unhealthy, eps)
		}
	})
}

// TestOutputRowMismatch checks that an answer with the wrong number of rows
// fails every request of the batch with 502: rows cannot be matched to
// their requests.
func TestOutputRowMismatch(t *testing.T) {
	tests := []struct {
		name string
		bad  float32
	}{
		{name: "one row short", bad: shortKey},
		{name: "one row too many", bad: longKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeCaller(map[string]time.Duration{"a": 10 * time.Millisecond})
				l := newTestLane(t, Config{MaxQueueDelay: 2 * time.Millisecond, Endpoints: []Endpoint{{Address: "a", Slots: 1}}}, f)
				reqs := []*Request{newRequest(1, 2), fp32Request([]float32{key(2, 0), tt.bad}), newRequest(3, 1)}
				outs, blocker, before := queueBehindBlocker(t, l, f, reqs)
				for i, ch := range outs {
					checkKind(t, "request "+itoa(i), (<-ch).err, inference.KindUpstream)
				}
				must(t, "blocker", blocker)
				if sent := f.sentAfter(before); len(sent) != 1 || sent[0].rows != 5 {
					t.Errorf("batches sent: %v; want one of 5 rows, not retried", sent)
				}
			})
		})
	}
}

// TestShortDeadlineDoesNotFailBatchMates checks that a request with a short
// deadline fails alone when its batch outlives it: the batch runs under its
// own deadline, not the tightest of its requests'.
func TestShortDeadlineDoesNotFailBatchMates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const latency = 10 * time.Millisecond
		f := newSlowCaller(map[string]time.Duration{"a": latency})
		l := newTestLane(t, Config{MaxQueueDelay: 2 * time.Millisecond, Endpoints: []Endpoint{{Address: "a", Slots: 1}}}, f)
		warm(t, l)
		f.set("a", 20*time.Millisecond) // the runtime slows down: 30ms a batch from now on
		t1 := time.Now()
		blocker := submit(t.Context(), l, newRequest(8000, 1))
		synctest.Wait()
		// Admitted (the blocker and its batch: 2 × 10ms fit in 25ms), then
		// sent in transit at +8ms and answered at +38ms.
		short := fp32Request(keysOf(1, 1))
		shortCtx, cancel := context.WithDeadline(t.Context(), t1.Add(25*time.Millisecond))
		defer cancel()
		long := newRequest(2, 1)
		so := submit(shortCtx, l, short)
		lo := submit(t.Context(), l, long)
		o := <-so
		checkKind(t, "short deadline", o.err, inference.KindDeadline)
		if !o.at.Equal(t1.Add(25 * time.Millisecond)) {
			t.Errorf("short request failed at +%v, want at its deadline +25ms", o.at.Sub(t1))
		}
		o = <-lo
		checkKind(t, "batch mate", o.err, noError)
		if o.err == nil {
			checkEcho(t, long, o.res)
			if want := t1.Add(38 * time.Millisecond); !o.at.Equal(want) {
				t.Errorf("batch mate answered at +%v, want +38ms", o.at.Sub(t1))
			}
		}
		must(t, "blocker", blocker)
	})
}
