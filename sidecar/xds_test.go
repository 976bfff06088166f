package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"

	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/modelrt"
	"github.com/batchmesh/batchmesh/internal/runtimetest"
	"github.com/batchmesh/batchmesh/internal/xdsserver"
)

// startRuntime serves a sim model named m, as the given version, on
// loopback.
func startRuntime(t *testing.T, version string) string {
	t.Helper()
	models := runtimetest.Models(t, "m=sim:linear/1ms+0s")
	return runtimetest.Start(t, modelrt.Config{Models: models, Version: version}).Addr
}

// controlPlane serves an xdsserver over ADS on addr; stop ends it.
func controlPlane(t *testing.T, addr string, epoch int64) (*xdsserver.Server, string, func()) {
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
	go func() { defer close(done); _ = g.Serve(lis) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); g.Stop(); <-done }) }
	t.Cleanup(stop)
	return srv, lis.Addr().String(), stop
}

func splitConfig(t *testing.T, v1, v2 string, w1, w2 int) *config.Config {
	t.Helper()
	cfg, err := config.Parse("cp.yaml", []byte(fmt.Sprintf(`models:
  - name: m
    batching: {max_batch_size: 16, timeout: 10s}
    versions:
      - {version: "1", weight: %d, endpoints: [{address: %s}]}
      - {version: "2", weight: %d, endpoints: [{address: %s}]}
`, w1, v1, w2, v2)))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// countVersions sends n one-row requests from 32 clients and counts the
// model_version of the answers; any failure is a test error.
func countVersions(t *testing.T, url string, n int) map[string]int {
	t.Helper()
	var mu sync.Mutex
	counts := map[string]int{}
	var next atomic.Int64
	var wg sync.WaitGroup
	body := []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[1,2]}]}`)
	for range 32 {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				resp, err := http.Post(url, "application/json", bytes.NewReader(body))
				if err != nil {
					t.Errorf("request: %v", err)
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var out struct {
					ModelVersion string `json:"model_version"`
				}
				if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &out) != nil {
					t.Errorf("status %d: %s", resp.StatusCode, b)
					return
				}
				mu.Lock()
				counts[out.ModelVersion]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return counts
}

// TestSidecarFollowsControlPlane runs the real sidecar main with -xds and no
// -config against a real control plane on loopback: not ready until the
// first configuration arrives, then a 90/10 version split within ±3% over
// 5,000 requests, a change to 10/90 followed, and a control-plane restart
// during which every request still succeeds on the last good config; with
// -xds-protocol sotw and delta.
func TestSidecarFollowsControlPlane(t *testing.T) {
	for _, p := range []string{"sotw", "delta"} {
		t.Run(p, func(t *testing.T) { testSidecarFollowsControlPlane(t, p) })
	}
}

func testSidecarFollowsControlPlane(t *testing.T, protocol string) {
	v1, v2 := startRuntime(t, "1"), startRuntime(t, "2")
	cp, cpAddr, stopCP := controlPlane(t, "127.0.0.1:0", 1)
	listen, admin := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runCtx(ctx, []string{"-xds", cpAddr, "-xds-protocol", protocol, "-node-id", "t1", "-listen", listen, "-admin", admin, "-log-level", "error"}, io.Discard)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	ready := func() int {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	waitFor(t, func() bool { return ready() == http.StatusServiceUnavailable })

	if _, err := cp.Update(context.Background(), splitConfig(t, v1, v2, 90, 10)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return ready() == http.StatusOK })
	url := "http://" + listen + "/v2/models/m/infer"
	const n = 5000
	counts := countVersions(t, url, n)
	t.Logf("90/10: %v of %d", counts, n)
	if share := float64(counts["1"]) / n; share < 0.87 || share > 0.93 {
		t.Errorf("version 1 got %.1f%% of %d requests, want 90%% ± 3 (%v)", 100*share, n, counts)
	}

	if _, err := cp.Update(context.Background(), splitConfig(t, v1, v2, 10, 90)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		var dump struct {
			Models []struct{ Versions []struct{ Weight int } }
		}
		resp, err := http.Get("http://" + admin + "/config_dump")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(&dump) == nil && len(dump.Models) == 1 && dump.Models[0].Versions[0].Weight == 10
	})
	counts = countVersions(t, url, 2000)
	t.Logf("10/90: %v of 2000", counts)
	if share := float64(counts["2"]) / 2000; share < 0.86 || share > 0.94 {
		t.Errorf("after the change version 2 got %.1f%%, want 90%% ± 4 (%v)", 100*share, counts)
	}

	// The control plane goes away and comes back on the same address:
	// requests keep succeeding on the last good configuration.
	stopCP()
	counts = countVersions(t, url, 500)
	if counts["1"]+counts["2"] != 500 {
		t.Errorf("during the control-plane outage %d of 500 requests succeeded", counts["1"]+counts["2"])
	}
	cp2, _, _ := controlPlane(t, cpAddr, 2)
	if _, err := cp2.Update(context.Background(), splitConfig(t, v1, v2, 50, 50)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		resp, err := http.Get("http://" + admin + "/config_dump")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return bytes.Contains(b, []byte(`"weight": 50`))
	})
	if c := countVersions(t, url, 200); c["1"]+c["2"] != 200 {
		t.Errorf("after the restart %d of 200 requests succeeded", c["1"]+c["2"])
	}
}
