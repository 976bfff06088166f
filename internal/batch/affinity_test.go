package batch

import (
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// firstKeyPicker is a KeyPicker that picks the first eligible endpoint,
// whatever the key: enough to see how the lane groups by affinity.
type firstKeyPicker struct{ leastLoaded }

func (firstKeyPicker) PickKey(_ string, loads []inference.EndpointLoad) int {
	return leastLoaded{}.Pick(loads)
}

// TestAffinitySplitsBatchesOnlyForKeyPickers: a batch goes to one endpoint,
// so under a KeyPicker (the ring hash) requests of different tenants never
// share a batch; under any other picker the affinity is ignored.
func TestAffinitySplitsBatchesOnlyForKeyPickers(t *testing.T) {
	for _, tt := range []struct {
		name   string
		picker Picker
		want   []int // rows of the batches sent behind the blocker
	}{
		{name: "key picker", picker: firstKeyPicker{}, want: []int{2, 2}},
		{name: "plain picker", picker: leastLoaded{}, want: []int{4}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeCaller(map[string]time.Duration{"a": 10 * time.Millisecond})
				l := newTestLane(t, Config{MaxQueueDelay: 2 * time.Millisecond, Picker: tt.picker, Endpoints: []Endpoint{{Address: "a", Slots: 1}}}, f)
				var reqs []*Request
				for i, tenant := range []string{"x", "y", "x", "y"} {
					r := newRequest(i, 1)
					r.Affinity = tenant
					reqs = append(reqs, r)
				}
				outs, blocker, before := queueBehindBlocker(t, l, f, reqs)
				for i, ch := range outs {
					o := <-ch
					checkKind(t, "request "+itoa(i), o.err, noError)
					checkEcho(t, reqs[i], o.res)
				}
				must(t, "blocker", blocker)
				var rows []int
				for _, b := range f.sentAfter(before) {
					rows = append(rows, b.rows)
				}
				if !slices.Equal(rows, tt.want) {
					t.Errorf("batches of %v rows, want %v", rows, tt.want)
				}
			})
		})
	}
}

// reporter records the endpoints a lane reports unreachable.
type reporter struct {
	mu   sync.Mutex
	down []string
}

func (r *reporter) ReportFailure(address string, _ error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.down = append(r.down, address)
}

// TestUnreachableEndpointIsReported: a batch that cannot reach its endpoint
// is retried on another, the lane stops using the endpoint at once, and the
// health reporter — the sidecar's one view of health — is told.
func TestUnreachableEndpointIsReported(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeCaller(map[string]time.Duration{"a": time.Millisecond, "b": time.Millisecond}, "a")
		rep := &reporter{}
		l := newTestLane(t, Config{Health: rep, Picker: firstKeyPicker{}, Endpoints: []Endpoint{{Address: "a"}, {Address: "b"}}}, f)
		r := newRequest(1, 1)
		res, err := l.Submit(t.Context(), r)
		checkKind(t, "request", err, noError)
		checkEcho(t, r, res)
		if res.Endpoint != "b" {
			t.Errorf("answered by %q, want the retry on b", res.Endpoint)
		}
		rep.mu.Lock()
		down := slices.Clone(rep.down)
		rep.mu.Unlock()
		if !slices.Equal(down, []string{"a"}) {
			t.Errorf("reported down: %v, want [a]", down)
		}
		eps, _ := l.Status()
		if eps[0].Healthy || !eps[1].Healthy {
			t.Errorf("endpoint health after the failure: a %v, b %v; want a down, b up", eps[0].Healthy, eps[1].Healthy)
		}
		l.SetHealthy("a", true) // the reporter's probe brings it back
		if eps, _ := l.Status(); !eps[0].Healthy {
			t.Error("SetHealthy(a, true) did not bring a back")
		}
	})
}
