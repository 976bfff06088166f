package xdsclient

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/xdsserver"
)

const waitTimeout = 10 * time.Second

// controlPlane serves an xdsserver.Server over ADS on loopback.
type controlPlane struct {
	srv  *xdsserver.Server
	addr string
	stop func()
}

// startControlPlane serves a new xdsserver.Server of the given epoch on
// addr ("127.0.0.1:0" for any port). Its stop is also a cleanup.
func startControlPlane(t *testing.T, addr string, epoch int64) *controlPlane {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := xdsserver.New(xdsserver.Config{Epoch: epoch})
	ctx, cancel := context.WithCancel(context.Background())
	g := grpc.NewServer()
	srv.Register(ctx, g)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = g.Serve(lis)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			g.Stop()
			<-done
		})
	}
	t.Cleanup(stop)
	return &controlPlane{srv: srv, addr: lis.Addr().String(), stop: stop}
}

func (cp *controlPlane) update(t *testing.T, cfg *config.Config) string {
	t.Helper()
	v, err := cp.srv.Update(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// applied is one call of apply.
type applied struct {
	cfg *config.Config
	v   Versions
	err error // what apply returned
}

// recorder is an apply func that reports every call and refuses the
// configs refuse returns an error for.
type recorder struct {
	calls  chan applied
	refuse atomic.Pointer[func(*config.Config) error]
}

func newRecorder() *recorder { return &recorder{calls: make(chan applied, 64)} }

func (r *recorder) apply(cfg *config.Config, v Versions) error {
	var err error
	if f := r.refuse.Load(); f != nil {
		err = (*f)(cfg)
	}
	r.calls <- applied{cfg: cfg, v: v, err: err}
	return err
}

// next returns the next call of apply.
func (r *recorder) next(t *testing.T) applied {
	t.Helper()
	select {
	case a := <-r.calls:
		return a
	case <-time.After(waitTimeout):
		t.Fatal("apply was not called")
		return applied{}
	}
}

// until returns the first call of apply whose config matches want, skipping
// consistent intermediate ones.
func (r *recorder) until(t *testing.T, want *config.Config) applied {
	t.Helper()
	deadline := time.After(waitTimeout)
	var last string
	for {
		select {
		case a := <-r.calls:
			if last = diffConfig(a.cfg, want); last == "" {
				return a
			}
		case <-deadline:
			t.Fatalf("apply was not called with the wanted config; last diff:\n%s", last)
		}
	}
}

// none checks that apply has not been called.
func (r *recorder) none(t *testing.T) {
	t.Helper()
	select {
	case a := <-r.calls:
		t.Fatalf("apply called with versions %+v", a.v)
	default:
	}
}

// logEvents passes the messages of the client's log records to a channel.
type logEvents struct {
	slog.Handler
	msgs chan string
}

func (h logEvents) Handle(_ context.Context, r slog.Record) error {
	select {
	case h.msgs <- r.Message:
	default:
	}
	return nil
}

func (logEvents) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h logEvents) WithAttrs([]slog.Attr) slog.Handler { return h }

// waitLog waits for a log record of the given message.
func waitLog(t *testing.T, msgs <-chan string, msg string) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case m := <-msgs:
			if m == msg {
				return
			}
		case <-deadline:
			t.Fatalf("no log %q", msg)
		}
	}
}

// runClient runs a client of addr until the test ends. Its log messages go
// to the returned channel.
func runClient(t *testing.T, protocol, addr string, apply ApplyFunc) (*Client, <-chan string) {
	t.Helper()
	msgs := make(chan string, 256)
	c, err := New(Config{
		Server: addr, NodeID: "sidecar-1", NodeCluster: "test", Zone: "a", Protocol: protocol,
		Logger:     slog.New(logEvents{Handler: slog.DiscardHandler, msgs: msgs}),
		BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, apply) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(waitTimeout):
			t.Error("Run did not return")
		}
	})
	return c, msgs
}

// waitFor polls cond until it holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(waitTimeout)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func allAt(v Versions, version string) bool {
	return v.Listeners.Version == version && v.Routes.Version == version &&
		v.Clusters.Version == version && v.Endpoints.Version == version
}

// bothProtocols runs test as a subtest for SotW and for delta.
func bothProtocols(t *testing.T, test func(*testing.T, string)) {
	for _, p := range []string{ProtocolSotW, ProtocolDelta} {
		t.Run(p, func(t *testing.T) { test(t, p) })
	}
}

func TestNew(t *testing.T) {
	for _, cfg := range []Config{
		{NodeID: "n"},
		{Server: "127.0.0.1:1"},
		{Server: "127.0.0.1:1", NodeID: "n", BackoffMin: time.Second, BackoffMax: time.Millisecond},
		{Server: "127.0.0.1:1", NodeID: "n", Protocol: "incremental"},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v): no error", cfg)
		}
	}
	c, err := New(Config{Server: "127.0.0.1:1", NodeID: "n"})
	if err != nil {
		t.Fatal(err)
	}
	if c.cfg.BackoffMin != DefaultBackoffMin || c.cfg.BackoffMax != DefaultBackoffMax {
		t.Errorf("backoff %v..%v, want the defaults", c.cfg.BackoffMin, c.cfg.BackoffMax)
	}
	if v := c.Versions(); v != (Versions{}) {
		t.Errorf("Versions before Run: %+v", v)
	}
}

// Happy path and hot reload: the client applies the served config, then the
// config of an Update that changes weights, with versions that move.
func TestApplyAndUpdate(t *testing.T) { bothProtocols(t, testApplyAndUpdate) }

