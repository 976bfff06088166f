package batch

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// slowCaller is a fakeCaller whose endpoints can be made slow or hung
// (no answer until ctx ends, as a SIGSTOPped runtime) mid-test. It records
// how each call ended.
type slowCaller struct {
	*fakeCaller
	mu    sync.Mutex
	delay map[string]time.Duration // extra latency; < 0 hangs
	ended []callEnd
}

type callEnd struct {
	endpoint string
	at       time.Time
	err      error
}

func newSlowCaller(latency map[string]time.Duration) *slowCaller {
	return &slowCaller{fakeCaller: newFakeCaller(latency), delay: map[string]time.Duration{}}
}

func (s *slowCaller) set(endpoint string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay[endpoint] = d
}

func (s *slowCaller) Call(ctx context.Context, endpoint string, req *inference.Request) ([]inference.Tensor, error) {
	s.mu.Lock()
	d := s.delay[endpoint]
	s.mu.Unlock()
	outs, err := s.call(ctx, endpoint, req, d)
	s.mu.Lock()
	s.ended = append(s.ended, callEnd{endpoint, time.Now(), err})
	s.mu.Unlock()
	return outs, err
}

func (s *slowCaller) call(ctx context.Context, endpoint string, req *inference.Request, d time.Duration) ([]inference.Tensor, error) {
	if d != 0 {
		var wait <-chan time.Time
		if d > 0 {
			t := time.NewTimer(d)
			defer t.Stop()
			wait = t.C
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, inference.Errorf(inference.KindDeadline, "slow: %s: %w", endpoint, context.Cause(ctx))
		}
	}
	return s.fakeCaller.Call(ctx, endpoint, req)
}

func (s *slowCaller) ends() []callEnd {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ended)
}

// preferPicker picks the first eligible endpoint in its order.
type preferPicker []int

func (p preferPicker) Pick(loads []inference.EndpointLoad) int {
	for _, i := range p {
		if loads[i].Eligible {
			return i
		}
	}
	return -1
}

// callLog is a HealthReporter that records what the lane reports.
type callLog struct {
	mu     sync.Mutex
	failed []string // ReportCall(address, true)
	down   []string // ReportFailure
}

func (c *callLog) ReportFailure(address string, _ error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.down = append(c.down, address)
}

func (c *callLog) ReportCall(address string, failed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if failed {
		c.failed = append(c.failed, address)
	}
}

func (c *callLog) failures() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.failed)
}

// counters returns the int64 counters and gauges named name, by the value
// of label.
func counters(t *testing.T, r *sdkmetric.ManualReader, name, label string) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			var points []metricdata.DataPoint[int64]
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				points = d.DataPoints
			case metricdata.Gauge[int64]:
				points = d.DataPoints
			}
			for _, p := range points {
				v, _ := p.Attributes.Value(attribute.Key(label))
				got[v.AsString()] += p.Value
			}
		}
	}
	return got
}

func TestLatencyTail(t *testing.T) {
	var tail latencyTail
	if tail.p99() != 0 {
		t.Fatalf("p99 before any sample = %v, want 0", tail.p99())
	}
	tail.observe(8 * time.Millisecond) // mean 8, dev 4
	if got, want := tail.p99(), 24*time.Millisecond; got != want {
		t.Errorf("p99 after one 8ms sample = %v, want %v", got, want)
	}
	tail.observe(16 * time.Millisecond) // mean 9, dev 3+1 = 5
	if got, want := tail.p99(), 29*time.Millisecond; got != want {
		t.Errorf("p99 after 8ms, 16ms = %v, want %v", got, want)
	}
}

