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
	"time"

	"google.golang.org/grpc"

	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/inference"
	"github.com/batchmesh/batchmesh/internal/modelrt"
	"github.com/batchmesh/batchmesh/internal/runtimetest"
	"github.com/batchmesh/batchmesh/internal/xdsserver"
)

// countingModel counts the rows its runtime computes.
type countingModel struct {
	modelrt.Model
	rows atomic.Int64
}

func (m *countingModel) Infer(ctx context.Context, req *inference.Request) ([]inference.Tensor, error) {
	out, err := m.Model.Infer(ctx, req)
	if err == nil {
		n, _ := req.Rows()
		m.rows.Add(int64(n))
	}
	return out, err
}

// startSlotsRuntime serves model m as sim:linear/10ms+0s (a batch of any
// size takes 10ms) with the given slots on loopback.
func startSlotsRuntime(t testing.TB, slots int) (string, *countingModel) {
	t.Helper()
	name, m, err := modelrt.ParseModelFlag("m=sim:linear/10ms+0s")
	if err != nil {
		t.Fatal(err)
	}
	cm := &countingModel{Model: m}
	rt := runtimetest.Start(t, modelrt.Config{Models: map[string]modelrt.Model{name: cm}, Version: "1", Slots: slots})
	return rt.Addr, cm
}

// adaptiveRun is what one run of TestAdaptiveWeights measured over its
// last window.
type adaptiveRun struct {
	share      float64 // of the rows computed by the 3-slot runtime
	rowsPerSec float64 // by both runtimes
	weights    []xdsserver.EndpointWeight
	// limits1 is each sidecar's concurrency limit for the 1-slot runtime
	// at the end of the window (/clusters' concurrency_limit).
	limits1 []int
}

// runTwoRuntimes serves one version of model m on a 3-slot and a 1-slot
// runtime (declared alike in the config: 3 slots, weight 1) behind a
// control plane with LRS and two sidecars, loads each sidecar with 32
// closed-loop clients for total, and measures the last window.
func runTwoRuntimes(t testing.TB, weights string, total, window time.Duration) adaptiveRun {
	addr3, rt3 := startSlotsRuntime(t, 3)
	addr1, rt1 := startSlotsRuntime(t, 1)
	cfg, err := config.Parse("adaptive.yaml", []byte(fmt.Sprintf(`weights: %s
models:
  - name: m
    batching: {max_batch_size: 8, max_queue_delay: 2ms, timeout: 10s}
    versions:
      - version: "1"
        endpoints: [{address: %s, slots: 3}, {address: %s, slots: 3}]
`, weights, addr3, addr1)))
	if err != nil {
		t.Fatal(err)
	}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := xdsserver.New(xdsserver.Config{Epoch: 1})
	lrs := xdsserver.NewLRS(srv, xdsserver.LRSConfig{ReportInterval: 500 * time.Millisecond, WeightInterval: time.Second})
	if _, err := lrs.Update(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	cpCtx, cpCancel := context.WithCancel(context.Background())
	g := grpc.NewServer()
	srv.Register(cpCtx, g)
	lrs.Register(g)
	var cpWG sync.WaitGroup
	cpWG.Go(func() { _ = g.Serve(lis) })
	cpWG.Go(func() { lrs.Run(cpCtx) })
	t.Cleanup(func() { cpCancel(); g.Stop(); cpWG.Wait() })

	var urls, admins []string
	for i := range 2 {
		listen, admin := freeAddr(t), freeAddr(t)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- runCtx(ctx, []string{"-xds", lis.Addr().String(), "-node-id", fmt.Sprint("s", i), "-listen", listen, "-admin", admin, "-log-level", "error"}, io.Discard)
		}()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("sidecar %d: %v", i, err)
			}
		})
		waitFor(t, func() bool {
			resp, err := http.Get("http://" + admin + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
		urls = append(urls, "http://"+listen+"/v2/models/m/infer")
		admins = append(admins, admin)
	}

	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	body := []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[1,2]}]}`)
	var failures atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, url := range urls {
		for range 32 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					resp, err := client.Post(url, "application/json", bytes.NewReader(body))
					if err != nil {
						failures.Add(1)
						continue
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						failures.Add(1)
					}
				}
			})
		}
	}
	time.Sleep(total - window)
	r3, r1 := rt3.rows.Load(), rt1.rows.Load()
	start := time.Now()
	time.Sleep(window)
	d3, d1 := rt3.rows.Load()-r3, rt1.rows.Load()-r1
	elapsed := time.Since(start)
	var limits1 []int
	for _, a := range admins {
		limits1 = append(limits1, concurrencyLimit(t, a, addr1))
	}
	close(stop)
	wg.Wait()
	if f := failures.Load(); f > 0 {
		t.Errorf("%s: %d requests failed", weights, f)
	}
	run := adaptiveRun{rowsPerSec: float64(d3+d1) / elapsed.Seconds(), weights: lrs.Weights(), limits1: limits1}
	if d3+d1 > 0 {
		run.share = float64(d3) / float64(d3+d1)
	}
	return run
}

// concurrencyLimit reads a sidecar's /clusters and returns its
// concurrency limit for the endpoint at addr.
func concurrencyLimit(t testing.TB, admin, addr string) int {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/clusters")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var clusters []struct {
		Endpoints []struct {
			Address string `json:"address"`
			Limit   int    `json:"concurrency_limit"`
		} `json:"endpoints"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&clusters); err != nil {
		t.Fatalf("/clusters: %v", err)
	}
	for _, c := range clusters {
		for _, e := range c.Endpoints {
			if e.Address == addr {
				return e.Limit
			}
		}
	}
	t.Fatalf("/clusters of %s does not list %s", admin, addr)
	return 0
}