func testApplyAndUpdate(t *testing.T, protocol string) {
	cp := startControlPlane(t, "127.0.0.1:0", 1)
	first := testConfig(90, 10, 3)
	v1 := cp.update(t, first)
	rec := newRecorder()
	c, _ := runClient(t, protocol, cp.addr, rec.apply)

	a := rec.next(t)
	if d := diffConfig(a.cfg, first); d != "" {
		t.Fatal(d)
	}
	if !allAt(a.v, v1) {
		t.Fatalf("apply got versions %+v, want %q for every type", a.v, v1)
	}
	waitFor(t, "Versions at v1", func() bool { return allAt(c.Versions(), v1) })
	if n := c.Versions().Routes.Nonce; n == "" {
		t.Error("no nonce")
	}

	second := testConfig(50, 50, 7)
	v2 := cp.update(t, second)
	a = rec.until(t, second)
	if a.v.Routes.Version != v2 || a.v.Endpoints.Version != v2 {
		t.Fatalf("apply got versions %+v, want routes and endpoints at %q", a.v, v2)
	}
	// Only the routes and endpoints changed; the others were not sent again.
	waitFor(t, "routes and endpoints at v2", func() bool {
		v := c.Versions()
		return v.Routes.Version == v2 && v.Endpoints.Version == v2 && v.Listeners.Version == v1 && v.Clusters.Version == v1
	})
	if n := cp.srv.NACKs(); len(n) != 0 {
		t.Errorf("NACKs %v", n)
	}
}

// The control plane goes away and comes back on the same address: the
// client keeps its config meanwhile, reconnects and applies the new one.
func TestControlPlaneRestart(t *testing.T) { bothProtocols(t, testControlPlaneRestart) }

func testControlPlaneRestart(t *testing.T, protocol string) {
	cp := startControlPlane(t, "127.0.0.1:0", 1)
	first := testConfig(90, 10, 3)
	v1 := cp.update(t, first)
	rec := newRecorder()
	c, logs := runClient(t, protocol, cp.addr, rec.apply)
	rec.until(t, first)
	waitFor(t, "Versions at v1", func() bool { return allAt(c.Versions(), v1) })

	cp.stop()
	// The stream fails, and so does at least one reconnection.
	waitLog(t, logs, "xds stream failed")
	waitLog(t, logs, "xds stream failed")
	rec.none(t)
	if v := c.Versions(); !allAt(v, v1) {
		t.Fatalf("Versions during the outage %+v, want %q", v, v1)
	}

	cp2 := startControlPlane(t, cp.addr, 2)
	second := testConfig(20, 80, 1)
	v2 := cp2.update(t, second)
	rec.until(t, second)
	if protocol == ProtocolSotW {
		waitFor(t, "Versions at v2", func() bool { return allAt(c.Versions(), v2) })
		return
	}
	// Delta: the client said which resources it had, at which version
	// (resource versions are content hashes), so the unchanged listener is
	// not sent again.
	waitFor(t, "routes and endpoints at v2, the listener kept", func() bool {
		v := c.Versions()
		return v.Routes.Version == v2 && v.Endpoints.Version == v2 && v.Listeners.Version == v1
	})
}

// A config apply refuses is NACKed with the reason, never applied again,
// and the versions stay those of the last good config until a good one
// comes.
func TestApplyErrorNACKs(t *testing.T) { bothProtocols(t, testApplyErrorNACKs) }

func testApplyErrorNACKs(t *testing.T, protocol string) {
	cp := startControlPlane(t, "127.0.0.1:0", 1)
	first := testConfig(90, 10, 3)
	v1 := cp.update(t, first)
	rec := newRecorder()
	refuse := func(cfg *config.Config) error {
		if cfg.Models[0].Versions[0].Weight == 77 {
			return errors.New("weight 77 is cursed")
		}
		return nil
	}
	rec.refuse.Store(&refuse)
	c, _ := runClient(t, protocol, cp.addr, rec.apply)
	rec.until(t, first)
	waitFor(t, "Versions at v1", func() bool { return allAt(c.Versions(), v1) })

	bad := testConfig(77, 23, 3) // only the route changes
	vBad := cp.update(t, bad)
	a := rec.until(t, bad)
	if a.err == nil {
		t.Fatal("apply accepted the bad config")
	}
	waitFor(t, "a NACK", func() bool {
		var n uint64
		for _, k := range cp.srv.NACKs() {
			n += k
		}
		return n > 0
	})
	waitFor(t, "the rejection in Versions", func() bool { return c.Versions().Routes.Rejected == vBad })
	v := c.Versions()
	if v.Routes.Version != v1 {
		t.Fatalf("routes at %q after the NACK, want %q kept", v.Routes.Version, v1)
	}
	if !strings.Contains(v.Routes.Error, "weight 77 is cursed") {
		t.Fatalf("routes error %q, want the reason", v.Routes.Error)
	}

	good := testConfig(60, 40, 3)
	vGood := cp.update(t, good)
	deadline := time.After(waitTimeout)
	for done := false; !done; {
		select {
		case a := <-rec.calls:
			if diffConfig(a.cfg, bad) == "" {
				t.Fatal("apply called again with the refused config")
			}
			done = diffConfig(a.cfg, good) == ""
		case <-deadline:
			t.Fatal("the good config was not applied")
		}
	}
	waitFor(t, "routes at the good version", func() bool {
		v := c.Versions()
		return v.Routes.Version == vGood && v.Listeners.Version == v1 && v.Clusters.Version == v1 && v.Endpoints.Version == v1
	})
	if v := c.Versions(); v.Routes.Rejected != "" || v.Routes.Error != "" {
		t.Errorf("rejection %q %q still shown after a good config", v.Routes.Rejected, v.Routes.Error)
	}
}