// TestHedgeDelay: the multiple of the p99 estimate, bounded below by
// MinDelay; no hedge before the first sample or with hedging off.
func TestHedgeDelay(t *testing.T) {
	tests := []struct {
		name   string
		hedge  Hedge
		sample time.Duration
		want   time.Duration
	}{
		{name: "defaults, slow endpoint", sample: 10 * time.Millisecond, want: 90 * time.Millisecond},
		{name: "defaults, fast endpoint: the floor", sample: time.Millisecond, want: 50 * time.Millisecond},
		{name: "multiple 2, floor 1ms", hedge: Hedge{Multiple: 2, MinDelay: time.Millisecond}, sample: time.Millisecond, want: 6 * time.Millisecond},
		{name: "no sample yet", want: 0},
		{name: "off", hedge: Hedge{Multiple: -1}, sample: 10 * time.Millisecond, want: 0},
	}
	for _, tt := range tests {
		l := newTestLane(t, Config{Hedge: tt.hedge}, newFakeCaller(nil))
		if tt.sample > 0 {
			l.eps[0].tail.observe(tt.sample)
		}
		if got := l.hedgeDelayLocked(l.eps[0]); got != tt.want {
			t.Errorf("%s: hedge delay = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// hedgeLane builds a lane over endpoints a and b (10ms each, one slot)
// whose picker prefers b, warms both up (p99 estimate 30ms, hedge delay
// 90ms) and returns it with its caller, health log and metric reader.
func hedgeLane(t *testing.T, cfg Config) (*Lane, *slowCaller, *callLog, *sdkmetric.ManualReader) {
	t.Helper()
	f := newSlowCaller(map[string]time.Duration{"a": 10 * time.Millisecond, "b": 10 * time.Millisecond})
	log := &callLog{}
	reader := sdkmetric.NewManualReader()
	cfg.Meter = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("t")
	cfg.Endpoints = []Endpoint{{Address: "a"}, {Address: "b"}}
	cfg.Picker, cfg.Health = preferPicker{1, 0}, log
	l := newTestLane(t, cfg, f)
	// b answers the first batch; a, the one that finds b busy.
	first := submit(t.Context(), l, newRequest(warmID, 1))
	synctest.Wait()
	second := submit(t.Context(), l, &Request{Inputs: newRequest(warmID+1, 1).Inputs, Rows: 1, Group: "other"})
	must(t, "warm b", first)
	must(t, "warm a", second)
	for _, e := range l.eps {
		if d := l.hedgeDelayLocked(e); d != 90*time.Millisecond {
			t.Fatalf("after warm-up, %s's hedge delay is %v, want 90ms", e.Address, d)
		}
	}
	return l, f, log, reader
}

// TestHedgeHungEndpoint: a batch on a hung endpoint is sent to the other
// one after exactly its hedge delay; the hedge's answer is the request's,
// the hung call is cancelled at once (its slot freed) and counts as one
// failed call for outlier detection.
func TestHedgeHungEndpoint(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l, f, log, reader := hedgeLane(t, Config{})
		f.set("b", -1)
		t0 := time.Now()
		o := must(t, "hedged request", submit(t.Context(), l, newRequest(1, 1)))
		if got, want := o.at.Sub(t0), 100*time.Millisecond; got != want {
			t.Errorf("answered after %v, want %v (90ms hedge delay + a's 10ms)", got, want)
		}
		if o.res.Endpoint != "a" {
			t.Errorf("answered by %q, want the hedge's endpoint a", o.res.Endpoint)
		}
		synctest.Wait()
		ends := f.ends()
		last := ends[len(ends)-1]
		if last.endpoint != "b" || last.at.Sub(t0) != 100*time.Millisecond {
			t.Errorf("the hung call ended %+v, want on b at 100ms (cancelled when the hedge won)", last)
		}
		if got := log.failures(); !slices.Equal(got, []string{"b"}) {
			t.Errorf("failed calls reported: %v, want [b] (the late attempt, once)", got)
		}
		eps, _ := l.Status()
		for _, e := range eps {
			if e.InFlight != 0 || e.InFlightRows != 0 {
				t.Errorf("%s still has %d batches (%d rows) in flight", e.Address, e.InFlight, e.InFlightRows)
			}
		}
		if got := counters(t, reader, "batchmesh_hedges", "outcome"); got[hedgeWon] != 1 || got[hedgeLost] != 0 {
			t.Errorf("batchmesh_hedges = %v, want won 1", got)
		}
	})
}

// TestHedgeLoses: a primary that answers after the hedge was sent but
// before the hedge's answer wins; the hedge is cancelled and nothing is
// reported as failed.
func TestHedgeLoses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l, f, log, reader := hedgeLane(t, Config{})
		f.set("b", 85*time.Millisecond) // answers at 95ms
		f.set("a", 40*time.Millisecond) // a hedge at 90ms would answer at 140ms
		t0 := time.Now()
		o := must(t, "request", submit(t.Context(), l, newRequest(1, 1)))
		if got := o.at.Sub(t0); got != 95*time.Millisecond || o.res.Endpoint != "b" {
			t.Errorf("answered after %v by %q, want 95ms by b", got, o.res.Endpoint)
		}
		synctest.Wait()
		if n := len(f.ends()); n != 4 {
			t.Errorf("%d calls, want 4 (2 warm-up, the request, its hedge)", n)
		}
		if got := log.failures(); len(got) != 0 {
			t.Errorf("failed calls reported: %v, want none", got)
		}
		if got := counters(t, reader, "batchmesh_hedges", "outcome"); got[hedgeLost] != 1 {
			t.Errorf("batchmesh_hedges = %v, want lost 1", got)
		}
	})
}

