package batch

import (
	"bytes"
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// sharedRuntime fakes one model runtime that several lanes (several
// sidecars) send batches to: slots batches compute at once, for latency
// each, the others wait in arrival order. After each batch it reports its
// backlog (the batches still waiting once every free slot is taken, as the
// real runtime's ORCA queue_depth) to the lane that sent the batch, as the
// proxy's caller does. The real runtime and ORCA header run in the
// sidecar's TestAdaptiveWeights; here time is synctest's fake time.
type sharedRuntime struct {
	latency time.Duration
	slots   chan struct{}
	waiting atomic.Int64

	mu      sync.Mutex
	batches int
	rows    int
}

func newSharedRuntime(slots int, latency time.Duration) *sharedRuntime {
	return &sharedRuntime{latency: latency, slots: make(chan struct{}, slots)}
}

// meanRows is the mean rows per batch the runtime computed.
func (rt *sharedRuntime) meanRows() float64 {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return float64(rt.rows) / float64(max(rt.batches, 1))
}

// runtimeCaller is one lane's connection to a sharedRuntime.
type runtimeCaller struct {
	rt   *sharedRuntime
	lane *Lane // set right after NewLane
}

func (c *runtimeCaller) Call(ctx context.Context, endpoint string, req *inference.Request) ([]inference.Tensor, error) {
	rt := c.rt
	rt.waiting.Add(1)
	select {
	case rt.slots <- struct{}{}:
	case <-ctx.Done():
		rt.waiting.Add(-1)
		return nil, inference.Errorf(inference.KindDeadline, "shared runtime: %w", ctx.Err())
	}
	rt.waiting.Add(-1)
	time.Sleep(rt.latency)
	<-rt.slots
	in := req.Inputs[0]
	rt.mu.Lock()
	rt.batches++
	rt.rows += int(in.Shape[0])
	rt.mu.Unlock()
	free := int64(cap(rt.slots) - len(rt.slots))
	c.lane.Observe(endpoint, int(max(0, rt.waiting.Load()-free)))
	return []inference.Tensor{{Name: "out", DataType: in.DataType, Shape: slices.Clone(in.Shape), Data: bytes.Clone(in.Data)}}, nil
}

// runSharedRuntime runs two lanes (two sidecars) that both declare 3 slots
// for a runtime that has 1, each with clients closed-loop clients of one
// row, for d of fake time. It returns the runtime's mean batch rows and
// each lane's concurrency limit halfway through.
func runSharedRuntime(t *testing.T, adaptive bool, clients int, d time.Duration) (meanRows float64, limits []int) {
	rt := newSharedRuntime(1, 10*time.Millisecond)
	var lanes []*Lane
	for range 2 {
		c := &runtimeCaller{rt: rt}
		c.lane = newTestLane(t, Config{MaxBatchSize: 8, MaxQueueDelay: 2 * time.Millisecond,
			Endpoints: []Endpoint{{Address: "rt", Slots: 3}}, AdaptiveSlots: adaptive}, c)
		lanes = append(lanes, c.lane)
	}
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for li, l := range lanes {
		for ci := range clients {
			wg.Go(func() {
				for i := 0; time.Now().Before(stop); i++ {
					r := newRequest((li*clients+ci)%10, 1)
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					res, err := l.Submit(ctx, r)
					cancel()
					if err != nil {
						t.Errorf("lane %d client %d request %d: %v", li, ci, i, err)
						return
					}
					checkEcho(t, r, res)
				}
			})
		}
	}
	time.Sleep(d / 2)
	for _, l := range lanes {
		eps, _ := l.Status()
		limits = append(limits, eps[0].Limit)
	}
	wg.Wait()
	for _, l := range lanes {
		if err := l.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	return rt.meanRows(), limits
}

// TestAdaptiveSlotsSharedRuntime is the reason for AdaptiveSlots: two
// sidecars that each believe a 1-slot runtime has 3 slots keep 8 small
// batches queued there; told the runtime's backlog, each lowers its limit
// to 1 and the runtime computes fuller batches (in fake time, so the
// comparison is exact, not a timing).
func TestAdaptiveSlotsSharedRuntime(t *testing.T) {
	var static, adaptive float64
	var staticLimits, adaptiveLimits []int
	synctest.Test(t, func(t *testing.T) {
		static, staticLimits = runSharedRuntime(t, false, 16, 2*time.Second)
	})
	synctest.Test(t, func(t *testing.T) {
		adaptive, adaptiveLimits = runSharedRuntime(t, true, 16, 2*time.Second)
	})
	t.Logf("mean batch rows: declared slots %.2f, adaptive %.2f", static, adaptive)
	if !slices.Equal(staticLimits, []int{3, 3}) {
		t.Errorf("without AdaptiveSlots the limits moved to %v; want the declared [3 3]", staticLimits)
	}
	if !slices.Equal(adaptiveLimits, []int{1, 1}) {
		t.Errorf("with AdaptiveSlots the limits are %v; want [1 1] for a 1-slot runtime with a backlog", adaptiveLimits)
	}
	if adaptive < 1.5*static {
		t.Errorf("mean batch rows %.2f with AdaptiveSlots vs %.2f without; want at least 1.5× (32 clients over 4 vs 8 batches)", adaptive, static)
	}
}

// TestObserveSteps checks Observe's steps: one down per batch latency while
// the runtime has a backlog, never below 1; one up, never above Slots, only
// when the runtime has none and the lane uses its whole limit; nothing
// without AdaptiveSlots or for an unknown endpoint.
func TestObserveSteps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lat = 10 * time.Millisecond
		f := newFakeCaller(map[string]time.Duration{"a": lat})
		l := newTestLane(t, Config{MaxBatchSize: 1, Endpoints: []Endpoint{{Address: "a", Slots: 3}}, AdaptiveSlots: true}, f)
		warm(t, l)
		limit := func() int {
			eps, _ := l.Status()
			return eps[0].Limit
		}
		step := func(queue, want int, what string) {
			t.Helper()
			l.Observe("a", queue)
			if got := limit(); got != want {
				t.Errorf("%s: limit %d, want %d", what, got, want)
			}
		}
		step(2, 2, "backlog")
		step(2, 2, "backlog again within one latency")
		time.Sleep(lat)
		step(1, 1, "backlog a latency later")
		time.Sleep(lat)
		step(5, 1, "backlog at the floor")
		l.Observe("elsewhere", 9)
		time.Sleep(lat)
		step(0, 1, "no backlog with the limit unused")

		// One batch in flight uses the whole limit of 1.
		out := submit(t.Context(), l, newRequest(1, 1))
		synctest.Wait()
		step(0, 2, "no backlog with the limit used")
		must(t, "request", out)
		time.Sleep(lat)
		outs := []<-chan outcome{submit(t.Context(), l, newRequest(2, 1)), submit(t.Context(), l, newRequest(3, 1))}
		synctest.Wait()
		step(0, 3, "no backlog, limit used again")
		time.Sleep(lat)
		step(0, 3, "at Slots")
		for i, ch := range outs {
			must(t, "request "+itoa(i), ch)
		}

		static := newTestLane(t, Config{Endpoints: []Endpoint{{Address: "a", Slots: 3}}}, f)
		static.Observe("a", 4)
		if eps, _ := static.Status(); eps[0].Limit != 3 {
			t.Errorf("without AdaptiveSlots: limit %d after a backlog, want the declared 3", eps[0].Limit)
		}
	})
}

// TestSetWeights checks that new weights replace the old ones in order,
// that a wrong count is ignored, and that the picker sees the new weights.
func TestSetWeights(t *testing.T) {
	f := newFakeCaller(nil)
	l := newTestLane(t, Config{Endpoints: []Endpoint{{Address: "a"}, {Address: "b"}}}, f)
	var seen []int
	l.SetWeights([]int{3, 0}, pickerFunc(func(loads []inference.EndpointLoad) int {
		for _, ld := range loads {
			seen = append(seen, ld.Weight)
		}
		return 0
	}))
	l.SetWeights([]int{7}, nil)
	eps, _ := l.Status()
	if eps[0].Weight != 3 || eps[1].Weight != 1 {
		t.Errorf("weights %d, %d; want 3, 1 (0 means 1; a wrong count changes nothing)", eps[0].Weight, eps[1].Weight)
	}
	if _, err := l.Submit(t.Context(), newRequest(1, 1)); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seen, []int{3, 1}) {
		t.Errorf("the new picker saw weights %v, want [3 1]", seen)
	}
}

type pickerFunc func([]inference.EndpointLoad) int

func (f pickerFunc) Pick(loads []inference.EndpointLoad) int { return f(loads) }