// TestAdaptiveWeights is the acceptance test of adaptive weights: a 3-slot
// and a 1-slot runtime, declared alike (3 slots, weight 1), behind two
// sidecars with -xds and a control plane on loopback. Within 15 s of load
// the control plane has weights for both, the 3-slot runtime computes 75%
// ± 11 points of the rows (3:1 within 15%), and each sidecar has lowered
// its concurrency for the 1-slot runtime below the declared 3 from the
// runtime's reported queue, as static weights never do. The rows/s gain
// this buys is measured by BenchmarkAdaptiveWeights, not asserted here
// (this machine is shared; the test also runs under -race).
func TestAdaptiveWeights(t *testing.T) {
	if testing.Short() {
		t.Skip("30 s of load")
	}
	const total, window = 15 * time.Second, 4 * time.Second
	static := runTwoRuntimes(t, config.WeightsStatic, total, window)
	adaptive := runTwoRuntimes(t, config.WeightsAdaptive, total, window)
	t.Logf("static equal weights: 3-slot share %.1f%%, %.0f rows/s, 1-slot limits %v", 100*static.share, static.rowsPerSec, static.limits1)
	t.Logf("adaptive weights:     3-slot share %.1f%%, %.0f rows/s, 1-slot limits %v (weights %+v)", 100*adaptive.share, adaptive.rowsPerSec, adaptive.limits1, adaptive.weights)
	if len(adaptive.weights) != 2 || adaptive.weights[0].Weight == 0 || adaptive.weights[1].Weight == 0 {
		t.Errorf("adaptive: no weights computed from the load reports: %+v", adaptive.weights)
	}
	if adaptive.share < 0.64 || adaptive.share > 0.86 {
		t.Errorf("adaptive: the 3-slot runtime computed %.1f%% of the rows in the last %v, want 75%% ± 11", 100*adaptive.share, window)
	}
	for i, l := range adaptive.limits1 {
		if l >= 3 {
			t.Errorf("adaptive: sidecar %d still sends up to %d batches at once to the 1-slot runtime; want fewer than the declared 3", i, l)
		}
	}
	for i, l := range static.limits1 {
		if l != 3 {
			t.Errorf("static: sidecar %d has concurrency limit %d for the 1-slot runtime; want the declared 3", i, l)
		}
	}
}

// BenchmarkAdaptiveWeights runs TestAdaptiveWeights' set-up with static
// equal weights and with adaptive weights, one after the other, and reports
// the rows/s of each over the last 4 s of 15 s of load and their ratio:
//
//	go test -run='^$' -bench=AdaptiveWeights -benchtime=1x ./sidecar
func BenchmarkAdaptiveWeights(b *testing.B) {
	const total, window = 15 * time.Second, 4 * time.Second
	for b.Loop() {
		static := runTwoRuntimes(b, config.WeightsStatic, total, window)
		adaptive := runTwoRuntimes(b, config.WeightsAdaptive, total, window)
		b.ReportMetric(static.rowsPerSec, "static-rows/s")
		b.ReportMetric(adaptive.rowsPerSec, "adaptive-rows/s")
		b.ReportMetric(adaptive.rowsPerSec/static.rowsPerSec, "ratio")
		b.ReportMetric(100*adaptive.share, "adaptive-share-%")
		b.ReportMetric(100*static.share, "static-share-%")
	}
}