// TestHedgeWithinDeadline: a batch whose deadline leaves less than twice
// its hedge delay is hedged at half the time left, but never sooner than
// MinDelay; one whose deadline comes before MinDelay is never hedged and
// fails alone at its deadline.
func TestHedgeWithinDeadline(t *testing.T) {
	tests := []struct {
		name     string
		deadline time.Duration
		want     inference.Kind
		wantAt   time.Duration
		calls    int // 2 warm-up, the request, its hedge
	}{
		{name: "half the time left", deadline: 120 * time.Millisecond, want: noError, wantAt: 70 * time.Millisecond, calls: 4},
		{name: "floor", deadline: 80 * time.Millisecond, want: noError, wantAt: 60 * time.Millisecond, calls: 4},
		{name: "before the floor", deadline: 45 * time.Millisecond, want: inference.KindDeadline, wantAt: 45 * time.Millisecond, calls: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l, f, _, _ := hedgeLane(t, Config{})
				f.set("b", -1)
				ctx, cancel := context.WithTimeout(t.Context(), tt.deadline)
				defer cancel()
				t0 := time.Now()
				o := <-submit(ctx, l, newRequest(1, 1))
				checkKind(t, "request", o.err, tt.want)
				if got := o.at.Sub(t0); got != tt.wantAt {
					t.Errorf("ended after %v, want %v", got, tt.wantAt)
				}
				synctest.Wait()
				if n := len(f.ends()); n != tt.calls {
					t.Errorf("%d calls, want %d", n, tt.calls)
				}
			})
		})
	}
}

// TestRetryBudget: with a budget of one hedge at a time, two batches hung
// at once get one hedge between them; the other waits out its deadline and
// the refused hedge is counted.
func TestRetryBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l, f, _, reader := hedgeLane(t, Config{RetryBudget: RetryBudget{Percent: 1, MinConcurrency: 1}})
		synctest.Wait() // the warm-up's batches have ended
		l.mu.Lock()
		l.eps = append(l.eps, &endpoint{Endpoint: Endpoint{Address: "c", Weight: 1, Slots: 1}, healthy: true, limit: 1})
		l.loads = make([]inference.EndpointLoad, 3)
		l.cfg.Picker = leastLoaded{} // the batches go to a and b, both hedges would go to c
		l.mu.Unlock()
		f.latency["c"] = 10 * time.Millisecond
		f.set("a", -1)
		f.set("b", -1)
		one := submit(t.Context(), l, newRequest(1, 1))
		synctest.Wait()
		two := submit(t.Context(), l, &Request{Inputs: newRequest(2, 1).Inputs, Rows: 1, Group: "other"})
		a, b := <-one, <-two
		if (a.err == nil) == (b.err == nil) {
			t.Fatalf("outcomes %v and %v: want exactly one answered (by its hedge)", a.err, b.err)
		}
		if got := counters(t, reader, "batchmesh_retry_overflow", "model"); got["m"] != 1 {
			t.Errorf("batchmesh_retry_overflow = %v, want 1", got)
		}
	})
}

// TestRetryAfterFailure: a connection failure is retried at once on the
// other endpoint, as before hedging, and counts as a hedge that won.
func TestRetryAfterFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l, f, log, reader := hedgeLane(t, Config{})
		f.down["b"] = true
		t0 := time.Now()
		o := must(t, "request", submit(t.Context(), l, newRequest(1, 1)))
		if got := o.at.Sub(t0); got != 10*time.Millisecond || o.res.Endpoint != "a" {
			t.Errorf("answered after %v by %q, want 10ms by a", got, o.res.Endpoint)
		}
		if log.down == nil || log.down[0] != "b" {
			t.Errorf("reported down: %v, want b", log.down)
		}
		if got := counters(t, reader, "batchmesh_hedges", "outcome"); got[hedgeWon] != 1 {
			t.Errorf("batchmesh_hedges = %v, want won 1", got)
		}
	})
}

// TestRetryOfUnsentNeedsNoBudget: with the retry budget spent, a batch
// whose endpoint refused the connection is still sent to the other one
// (it never reached a runtime), while one that failed after it was sent
// is not retried.
func TestRetryOfUnsentNeedsNoBudget(t *testing.T) {
	for _, refused := range []bool{true, false} {
		t.Run(fmt.Sprintf("refused=%v", refused), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l, f, _, reader := hedgeLane(t, Config{RetryBudget: RetryBudget{Percent: 1, MinConcurrency: 1}})
				synctest.Wait() // the warm-up's batches have ended
				if refused {
					f.refused["b"] = true
				} else {
					f.down["b"] = true
				}
				l.mu.Lock()
				l.retries = 1 // the budget is spent (another batch's hedge)
				l.cfg.Picker = leastLoaded{}
				l.eps[0].busy, l.eps[0].rows = 0, 1000 // the first attempt goes to b
				l.mu.Unlock()
				o := <-submit(t.Context(), l, newRequest(1, 1))
				overflow := counters(t, reader, "batchmesh_retry_overflow", "model")["m"]
				if refused && (o.err != nil || o.res.Endpoint != "a" || overflow != 0) {
					t.Fatalf("refused dial: %v from %q, overflow %v; want the answer from a, no overflow", o.err, o.res.Endpoint, overflow)
				}
				if !refused && (o.err == nil || overflow != 1) {
					t.Fatalf("failure after sending: %v, overflow %v; want the error, one overflow", o.err, overflow)
				}
				l.mu.Lock()
				l.retries--
				l.eps[0].rows -= 1000
				l.mu.Unlock()
			})
		})
	}
}

