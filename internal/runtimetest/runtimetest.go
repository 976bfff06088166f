// Package runtimetest starts a real reference model runtime — the
// modelrt.Server that the model binary serves — for tests: on a free
// loopback port, warmed up and ready when Start returns, and shut down when
// the test ends.
//
// It is for tests only: import it from _test.go files, never from code that
// ships in a binary.
package runtimetest

import (
	"context"
	"net"
	"sync"
	"testing"

	"github.com/batchmesh/batchmesh/internal/modelrt"
	"github.com/batchmesh/batchmesh/internal/telemetry"
)

// Runtime is a modelrt.Server serving on a loopback port until Stop or the
// end of the test that started it.
type Runtime struct {
	// Server is the runtime itself, e.g. to Warm one started Cold.
	Server *modelrt.Server
	// Addr is the host:port it listens on, on 127.0.0.1.
	Addr string
	// URL is "http://" + Addr.
	URL string

	t       testing.TB
	ln      net.Listener
	served  chan error
	metrics *telemetry.Metrics
	stop    sync.Once
}

// An Option changes how Start starts a runtime.
type Option func(*options)

type options struct {
	cold    bool
	metrics bool
	listen  string
}

// Listen serves on addr instead of a free port of 127.0.0.1, e.g. on
// "[::]:8000" inside a network namespace the test created.
func Listen(addr string) Option { return func(o *options) { o.listen = addr } }

// Cold leaves the runtime not warmed up: it accepts connections but reports
// not ready (GET /v2/health/ready is 503) and refuses inference with 503
// until Server.Warm succeeds.
func Cold() Option { return func(o *options) { o.cold = true } }

// WithMetrics records the runtime's model_* metrics with a fresh
// telemetry.Metrics (a Prometheus registry of its own) and serves them at
// GET /metrics, as the model binary does. It replaces cfg's Meter and
// Metrics; the Metrics is closed after the runtime stops.
func WithMetrics() Option { return func(o *options) { o.metrics = true } }

// Start serves a runtime built from cfg on 127.0.0.1 at a free port (or
// where Listen says) and
// returns it once it is ready: the listener is open before Start returns,
// so a connection made afterwards is never refused, and the runtime has
// been warmed up (unless Cold), so it answers inference at once. It fails
// t if the runtime cannot be built, listen or warm up. The runtime is
// stopped at t's cleanup.
func Start(t testing.TB, cfg modelrt.Config, opts ...Option) *Runtime {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	r := &Runtime{t: t, served: make(chan error, 1)}
	if o.metrics {
		m, err := telemetry.NewMetrics()
		if err != nil {
			t.Fatalf("runtimetest: metrics: %v", err)
		}
		r.metrics = m
		cfg.Meter, cfg.Metrics = m.Meter("model"), m.Handler()
	}
	srv, err := modelrt.NewServer(cfg)
	if err != nil {
		r.closeMetrics()
		t.Fatalf("runtimetest: %v", err)
	}
	if o.listen == "" {
		o.listen = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		r.closeMetrics()
		t.Fatalf("runtimetest: listen: %v", err)
	}
	r.Server, r.ln = srv, ln
	r.Addr = ln.Addr().String()
	r.URL = "http://" + r.Addr
	go func() { r.served <- srv.Serve(ln) }()
	t.Cleanup(r.Stop)
	if !o.cold {
		if err := srv.Warm(context.Background()); err != nil {
			t.Fatalf("runtimetest: %v", err)
		}
	}
	return r
}

// Stop shuts the runtime down, as a crashed or removed runtime would be:
// it stops accepting, closes idle connections and waits for the requests
// in flight to finish. Once Stop returns, connections to Addr are refused.
// It may be called mid-test to simulate a failure; calls after the first,
// including the one at cleanup, do nothing. A shutdown error fails the test.
func (r *Runtime) Stop() {
	r.stop.Do(func() {
		if err := r.Server.Shutdown(context.Background()); err != nil {
			r.t.Errorf("runtimetest: shutdown of %s: %v", r.Addr, err)
		}
		// Shutdown closes the listener only if Serve has already taken
		// it; closing it here as well ends a Serve that had not yet
		// started. The second close's error is expected.
		_ = r.ln.Close()
		if err := <-r.served; err != nil {
			r.t.Errorf("runtimetest: serve on %s: %v", r.Addr, err)
		}
		r.closeMetrics()
	})
}

func (r *Runtime) closeMetrics() {
	if r.metrics != nil {
		if err := r.metrics.Close(context.Background()); err != nil {
			r.t.Errorf("runtimetest: metrics: %v", err)
		}
	}
}

// Models builds the models named by flags, each in the model binary's
// -model syntax (modelrt.ParseModelFlag), e.g. "m=sim:linear/1ms+0s", for
// modelrt.Config.Models. It fails t on a bad flag.
func Models(t testing.TB, flags ...string) map[string]modelrt.Model {
	t.Helper()
	models := make(map[string]modelrt.Model, len(flags))
	for _, f := range flags {
		name, m, err := modelrt.ParseModelFlag(f)
		if err != nil {
			t.Fatalf("runtimetest: %v", err)
		}
		models[name] = m
	}
	return models
}
