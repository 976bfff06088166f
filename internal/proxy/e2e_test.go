package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/batchmesh/batchmesh/internal/batch"
	"github.com/batchmesh/batchmesh/internal/codec"
	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/inference"
	"github.com/batchmesh/batchmesh/internal/modelrt"
	"github.com/batchmesh/batchmesh/internal/runtimetest"
	"github.com/batchmesh/batchmesh/internal/telemetry"
)

// runtime is a real reference model runtime on a loopback port, with its
// metrics at /metrics.
type runtime struct {
	*runtimetest.Runtime
	addr string
}

// startRuntime serves the models of flags with cfg (its Models replaced).
func startRuntime(t *testing.T, cfg modelrt.Config, flags ...string) *runtime {
	t.Helper()
	cfg.Models = runtimetest.Models(t, flags...)
	rt := runtimetest.Start(t, cfg, runtimetest.WithMetrics())
	return &runtime{Runtime: rt, addr: rt.Addr}
}

// stop stops the runtime mid-test, as if it had died.
func (rt *runtime) stop() { rt.Stop() }

// sidecar is the proxy serving on loopback ports.
type sidecar struct {
	p           *Proxy
	srv, admin  *fasthttp.Server
	url, adminU string
	served      chan error
}

func startSidecar(t *testing.T, yaml string) *sidecar {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return startSidecarConfig(t, Config{Models: cfg})
}

// startSidecarConfig serves a proxy built from pc (with metrics, and a fast
// probe interval unless pc has one) on loopback ports.
func startSidecarConfig(t *testing.T, pc Config) *sidecar {
	t.Helper()
	metrics, err := telemetry.NewMetrics()
	if err != nil {
		t.Fatal(err)
	}
	pc.Meter, pc.Metrics = metrics.Meter("sidecar"), metrics.Handler()
	if pc.ProbeInterval == 0 {
		pc.ProbeInterval = 50 * time.Millisecond
	}
	p, err := New(pc)
	if err != nil {
		t.Fatal(err)
	}
	p.Probe(context.Background())
	s := &sidecar{p: p, srv: p.NewServer(), admin: p.NewAdminServer(), served: make(chan error, 1)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	aln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.url, s.adminU = "http://"+ln.Addr().String(), "http://"+aln.Addr().String()
	// Served as the sidecar serves it: the pass-through fast path first.
	fast := p.FastPath(ln, s.srv)
	go func() { s.served <- s.srv.Serve(fast) }()
	go func() { _ = s.admin.Serve(aln) }()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.RunProbes(ctx) }()
	t.Cleanup(func() {
		_ = s.srv.Shutdown()
		_ = fast.Wait(context.Background())
		_ = p.Drain(context.Background())
		cancel()
		<-done
		_ = s.admin.Shutdown()
		p.Close()
	})
	return s
}

var client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}}

type reply struct {
	status int
	header http.Header
	body   []byte
	err    error
}

func post(url string, body []byte, headers map[string]string) reply {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return reply{err: err}
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return reply{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, header: resp.Header, body: b, err: err}
}

func get(t *testing.T, url string) reply {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, header: resp.Header, body: b}
}

// rowsRequest builds rows of FP32 values unique to (client, seq).
func rowsRequest(rows, cols, client, seq int) inference.Request {
	data := make([]byte, 0, rows*cols*4)
	for i := range rows * cols {
		v := float32(math.Sin(float64(client*1_000_003 + seq*1009 + i)))
		data = binary.LittleEndian.AppendUint32(data, math.Float32bits(v))
	}
	return inference.Request{
		ID:     fmt.Sprintf("c%d-%d", client, seq),
		Inputs: []inference.Tensor{{Name: "input", DataType: inference.FP32, Shape: []int64{int64(rows), int64(cols)}, Data: data}},
	}
}

// send encodes req (JSON, or binary both ways) and returns the reply and
// the decoded response when the status is 200.
func send(url string, req inference.Request, bin bool, headers map[string]string) (reply, inference.Response, error) {
	if bin {
		req.Parameters = inference.Parameters{inference.ParamBinaryDataOutput: true}
	}
	body, hl, err := codec.EncodeRequest(nil, &req, bin)
	if err != nil {
		return reply{}, inference.Response{}, err
	}
	h := map[string]string{}
	for k, v := range headers {
		h[k] = v
	}
	if hl != codec.NoHeader {
		h[codec.HeaderContentLength] = strconv.Itoa(hl)
	}
	r := post(url, body, h)
	if r.err != nil || r.status != http.StatusOK {
		return r, inference.Response{}, r.err
	}
	rhl, err := codec.ParseHeaderLen([]byte(r.header.Get(codec.HeaderContentLength)))
	if err != nil {
		return r, inference.Response{}, err
	}
	resp, err := codec.DecodeResponse(r.body, rhl)
	return r, resp, err
}

