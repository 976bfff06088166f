package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	lrsv3 "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/batchmesh/batchmesh/internal/telemetry"
	"github.com/batchmesh/batchmesh/internal/xdsserver"
)

const goodYAML = `
models:
  - name: bert
    versions:
      - version: "1"
        weight: 90
        endpoints: [{address: 127.0.0.1:8000, zone: a}]
      - version: "2"
        weight: 10
        endpoints: [{address: 127.0.0.1:8001}]
`

// writeFile writes data and sets the file's mtime to mtime, so that every
// write is a change whatever the file system's clock resolution.
func writeFile(t *testing.T, path, data string, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestReloadRefusesBadEdit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	writeFile(t, path, goodYAML, base)

	synctest.Test(t, func(t *testing.T) {
		var logs syncBuffer
		log := slog.New(slog.NewTextHandler(&logs, nil))
		srv := xdsserver.New(xdsserver.Config{Logger: log})
		rl := &reloader{path: path, srv: srv, log: log}
		ctx, cancel := context.WithCancel(t.Context())
		if err := rl.load(ctx); err != nil {
			t.Fatal(err)
		}
		v1 := srv.Version()
		done := make(chan struct{})
		go func() {
			defer close(done)
			rl.run(ctx, time.Second, 100*time.Millisecond)
		}()

		// Unchanged file: no reload.
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if got := srv.Version(); got != v1 {
			t.Fatalf("version moved to %q without a change", got)
		}

		// A bad edit (weights summing to 0) is refused and v1 kept.
		writeFile(t, path, strings.ReplaceAll(strings.ReplaceAll(goodYAML, "weight: 90", "weight: 0"), "weight: 10", "weight: 0"), base.Add(time.Minute))
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if got := srv.Version(); got != v1 {
			t.Errorf("version after a bad edit = %q, want %q", got, v1)
		}
		refused, reason := rl.state()
		if refused != 1 || !strings.Contains(reason, "weight") {
			t.Errorf("refused = %d, reason %q; want 1 and a reason about weights", refused, reason)
		}
		if !strings.Contains(logs.String(), "config reload refused") {
			t.Errorf("no refusal in the log:\n%s", logs.String())
		}
		// It is not retried while the file stays bad.
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if refused, _ := rl.state(); refused != 1 {
			t.Errorf("bad file refused %d times, want once", refused)
		}

		// A good edit is loaded under a newer version.
		writeFile(t, path, strings.ReplaceAll(goodYAML, "weight: 90", "weight: 50"), base.Add(2*time.Minute))
		time.Sleep(2 * time.Second)
		synctest.Wait()
		v2 := srv.Version()
		if v2 == v1 {
			t.Errorf("version after a good edit still %q", v2)
		}
		if _, reason := rl.state(); reason != "" {
			t.Errorf("last error after a good edit = %q", reason)
		}

		// Debounce: writes 50ms apart give one reload after they stop.
		for i := range 5 {
			writeFile(t, path, strings.ReplaceAll(goodYAML, "weight: 90", "weight: "+string(rune('1'+i))), base.Add(time.Duration(3+i)*time.Minute))
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		v3 := srv.Version()
		if v3 == v2 {
			t.Fatal("no reload after several writes")
		}
		_, s2, _ := strings.Cut(v2, "-")
		_, s3, _ := strings.Cut(v3, "-")
		if n2, n3 := atoi(t, s2), atoi(t, s3); n3 != n2+1 {
			t.Errorf("versions %q then %q: want exactly one reload", v2, v3)
		}
		cancel()
		<-done
	})
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, goodYAML, time.Now())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type addrs struct{ ads, admin net.Addr }
	ready := make(chan addrs, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, []string{"-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0", "-config", path}, io.Discard,
			func(ads, admin, _ net.Addr) { ready <- addrs{ads, admin} })
	}()
	var a addrs
	select {
	case a = <-ready:
	case err := <-errc:
		t.Fatal(err)
	}

	for _, p := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + a.admin.String() + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %s", p, resp.Status)
		}
	}
	resp, err := http.Get("http://" + a.admin.String() + "/snapshot")
	if err != nil {
		t.Fatal(err)
	}
	var snap snapshotState
	if err := json.NewDecoder(resp.Body).Decode(&snap); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if c := snap.Resources["clusters"]; snap.Version == "" || c.Version != snap.Version || len(c.Names) != 2 {
		t.Errorf("snapshot = %+v", snap)
	}

	// /metrics serves the xDS metrics once a response has been sent (below).
	metricsBody := func() string {
		t.Helper()
		resp, err := http.Get("http://" + a.admin.String() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("/metrics: %s %v", resp.Status, err)
		}
		return string(b)
	}

	// An ADS stream gets the clusters, and stays open until shutdown.
	conn, err := grpc.NewClient(a.ads.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discovery.DiscoveryRequest{Node: &core.Node{Id: "n1", Cluster: "sidecars"}, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	r, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(r.GetResources()) != 2 || r.GetVersionInfo() != snap.Version {
		t.Errorf("clusters: %d at %q, want 2 at %q", len(r.GetResources()), r.GetVersionInfo(), snap.Version)
	}

	if body := metricsBody(); !strings.Contains(body, `batchmesh_xds_updates_total{type="clusters"} 1`) {
		t.Errorf("/metrics lacks one clusters update:\n%s", body)
	}

	// The same address serves LRS: a stream gets every cluster.
	lctx, lcancel := context.WithCancel(context.Background())
	defer lcancel()
	ls, err := lrsv3.NewLoadReportingServiceClient(conn).StreamLoadStats(lctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ls.Send(&lrsv3.LoadStatsRequest{Node: &core.Node{Id: "n1"}}); err != nil {
		t.Fatal(err)
	}
	if lr, err := ls.Recv(); err != nil || !lr.GetSendAllClusters() || len(lr.GetClusters()) != 2 || lr.GetLoadReportingInterval().AsDuration() != xdsserver.DefaultReportInterval {
		t.Errorf("LRS response %v, %v", lr, err)
	}
	lcancel()

	cancel() // as SIGTERM does
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop within 10s")
	}
	if _, err := stream.Recv(); err == nil {
		t.Error("stream still open after shutdown")
	}
}

func TestRunNeedsConfig(t *testing.T) {
	if err := run(context.Background(), nil, io.Discard, nil); err == nil || !strings.Contains(err.Error(), "-config") {
		t.Errorf("run without -config: %v", err)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	writeFile(t, bad, "models: []\n", time.Now())
	if err := run(context.Background(), []string{"-config", bad, "-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0"}, io.Discard, nil); err == nil {
		t.Error("run with a bad config: no error")
	}
}

// TestRefusedEditCounted: a config edit that does not load is counted in
// batchmesh_xds_config_refused_total (and the error returned).
func TestRefusedEditCounted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cp.yaml")
	if err := os.WriteFile(path, []byte("models: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := telemetry.NewMetrics()
	if err != nil {
		t.Fatal(err)
	}
	counter, err := m.Meter("t").Int64Counter("batchmesh_xds_config_refused")
	if err != nil {
		t.Fatal(err)
	}
	rl := &reloader{path: path, srv: xdsserver.New(xdsserver.Config{}), log: slog.New(slog.DiscardHandler), refusals: counter}
	if err := rl.load(context.Background()); err == nil {
		t.Fatal("a broken file loaded")
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if !strings.Contains(rec.Body.String(), "batchmesh_xds_config_refused_total 1") {
		t.Errorf("metrics lack the refusal:\n%s", rec.Body.String())
	}
}
