// Command demo runs batchmesh end to end on loopback and shows what dynamic
// batching does: it starts the reference model runtime with a simulated
// H200 BERT-base and a real MLP computed on this CPU, a sidecar in front of
// them, and drives closed-loop one-row clients first through the sidecar
// and then straight at the runtime, printing a live table each second and a
// final comparison. It finishes by itself in well under a minute.
//
// Usage:
//
//	go run ./examples/demo [-quick]
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/loadgen"
	"github.com/batchmesh/batchmesh/internal/modelrt"
	"github.com/batchmesh/batchmesh/internal/proxy"
	"github.com/batchmesh/batchmesh/internal/sidecar"
	"github.com/batchmesh/batchmesh/internal/telemetry"
)

func main() {
	quick := flag.Bool("quick", false, "shorter phases (for tests)")
	flag.Parse()
	if err := run(os.Stdout, *quick); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// scenario is one model driven through the sidecar and then directly.
type scenario struct {
	model   string
	about   string
	clients int
	cols    int
	openai  bool // POST /v1/embeddings with one string, not v2 infer
}

// demoConfig is the sidecar's configuration: the three models of the
// runtime at rtAddr, batched up to 64 rows.
func demoConfig(rtAddr string) (*config.Config, error) {
	return config.Parse("demo.yaml", []byte(fmt.Sprintf(`models:
  - name: bert
    batching: {max_batch_size: 64, max_queue_delay: 1ms, timeout: 5s}
    versions: [{version: "1", endpoints: [{address: %[1]s, slots: 1}]}]
  - name: mlp
    batching: {max_batch_size: 64, max_queue_delay: 1ms, timeout: 5s}
    versions: [{version: "1", endpoints: [{address: %[1]s, slots: 1}]}]
  - name: embed
    protocol: openai
    batching: {max_batch_size: 64, max_queue_delay: 1ms, timeout: 5s}
    versions: [{version: "1", endpoints: [{address: %[1]s, slots: 1}]}]
`, rtAddr)))
}

func run(out io.Writer, quick bool) error {
	phase := 7 * time.Second
	if quick {
		phase = 1500 * time.Millisecond
	}
	dir, err := os.MkdirTemp("", "batchmesh-demo")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	weights := filepath.Join(dir, "mlp.safetensors")
	if err := modelrt.GenerateWeightsFile(weights, 1, nil); err != nil {
		return err
	}
	mlpIn, err := mlpInputWidth(weights)
	if err != nil {
		return err
	}

	fmt.Fprintln(out, "batchmesh demo: a reference runtime and a sidecar on loopback")
	rtAddr, stopRuntime, err := startRuntime("bert=sim:h200/bert-base", "mlp=mlp:"+weights, "embed=embed:h200/minilm-l6")
	if err != nil {
		return err
	}
	defer stopRuntime()
	fmt.Fprintf(out, "  runtime  %s  models: bert (simulated H200 BERT-base, 1 slot), mlp (real MLP on this CPU),\n", rtAddr)
	fmt.Fprintf(out, "           %s  embed (simulated H200 MiniLM-L6 behind the OpenAI embeddings API)\n", strings.Repeat(" ", len(rtAddr)))
	cfg, err := demoConfig(rtAddr)
	if err != nil {
		return err
	}
	scURL, adminURL, stopSidecar, err := startSidecar(cfg)
	if err != nil {
		return err
	}
	defer stopSidecar()
	fmt.Fprintf(out, "  sidecar  %s  (admin %s), max_batch_size 64\n\n", strings.TrimPrefix(scURL, "http://"), strings.TrimPrefix(adminURL, "http://"))

	scenarios := []scenario{
		{model: "bert", about: "simulated H200 BERT-base", clients: 128, cols: 16},
		{model: "mlp", about: "real MLP on this CPU", clients: 64, cols: mlpIn},
		{model: "embed", about: "OpenAI embeddings, MiniLM", clients: 64, openai: true},
	}
	type row struct {
		sc              scenario
		sidecar, direct loadgen.Result
	}
	var rows []row
	fmt.Fprintf(out, "%-6s %-8s %6s %10s %10s %10s %11s %7s\n", "model", "via", "time", "rows/s", "p50", "p99", "batch rows", "queued")
	for _, sc := range scenarios {
		r := row{sc: sc}
		if r.sidecar, err = measure(out, sc, "sidecar", scURL, adminURL+"/metrics", "batchmesh", phase); err != nil {
			return err
		}
		if r.direct, err = measure(out, sc, "direct", "http://"+rtAddr, "http://"+rtAddr+"/metrics", "model", phase); err != nil {
			return err
		}
		rows = append(rows, r)
	}

	fmt.Fprintf(out, "\nComparison (closed loops of one-row requests, %s per phase, both phases in this run on this machine):\n\n", phase)
	fmt.Fprintf(out, "%-6s %-26s %8s %12s %12s %8s %10s %10s %8s\n", "model", "runtime", "clients", "sidecar r/s", "direct r/s", "ratio", "sidecar p99", "direct p99", "errors")
	for _, r := range rows {
		fmt.Fprintf(out, "%-6s %-26s %8d %12.0f %12.0f %7.1fx %10s %10s %8d\n", r.sc.model, r.sc.about, r.sc.clients,
			r.sidecar.RowsPerSec, r.direct.RowsPerSec, ratio(r.sidecar.RowsPerSec, r.direct.RowsPerSec),
			ms(r.sidecar.P99), ms(r.direct.P99), r.sidecar.Errors+r.direct.Errors)
	}
	fmt.Fprintln(out, "\nThe sidecar gathers the clients' rows (embed: their input strings) into batches of up to 64; the runtime computes a batch in about the")
	fmt.Fprintln(out, "time of one row, so rows/s multiply while latency falls. Try `go run ./examples/bench -h` for your own loads.")
	return nil
}

// measure runs sc's closed loop against base for phase, printing a line a
// second with the mean batch and queue that the metrics (prefix_batch_rows,
// prefix_queue_depth at metricsURL) show.
func measure(out io.Writer, sc scenario, via, base, metricsURL, prefix string, phase time.Duration) (loadgen.Result, error) {
	batchMetric, queueMetric := prefix+"_batch_rows", prefix+"_queue_depth"
	before := scrape(metricsURL)
	lc := loadgen.Config{URL: base + "/v2/models/" + sc.model + "/infer", Clients: sc.clients, Duration: phase, Cols: sc.cols}
	if sc.openai {
		lc = loadgen.Config{URL: base + "/v1/embeddings", Clients: sc.clients, Duration: phase, Protocol: "openai", Model: sc.model}
	}
	lc.OnProgress = func(s loadgen.Snapshot) {
		now := scrape(metricsURL)
		meanBatch := ratio(now[batchMetric+"_sum"]-before[batchMetric+"_sum"], now[batchMetric+"_count"]-before[batchMetric+"_count"])
		before = now
		fmt.Fprintf(out, "%-6s %-8s %5.0fs %10.0f %10s %10s %11.1f %7.0f\n", sc.model, via, s.Elapsed.Seconds(),
			s.RowsPerSec, ms(s.P50), ms(s.P99), meanBatch, now[queueMetric])
	}
	res, err := loadgen.Run(context.Background(), lc)
	if err != nil {
		return res, fmt.Errorf("%s via %s: %w", sc.model, via, err)
	}
	return res, nil
}

func startRuntime(flags ...string) (addr string, stop func(), err error) {
	models := map[string]modelrt.Model{}
	for _, f := range flags {
		name, m, err := modelrt.ParseModelFlag(f)
		if err != nil {
			return "", nil, err
		}
		models[name] = m
	}
	metrics, err := telemetry.NewMetrics()
	if err != nil {
		return "", nil, err
	}
	srv, err := modelrt.NewServer(modelrt.Config{Models: models, Slots: 1, MaxBatch: 256, Meter: metrics.Meter("model"), Metrics: metrics.Handler()})
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	go func() { _ = srv.Serve(ln) }()
	if err := srv.Warm(context.Background()); err != nil {
		return "", nil, err
	}
	return ln.Addr().String(), func() { _ = srv.Shutdown(context.Background()) }, nil
}

// startSidecar runs the sidecar the way the binary does (sidecar.New, then
// Run until stop), on loopback ports of its own.
func startSidecar(cfg *config.Config) (url, adminURL string, stop func(), err error) {
	metrics, err := telemetry.NewMetrics()
	if err != nil {
		return "", "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", "", nil, err
	}
	aln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		ln.Close()
		return "", "", nil, err
	}
	s, err := sidecar.New(sidecar.Config{
		Listener: ln, AdminListener: aln, Models: cfg, Source: "demo.yaml",
		Proxy: proxy.Config{Meter: metrics.Meter("sidecar"), Metrics: metrics.Handler()},
	})
	if err != nil {
		ln.Close()
		aln.Close()
		return "", "", nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	url, adminURL = "http://"+ln.Addr().String(), "http://"+aln.Addr().String()
	if err := waitReady(adminURL + "/readyz"); err != nil {
		cancel()
		return "", "", nil, errors.Join(err, <-done)
	}
	return url, adminURL, func() {
		cancel()
		if err := <-done; err != nil {
			fmt.Fprintln(os.Stderr, "demo: sidecar:", err)
		}
	}, nil
}

// waitReady polls url until it answers 200, for up to 10 seconds.
func waitReady(url string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sidecar not ready at %s after 10s: %w", url, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mlpInputWidth(path string) (int, error) {
	name, m, err := modelrt.ParseModelFlag("m=mlp:" + path)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	in := m.Inputs()
	if len(in) != 1 || len(in[0].Shape) != 2 {
		return 0, fmt.Errorf("unexpected MLP inputs %+v", in)
	}
	return int(in[0].Shape[1]), nil
}

// scrape reads a Prometheus text page into metric name (without labels) →
// sum of its samples.
func scrape(url string) map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get(url)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name := line
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name = line[:i]
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			out[name] += v
		}
	}
	return out
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/1e6, 'f', 2, 64) + "ms"
}
