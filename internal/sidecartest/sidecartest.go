// Package sidecartest runs a real sidecar in tests the way the sidecar
// binary does — sidecar.New, then Run until the test ends — on free
// loopback ports, with real metrics at the admin /metrics.
//
// It is for tests only: import it from _test.go files, never from code that
// ships in a binary.
package sidecartest

import (
	"context"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/sidecar"
	"github.com/batchmesh/batchmesh/internal/telemetry"
)

// Sidecar is a sidecar serving on loopback until Stop or the test's end.
type Sidecar struct {
	URL      string // "http://127.0.0.1:port" of the inference listener
	AdminURL string // "http://127.0.0.1:port" of the admin listener

	once   sync.Once
	cancel context.CancelFunc
	done   chan error
	err    error
}

// Models parses yaml as the sidecar's config file named name, failing t on
// an error.
func Models(t testing.TB, name, yaml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse(name, []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Start runs a sidecar from cfg. It sets cfg's listeners to free loopback
// ports and, when cfg.Proxy has no Meter, records real metrics served at
// the admin /metrics. It returns once the sidecar serves (its endpoints have
// been probed, so /readyz tells the truth); Stop drains it, and so does the
// test's cleanup, which fails the test if the drain fails.
func Start(t testing.TB, cfg sidecar.Config) *Sidecar {
	t.Helper()
	if cfg.Proxy.Meter == nil {
		metrics, err := telemetry.NewMetrics()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = metrics.Close(context.Background()) })
		cfg.Proxy.Meter, cfg.Proxy.Metrics = metrics.Meter("batchmesh/sidecar"), metrics.Handler()
	}
	ln, aln := listen(t), listen(t)
	cfg.Listener, cfg.AdminListener = ln, aln
	s, err := sidecar.New(cfg)
	if err != nil {
		ln.Close()
		aln.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sc := &Sidecar{
		URL: "http://" + ln.Addr().String(), AdminURL: "http://" + aln.Addr().String(),
		cancel: cancel, done: make(chan error, 1),
	}
	go func() { sc.done <- s.Run(ctx) }()
	t.Cleanup(func() {
		if err := sc.Stop(); err != nil {
			t.Errorf("sidecar drain: %v", err)
		}
	})
	sc.waitServing(t)
	return sc
}

// Stop drains the sidecar as SIGTERM does and returns Run's result. Calls
// after the first return the same result.
func (s *Sidecar) Stop() error {
	s.once.Do(func() {
		s.cancel()
		s.err = <-s.done
	})
	return s.err
}

// waitServing polls /healthz, which answers once Run has probed the
// endpoints and serves, for up to 10 seconds.
func (s *Sidecar) waitServing(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case err := <-s.done:
			s.done <- err
			t.Fatalf("sidecar stopped before serving: %v", err)
		default:
		}
		resp, err := http.Get(s.AdminURL + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("sidecar not serving at %s after 10s: %v", s.AdminURL, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}
