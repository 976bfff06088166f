package observability_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batchmesh/batchmesh/internal/loadgen"
)

// TestPrometheusScrapes runs a real Prometheus server (Debian's prometheus
// package; .ci/run installs it) against the sidecar's admin /metrics, the
// runtime's /metrics and the control plane's admin /metrics, and queries
// its HTTP API after load and an ADS exchange.
func TestPrometheusScrapes(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("prometheus is not installed, but CI is set: .ci/run should install it (APT_PACKAGES): %v", err)
		}
		t.Skip("prometheus is not installed: apt-get install prometheus (Debian/Ubuntu), or put a prometheus binary on PATH")
	}
	st := startStack(t)
	prom := startPrometheus(t, bin, strings.TrimPrefix(st.adminURL, "http://"), strings.TrimPrefix(st.runtimeURL, "http://"),
		strings.TrimPrefix(st.cp.adminURL, "http://"))

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	prom.waitReady(ctx, t)
	res := st.load(t, cachedModel, loadgen.Config{Clients: 8, Requests: 400, Repeat: 0.25})
	if res.ByStatus[http.StatusOK] == 0 {
		t.Fatalf("no request succeeded: %v (first error %q)", res.ByStatus, res.FirstError)
	}
	st.cp.subscribe(t)

	checks := []struct {
		query string
		ok    func(v float64) bool
		want  string
	}{
		{query: "batchmesh_queue_depth", ok: func(float64) bool { return true }, want: "present"},
		{query: "sum(batchmesh_batch_rows_bucket)", ok: func(v float64) bool { return v > 0 }, want: "> 0"},
		{query: "sum(model_rows_total)", ok: func(v float64) bool { return v > 0 }, want: "> 0"},
		{query: "sum(batchmesh_xds_updates_total)", ok: func(v float64) bool { return v > 0 }, want: "> 0"},
		{query: "sum(up)", ok: func(v float64) bool { return v == 3 }, want: "3 (every target up)"},
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for _, c := range checks {
		for {
			v, found, err := prom.query(ctx, c.query)
			if err == nil && found && c.ok(v) {
				t.Logf("%s = %g", c.query, v)
				break
			}
			select {
			case <-ctx.Done():
				up, _, upErr := prom.query(context.Background(), "sum(up)")
				t.Fatalf("after 30s, %s: want %s; last answer %g (found %v, error %v); sum(up) = %g (%v) of 3 targets",
					c.query, c.want, v, found, err, up, upErr)
			case <-tick.C:
			}
		}
	}
}

// prometheus is a Prometheus server of the test's own.
type prometheus struct {
	url    string
	exited chan struct{} // closed when the process has ended
	out    *syncBuffer
}

// startPrometheus starts bin scraping the three targets every second, with
// its storage in a temporary directory, and kills it at cleanup. Its
// output is logged if the test fails.
func startPrometheus(t *testing.T, bin string, sidecarAdmin, runtime, controlPlaneAdmin string) *prometheus {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: batchmesh-sidecar
    static_configs: [{targets: [%q]}]
  - job_name: batchmesh-runtime
    static_configs: [{targets: [%q]}]
  - job_name: batchmesh-controlplane
    static_configs: [{targets: [%q]}]
`, sidecarAdmin, runtime, controlPlaneAdmin)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	cmd := exec.Command(bin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn",
	)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &prometheus{url: "http://" + addr, exited: make(chan struct{}), out: out}
	go func() { defer close(p.exited); _ = cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("prometheus output:\n%s", out.String())
		}
	})
	return p
}

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln := listen(t)
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// waitReady polls /-/ready until Prometheus answers 200 or ctx ends.
func (p *prometheus) waitReady(ctx context.Context, t *testing.T) {
	t.Helper()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url+"/-/ready", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("prometheus at %s not ready: %v", p.url, err)
		case <-p.exited:
			t.Fatalf("prometheus exited before it was ready:\n%s", p.out.String())
		case <-tick.C:
		}
	}
}

// query runs an instant query and returns the value of its first sample;
// found is false when the result is empty.
func (p *prometheus) query(ctx context.Context, q string) (v float64, found bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url+"/api/v1/query?query="+url.QueryEscape(q), nil)
	if err != nil {
		return 0, false, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return 0, false, fmt.Errorf("query %q: %s: %w", q, resp.Status, err)
	}
	if body.Status != "success" {
		return 0, false, fmt.Errorf("query %q: %s: %s", q, body.Status, body.Error)
	}
	if body.Data.ResultType != "vector" {
		return 0, false, fmt.Errorf("query %q: result type %q, want vector", q, body.Data.ResultType)
	}
	if len(body.Data.Result) == 0 {
		return 0, false, nil
	}
	s, ok := body.Data.Result[0].Value[1].(string)
	if !ok {
		return 0, false, fmt.Errorf("query %q: sample value %v is not a string", q, body.Data.Result[0].Value[1])
	}
	v, err = strconv.ParseFloat(s, 64)
	return v, true, err
}

// syncBuffer is a bytes.Buffer that the process's output copier and the
// test may use at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