// TestBreakerMaxBatches: with max_batches 1 over two idle endpoints, the
// second batch leaves only when the first ends, and the breaker's gauge
// shows it open meanwhile.
func TestBreakerMaxBatches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l, f, _, reader := hedgeLane(t, Config{})
		synctest.Wait()
		l.mu.Lock()
		l.cfg.Breakers = Breakers{MaxBatches: 1} // after the warm-up, which needs both at once
		l.mu.Unlock()
		before := len(f.sent())
		one := submit(t.Context(), l, newRequest(1, 1))
		synctest.Wait()
		two := submit(t.Context(), l, &Request{Inputs: newRequest(2, 1).Inputs, Rows: 1, Group: "other"})
		synctest.Wait()
		if got := counters(t, reader, "batchmesh_circuit_open", "breaker"); got[breakerBatches] != 1 {
			t.Errorf("batchmesh_circuit_open while held = %v, want max_batches 1", got)
		}
		must(t, "first", one)
		must(t, "second", two)
		sent := f.sentAfter(before)
		if len(sent) != 2 || sent[1].at.Sub(sent[0].at) != 10*time.Millisecond {
			t.Fatalf("sent %+v, want the second batch 10ms after the first", sent)
		}
		synctest.Wait()
		if got := counters(t, reader, "batchmesh_circuit_open", "breaker"); got[breakerBatches] != 0 {
			t.Errorf("batchmesh_circuit_open after = %v, want max_batches 0", got)
		}
	})
}

// TestBreakerEndpointBounds: endpoint_max_batches below an endpoint's
// slots, and row bounds, hold batches in the queue until one ends.
func TestBreakerEndpointBounds(t *testing.T) {
	tests := []struct {
		name     string
		breakers Breakers
		rows     int             // rows per request; three requests in three groups
		wantGaps []time.Duration // between the batches' sends
		open     string          // the breaker seen open
	}{
		{name: "endpoint max batches", breakers: Breakers{EndpointMaxBatches: 1}, rows: 1, wantGaps: []time.Duration{10 * time.Millisecond, 10 * time.Millisecond}, open: breakerEndpointBatches},
		{name: "endpoint max rows", breakers: Breakers{EndpointMaxRows: 4}, rows: 4, wantGaps: []time.Duration{10 * time.Millisecond, 10 * time.Millisecond}, open: breakerEndpointRows},
		{name: "max rows", breakers: Breakers{MaxRows: 5}, rows: 4, wantGaps: []time.Duration{0, 10 * time.Millisecond}, open: breakerRows},
		{name: "none", rows: 4, wantGaps: []time.Duration{0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeCaller(map[string]time.Duration{"a": 10 * time.Millisecond})
				reader := sdkmetric.NewManualReader()
				l := newTestLane(t, Config{Breakers: tt.breakers, Endpoints: []Endpoint{{Address: "a", Slots: 4}},
					Meter: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("t")}, f)
				var outs []<-chan outcome
				for i := range 3 {
					outs = append(outs, submit(t.Context(), l, &Request{Inputs: newRequest(i, tt.rows).Inputs, Rows: tt.rows, Group: itoa(i)}))
					synctest.Wait()
				}
				if tt.open != "" {
					if got := counters(t, reader, "batchmesh_circuit_open", "breaker"); got[tt.open] != 1 {
						t.Errorf("batchmesh_circuit_open while held = %v, want %s 1", got, tt.open)
					}
				}
				for i, ch := range outs {
					must(t, "request "+itoa(i), ch)
				}
				sent := byTime(f.sent())
				if len(sent) != 3 {
					t.Fatalf("%d batches sent, want 3", len(sent))
				}
				for i, want := range tt.wantGaps {
					if got := sent[i+1].at.Sub(sent[i].at); got != want {
						t.Errorf("batch %d left %v after batch %d, want %v", i+1, got, i, want)
					}
				}
				synctest.Wait()
				if got := counters(t, reader, "batchmesh_circuit_open", "breaker"); got[tt.open] != 0 {
					t.Errorf("batchmesh_circuit_open after = %v, want 0", got)
				}
			})
		})
	}
}