func modelYAML(name, addr string, extra string) string {
	return fmt.Sprintf(`models:
  - name: %s
    batching: {max_batch_size: 16, max_queue_delay: 1ms, timeout: 10s%s}
    versions:
      - version: "1"
        endpoints:
          - {address: %s}
`, name, extra, addr)
}

// metricValue sums a Prometheus sample's value over the lines that start
// with prefix.
func metricValue(t *testing.T, url, prefix string) float64 {
	t.Helper()
	r := get(t, url)
	sum, found := 0.0, false
	for _, line := range strings.Split(string(r.body), "\n") {
		if strings.HasPrefix(line, prefix) {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", line, err)
			}
			sum += v
			found = true
		}
	}
	if !found {
		t.Fatalf("no metric %s at %s", prefix, url)
	}
	return sum
}

// TestBatchedThroughSidecarMatchesDirect drives 64 concurrent clients with
// mixed batch sizes through the sidecar and checks every row against a
// direct call to the same runtime, for the real MLP and the simulator, in
// JSON and binary.
func TestBatchedThroughSidecarMatchesDirect(t *testing.T) {
	weights := filepath.Join(t.TempDir(), "mlp.safetensors")
	if err := modelrt.GenerateWeightsFile(weights, 5, []int{16, 32, 8}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, flag string
	}{
		{"mlp", "m=mlp:" + weights},
		{"sim", "m=sim:linear/2ms+50us"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := startRuntime(t, modelrt.Config{MaxBatch: 16}, tc.flag)
			sc := startSidecar(t, modelYAML("m", rt.addr, ""))
			viaSidecar := sc.url + "/v2/models/m/infer"
			direct := "http://" + rt.addr + "/v2/models/m/infer"
			const clients, perClient = 64, 6
			var wg sync.WaitGroup
			errs := make(chan error, clients*perClient)
			for c := range clients {
				wg.Go(func() {
					for s := range perClient {
						rows := 1 + (c+s)%5
						if c%16 == 0 && s == 0 {
							rows = 40 // larger than max_batch_size: split and reassembled
						}
						req := rowsRequest(rows, 16, c, s)
						bin := (c+s)%2 == 0
						r, got, err := send(viaSidecar, req, bin, nil)
						if err == nil && r.status != http.StatusOK {
							err = fmt.Errorf("status %d %s", r.status, r.body)
						}
						if err != nil {
							errs <- fmt.Errorf("client %d req %d via sidecar: %w", c, s, err)
							continue
						}
						if got.ID != req.ID {
							errs <- fmt.Errorf("id %q echoed as %q", req.ID, got.ID)
						}
						var want inference.Response
						if rows <= 16 {
							_, want, err = send(direct, req, false, nil)
						} else { // the runtime refuses more than 16 rows: compare row by row
							want, err = directRows(direct, req)
						}
						if err != nil {
							errs <- err
							continue
						}
						if g, w := got.Output("output"), want.Output("output"); g == nil || w == nil || !bytes.Equal(g.Data, w.Data) {
							errs <- fmt.Errorf("client %d req %d (%d rows): sidecar answer differs from direct", c, s, rows)
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			batches := metricValue(t, "http://"+rt.addr+"/metrics", "model_batch_rows_count")
			rows := metricValue(t, "http://"+rt.addr+"/metrics", "model_batch_rows_sum")
			// direct calls ran one request per batch; the sidecar's batches
			// are the rest. Even counting the direct ones, the mean is > 1.
			if mean := rows / batches; mean < 1.5 {
				t.Errorf("runtime mean batch rows = %.2f, want batches to form (> 1.5)", mean)
			}
			sidecarRows := metricValue(t, sc.adminU+"/metrics", "batchmesh_batch_rows_sum")
			sidecarBatches := metricValue(t, sc.adminU+"/metrics", "batchmesh_batch_rows_count")
			if mean := sidecarRows / sidecarBatches; mean < 3 {
				t.Errorf("sidecar mean batch rows = %.2f over %v batches, want well above 1", mean, sidecarBatches)
			}
		})
	}
}

// directRows calls the runtime row by row and stacks the answers.
func directRows(url string, req inference.Request) (inference.Response, error) {
	in := req.Inputs[0]
	off := in.RowOffsets(nil)
	var parts []inference.Tensor
	for i := range int(in.Shape[0]) {
		one := inference.Request{Inputs: []inference.Tensor{in.Slice(off, i, i+1)}}
		r, resp, err := send(url, one, false, nil)
		if err == nil && r.status != http.StatusOK {
			err = fmt.Errorf("status %d %s", r.status, r.body)
		}
		if err != nil {
			return inference.Response{}, fmt.Errorf("direct row %d: %w", i, err)
		}
		parts = append(parts, *resp.Output("output"))
	}
	out, err := inference.Concat(parts)
	return inference.Response{Outputs: []inference.Tensor{out}}, err
}

func errorOf(t *testing.T, r reply) string {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(r.body, &e); err != nil || e.Error == "" {
		t.Fatalf("status %d body %q is not a v2 error", r.status, r.body)
	}
	return e.Error
}

func TestDeadlineQueueFullAndErrors(t *testing.T) {
	rt := startRuntime(t, modelrt.Config{}, "slow=sim:linear/200ms+0s")
	sc := startSidecar(t, `models:
  - name: slow
    batching: {max_batch_size: 4, max_queue_size: 8, timeout: 5s}
    versions:
      - version: "1"
        endpoints: [{address: `+rt.addr+`}]
`)
	url := sc.url + "/v2/models/slow/infer"
	// Occupy the runtime: one batch running and one in transit.
	var wg sync.WaitGroup
	for c := range 2 {
		wg.Go(func() { _, _, _ = send(url, rowsRequest(4, 2, 100+c, 0), false, nil) })
	}
	waitFor(t, func() bool {
		eps, _ := sc.p.st.Load().models["slow"].versions[0].lane.Status()
		return eps[0].InFlight == 2
	})

	t.Run("deadline gives 504", func(t *testing.T) {
		r, _, _ := send(url, rowsRequest(1, 2, 1, 0), false, map[string]string{HeaderTimeoutMs: "20"})
		if r.status != http.StatusGatewayTimeout {
			t.Fatalf("status %d, want 504: %s", r.status, r.body)
		}
		if msg := errorOf(t, r); !strings.Contains(msg, "deadline") {
			t.Errorf("error %q does not say deadline", msg)
		}
	})
	t.Run("full queue gives 429 with Retry-After", func(t *testing.T) {
		// Fill the queue (8 rows) and send one more.
		var fill sync.WaitGroup
		for c := range 2 {
			fill.Go(func() { _, _, _ = send(url, rowsRequest(4, 2, 200+c, 0), false, nil) })
		}
		waitFor(t, func() bool { _, q := sc.p.st.Load().models["slow"].versions[0].lane.Status(); return q == 8 })
		r, _, _ := send(url, rowsRequest(1, 2, 3, 0), false, nil)
		if r.status != http.StatusTooManyRequests {
			t.Fatalf("status %d, want 429: %s", r.status, r.body)
		}
		if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 {
			t.Errorf("Retry-After = %q, want a whole number of seconds", r.header.Get("Retry-After"))
		}
		if msg := errorOf(t, r); !strings.Contains(msg, "queue full") {
			t.Errorf("error %q does not say the queue is full", msg)
		}
		fill.Wait()
	})
	wg.Wait()
	t.Run("bad input is a 400 naming it", func(t *testing.T) {
		r := post(url, []byte(`{"inputs":[{"name":"input","datatype":"FP32","shape":[1,3],"data":[1,2]}]}`), nil)
		if r.status != http.StatusBadRequest || !strings.Contains(errorOf(t, r), `"input"`) {
			t.Errorf("status %d %s, want 400 naming the input", r.status, r.body)
		}
	})
	t.Run("unknown model is a 404", func(t *testing.T) {
		r := post(sc.url+"/v2/models/nope/infer", []byte(`{}`), nil)
		if r.status != http.StatusNotFound || !strings.Contains(errorOf(t, r), `"nope"`) {
			t.Errorf("status %d %s, want 404 naming the model", r.status, r.body)
		}
	})
}

// TestBadRowFailsAlone sends rows together where one is refused by the
// runtime (NaN, which the MLP rejects): only that caller gets the 400.
func TestBadRowFailsAlone(t *testing.T) {
	weights := filepath.Join(t.TempDir(), "mlp.safetensors")
	if err := modelrt.GenerateWeightsFile(weights, 5, []int{4, 8, 2}); err != nil {
		t.Fatal(err)
	}
	rt := startRuntime(t, modelrt.Config{}, "m=mlp:"+weights)
	sc := startSidecar(t, modelYAML("m", rt.addr, ""))
	url := sc.url + "/v2/models/m/infer"
	var wg sync.WaitGroup
	replies := make([]reply, 8)
	for c := range 8 {
		wg.Go(func() {
			req := rowsRequest(1, 4, c, 0)
			if c == 5 {
				binary.LittleEndian.PutUint32(req.Inputs[0].Data, math.Float32bits(float32(math.NaN())))
				req.Parameters = nil
				body, hl, _ := codec.EncodeRequest(nil, &req, true)
				replies[c] = post(url, body, map[string]string{codec.HeaderContentLength: strconv.Itoa(hl)})
				return
			}
			replies[c], _, _ = send(url, req, false, nil)
		})
	}
	wg.Wait()
	for c, r := range replies {
		if c == 5 {
			if r.status != http.StatusBadRequest || !strings.Contains(strings.ToLower(errorOf(t, r)), "nan") {
				t.Errorf("poisoned request: status %d %s, want 400 about NaN", r.status, r.body)
			}
			continue
		}
		if r.status != http.StatusOK {
			t.Errorf("request %d: status %d %s, want 200 (one bad row must fail alone)", c, r.status, r.body)
		}
	}
}

// TestDeadRuntime: with the only runtime gone, requests get 503 at once;
// with a second runtime, a failed batch is retried there and succeeds.
func TestDeadRuntime(t *testing.T) {
	a := startRuntime(t, modelrt.Config{}, "m=sim:linear/1ms+0s")
	b := startRuntime(t, modelrt.Config{}, "m=sim:linear/1ms+0s")
	sc := startSidecar(t, `models:
  - name: m
    batching: {max_batch_size: 8, timeout: 5s}
    versions:
      - version: "1"
        endpoints: [{address: `+a.addr+`}, {address: `+b.addr+`}]
`)
	url := sc.url + "/v2/models/m/infer"
	a.stop()
	for i := range 20 {
		r, _, err := send(url, rowsRequest(1, 3, i, 0), false, nil)
		if err != nil || r.status != http.StatusOK {
			t.Fatalf("request %d with one runtime dead: %v %d %s, want 200 via the other", i, err, r.status, r.body)
		}
	}
	b.stop()
	waitFor(t, func() bool { return get(t, sc.adminU+"/readyz").status == http.StatusServiceUnavailable })
	r, _, _ := send(url, rowsRequest(1, 3, 1, 1), false, nil)
	if r.status != http.StatusServiceUnavailable {
		t.Fatalf("with every runtime dead: status %d %s, want 503", r.status, r.body)
	}
	if r.header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
}

// TestDrainUnderLoadLosesNothing stops the sidecar the way SIGTERM does
// while 32 clients keep sending: every request the sidecar accepted gets a
// 200, and the others are refused at the socket, never dropped midway.
func TestDrainUnderLoadLosesNothing(t *testing.T) {
	rt := startRuntime(t, modelrt.Config{}, "m=sim:linear/3ms+20us")
	sc := startSidecar(t, modelYAML("m", rt.addr, ""))
	url := sc.url + "/v2/models/m/infer"
	var ok, refused, bad atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := range 32 {
		wg.Go(func() {
			for s := 0; ; s++ {
				select {
				case <-stop:
					return
				default:
				}
				r, _, err := send(url, rowsRequest(1, 4, c, s), false, nil)
				switch {
				case err == nil && r.status == http.StatusOK:
					ok.Add(1)
				case err != nil:
					refused.Add(1) // connection refused or closed before the request was read
				default:
					bad.Add(1)
					t.Errorf("during drain: status %d %s", r.status, r.body)
				}
			}
		})
	}
	waitFor(t, func() bool { return ok.Load() > 200 })
	if err := sc.srv.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := sc.p.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	answered := metricValue(t, sc.adminU+"/metrics", `batchmesh_requests_total{cache="bypass",code="200",model="m"}`)
	if int64(answered) != ok.Load() {
		t.Errorf("sidecar answered %v requests with 200, clients received %d: some were lost", answered, ok.Load())
	}
	if bad.Load() != 0 {
		t.Errorf("%d requests failed with an HTTP error during drain", bad.Load())
	}
	if get(t, sc.adminU+"/readyz").status != http.StatusServiceUnavailable {
		t.Error("/readyz still ready after drain")
	}
}

func TestAdmin(t *testing.T) {
	rt := startRuntime(t, modelrt.Config{}, "m=sim:linear/1ms+0s")
	sc := startSidecar(t, modelYAML("m", rt.addr, ""))
	if r := get(t, sc.adminU+"/healthz"); r.status != http.StatusOK {
		t.Errorf("/healthz: %d", r.status)
	}
	if r := get(t, sc.adminU+"/readyz"); r.status != http.StatusOK {
		t.Errorf("/readyz: %d %s", r.status, r.body)
	}
	var dump struct {
		Models []struct {
			Name     string
			Batching map[string]any
			Versions []struct {
				Version   string
				Endpoints []struct{ Address string }
			}
		}
	}
	if err := json.Unmarshal(get(t, sc.adminU+"/config_dump").body, &dump); err != nil {
		t.Fatal(err)
	}
	if len(dump.Models) != 1 || dump.Models[0].Batching["max_batch_size"] != 16.0 || dump.Models[0].Versions[0].Endpoints[0].Address != rt.addr {
		t.Errorf("config_dump = %+v", dump)
	}
	var clusters []clusterStatus
	if r := get(t, sc.adminU+"/clusters"); json.Unmarshal(r.body, &clusters) != nil || len(clusters) != 1 || clusters[0].Cluster != "batchmesh|m|1" ||
		clusters[0].Policy == nil || clusters[0].Policy.Policy != batch.PolicyCohort || clusters[0].Policy.Cohort == nil {
		t.Errorf("/clusters: want the one cluster with the cohort policy's state: %s", r.body)
	}
	_, _, _ = send(sc.url+"/v2/models/m/infer", rowsRequest(1, 2, 0, 0), false, nil)
	text := string(get(t, sc.adminU+"/metrics").body)
	for _, name := range []string{"batchmesh_requests_total", "batchmesh_request_duration_seconds_bucket", "batchmesh_queue_depth",
		"batchmesh_queue_wait_seconds_bucket", "batchmesh_batch_rows_bucket", "batchmesh_upstream_requests_total",
		"batchmesh_upstream_duration_seconds_bucket", "batchmesh_endpoint_weight"} {
		if !strings.Contains(text, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	// Pass-through of metadata to the runtime.
	var mm codec.ModelMetadata
	if err := json.Unmarshal(get(t, sc.url+"/v2/models/m").body, &mm); err != nil || len(mm.Outputs) != 1 {
		t.Errorf("metadata via the sidecar: %+v %v", mm, err)
	}
	if r := post(sc.adminU+"/drain", nil, nil); r.status != http.StatusOK {
		t.Errorf("POST /drain: %d", r.status)
	}
	if r := get(t, sc.adminU+"/readyz"); r.status != http.StatusServiceUnavailable || !strings.Contains(string(r.body), "draining") {
		t.Errorf("/readyz after drain: %d %s", r.status, r.body)
	}
}

// waitFor polls cond until it holds, failing after 10 s. It waits for a
// state other goroutines reach, not for time to pass.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	timeout := time.After(10 * time.Second)
	for !cond() {
		select {
		case <-tick.C:
		case <-timeout:
			t.Fatal("condition not reached within 10s")
		}
	}
}

// TestNotSupportedYet: parts of the schema the sidecar cannot serve yet are
// refused at start-up with a clear error, never silently ignored.
func TestNotSupportedYet(t *testing.T) {
	for _, tc := range []struct{ name, yaml, mention string }{
		{"adaptive", "weights: adaptive\nmodels:\n  - name: e\n    versions: [{version: \"1\", endpoints: [{address: 127.0.0.1:1}]}]\n", "adaptive needs the control plane"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse("t.yaml", []byte(tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := New(Config{Models: cfg}); err == nil || !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("New: %v, want an error containing %q", err, tc.mention)
			}
		})
	}
}

// TestCacheNeedsBatching: a cache on a pass-through model would never be
// used (pass-through does not decode), so the config is refused.
func TestCacheNeedsBatching(t *testing.T) {
	cfg, err := config.Parse("t.yaml", []byte("models:\n  - name: e\n    batching: {max_batch_size: 0}\n    cache: {enabled: true}\n    versions: [{version: \"1\", endpoints: [{address: 127.0.0.1:1}]}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Models: cfg}); err == nil || !strings.Contains(err.Error(), "needs batching") {
		t.Errorf("New: %v, want the cache-needs-batching error", err)
	}
}
