package modelrt

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
	"testing"
	"time"

	"github.com/batchmesh/batchmesh/internal/codec"
	"github.com/batchmesh/batchmesh/internal/inference"
	"github.com/batchmesh/batchmesh/internal/telemetry"
)

// startServer serves cfg on a loopback port and returns its base URL. The
// server is warmed (ready) unless noWarm is set, and shut down at cleanup.
func startServer(t *testing.T, cfg Config, noWarm bool) (*Server, string) {
	t.Helper()
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	if !noWarm {
		if err := srv.Warm(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	return srv, "http://" + ln.Addr().String()
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func do(t *testing.T, method, url string, body []byte, headers map[string]string) reply {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{resp.StatusCode, resp.Header, b}
}

func weightsFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mlp.safetensors")
	if err := GenerateWeightsFile(path, 7, []int{8, 16, 4}); err != nil {
		t.Fatal(err)
	}
	return path
}

func parseModels(t *testing.T, flags ...string) map[string]Model {
	t.Helper()
	models := map[string]Model{}
	for _, f := range flags {
		name, m, err := ParseModelFlag(f)
		if err != nil {
			t.Fatal(err)
		}
		models[name] = m
	}
	return models
}

func fp32Input(name string, rows, cols int, seed int) inference.Tensor {
	data := make([]byte, 0, rows*cols*4)
	for i := range rows * cols {
		v := float32(math.Sin(float64(seed*1000 + i)))
		data = binary.LittleEndian.AppendUint32(data, math.Float32bits(v))
	}
	return inference.Tensor{Name: name, DataType: inference.FP32, Shape: []int64{int64(rows), int64(cols)}, Data: data}
}

// infer sends req (JSON or binary both ways) and decodes the response.
func infer(t *testing.T, url string, req *inference.Request, bin bool) inference.Response {
	t.Helper()
	if bin {
		req.Parameters = inference.Parameters{inference.ParamBinaryDataOutput: true}
	}
	body, hl, err := codec.EncodeRequest(nil, req, bin)
	if err != nil {
		t.Fatal(err)
	}
	headers := map[string]string{"Content-Type": "application/json"}
	if hl != codec.NoHeader {
		headers[codec.HeaderContentLength] = strconv.Itoa(hl)
	}
	r := do(t, http.MethodPost, url, body, headers)
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	rhl, err := codec.ParseHeaderLen([]byte(r.header.Get(codec.HeaderContentLength)))
	if err != nil {
		t.Fatal(err)
	}
	if bin != (rhl != codec.NoHeader) {
		t.Fatalf("asked binary=%v, got header length %d", bin, rhl)
	}
	resp, err := codec.DecodeResponse(r.body, rhl)
	if err != nil {
		t.Fatalf("decode response: %v\n%s", err, r.body)
	}
	return resp
}

// TestBatchedRowsMatchSingleRows is the runtime's core promise: a row's
// output bytes do not depend on the batch it rides in, for both kinds of
// model and both encodings.
func TestBatchedRowsMatchSingleRows(t *testing.T) {
	models := parseModels(t, "mlp=mlp:"+weightsFile(t), "sim=sim:linear/0s+0s")
	_, base := startServer(t, Config{Models: models}, false)
	for _, tc := range []struct {
		model string
		cols  int
	}{{"mlp", 8}, {"sim", 5}} {
		for _, bin := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/binary=%v", tc.model, bin), func(t *testing.T) {
				url := base + "/v2/models/" + tc.model + "/infer"
				in := fp32Input("input", 8, tc.cols, 3)
				batched := infer(t, url, &inference.Request{ID: "batch", Inputs: []inference.Tensor{in}}, bin)
				if batched.ID != "batch" {
					t.Errorf("id = %q, want the request's id echoed", batched.ID)
				}
				out := batched.Output("output")
				if out == nil || out.Shape[0] != 8 {
					t.Fatalf("batched output = %+v, want 8 rows", out)
				}
				off := out.RowOffsets(nil)
				inOff := in.RowOffsets(nil)
				for i := range 8 {
					one := in.Slice(inOff, i, i+1)
					single := infer(t, url, &inference.Request{Inputs: []inference.Tensor{one}}, bin)
					got := single.Output("output").Data
					want := out.Data[off[i]:off[i+1]]
					if !bytes.Equal(got, want) {
						t.Errorf("row %d alone = %x, in a batch of 8 = %x", i, got, want)
					}
				}
			})
		}
	}
}

// TestErrors checks that every kind of bad request gets the right 4xx and a
// v2 error body that names the problem.
func TestErrors(t *testing.T) {
	models := parseModels(t, "mlp=mlp:"+weightsFile(t), "sim=sim:linear/0s+0s")
	_, base := startServer(t, Config{Models: models, MaxBatch: 4, MaxBodyBytes: 4096}, false)
	infer := base + "/v2/models/mlp/infer"
	good := func(name, dt, shape, data string) string {
		return `{"inputs":[{"name":"` + name + `","datatype":"` + dt + `","shape":` + shape + `,"data":` + data + `}]}`
	}
	row := "[1,2,3,4,5,6,7,8]"
	tests := []struct {
		name    string
		method  string
		url     string
		body    string
		headers map[string]string
		status  int
		mention []string
	}{
		{name: "malformed JSON", url: infer, body: `{"inputs": [`, status: 400, mention: []string{"malformed JSON"}},
		{name: "shape disagrees with data", url: infer, body: good("input", "FP32", "[1,8]", "[1,2,3]"), status: 400, mention: []string{`"input"`, "8 elements"}},
		{name: "unknown datatype", url: infer, body: good("input", "FP31", "[1,8]", row), status: 400, mention: []string{`"FP31"`, "FP32"}},
		{name: "missing input", url: infer, body: good("other", "FP32", "[1,8]", row), status: 400, mention: []string{`"input"`}},
		{name: "no inputs", url: infer, body: `{"inputs":[]}`, status: 400, mention: []string{"no inputs"}},
		{name: "wrong row shape", url: infer, body: good("input", "FP32", "[2,4]", row), status: 400, mention: []string{`"input"`}},
		{name: "unknown model", url: base + "/v2/models/nope/infer", body: good("input", "FP32", "[1,8]", row), status: 404, mention: []string{`"nope"`, "mlp"}},
		{name: "unknown version", url: base + "/v2/models/mlp/versions/9/infer", body: good("input", "FP32", "[1,8]", row), status: 404, mention: []string{`"9"`}},
		{name: "oversized body", url: infer, body: good("input", "FP32", "[1,8]", "["+strings.Repeat("1,", 3000)+"1]"), status: 413, mention: []string{"4096"}},
		{name: "over max batch", url: base + "/v2/models/sim/infer", body: good("x", "INT32", "[5,1]", "[1,2,3,4,5]"), status: 400, mention: []string{"5 rows", "4"}},
		{name: "unknown output", url: infer, body: `{"inputs":[{"name":"input","datatype":"FP32","shape":[1,8],"data":` + row + `}],"outputs":[{"name":"logits"}]}`, status: 400, mention: []string{`"logits"`}},
		{name: "wrong method", method: http.MethodGet, url: infer, status: 405, mention: []string{"POST"}},
		{name: "unknown route", url: base + "/v3/whatever", status: 404, mention: []string{"/v3/whatever"}},
		{name: "raw binary request", url: infer, body: "xxxx", headers: map[string]string{codec.HeaderContentLength: "0"}, status: 400, mention: []string{"not supported"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			r := do(t, method, tc.url, []byte(tc.body), tc.headers)
			if r.status != tc.status {
				t.Errorf("status = %d, want %d (body %s)", r.status, tc.status, r.body)
			}
			var e struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal(r.body, &e); err != nil || e.Error == "" {
				t.Fatalf("body %q is not a v2 error: %v", r.body, err)
			}
			for _, m := range tc.mention {
				if !strings.Contains(e.Error, m) {
					t.Errorf("error %q does not mention %q", e.Error, m)
				}
			}
		})
	}
}

func TestMetadataAndHealth(t *testing.T) {
	models := parseModels(t, "bert=sim:h200/bert-base")
	metrics, err := telemetry.NewMetrics()
	if err != nil {
		t.Fatal(err)
	}
	srv, base := startServer(t, Config{Models: models, Meter: metrics.Meter("test"), Metrics: metrics.Handler()}, true)

	if r := do(t, http.MethodGet, base+"/v2/health/ready", nil, nil); r.status != http.StatusServiceUnavailable {
		t.Errorf("ready before warm-up: status %d, want 503", r.status)
	}
	if r := do(t, http.MethodGet, base+"/v2/health/live", nil, nil); r.status != http.StatusOK {
		t.Errorf("live before warm-up: status %d, want 200", r.status)
	}
	if err := srv.Warm(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/v2/health/ready", "/v2/models/bert/ready", "/v2/models/bert/versions/1/ready"} {
		if r := do(t, http.MethodGet, base+path, nil, nil); r.status != http.StatusOK {
			t.Errorf("%s after warm-up: status %d, want 200", path, r.status)
		}
	}

	var meta codec.ServerMetadata
	r := do(t, http.MethodGet, base+"/v2", nil, nil)
	if err := json.Unmarshal(r.body, &meta); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range meta.Extensions {
		found = found || e == codec.ExtensionBinaryTensorData
	}
	if !found {
		t.Errorf("GET /v2 extensions = %v, want %q among them", meta.Extensions, codec.ExtensionBinaryTensorData)
	}

	var mm codec.ModelMetadata
	r = do(t, http.MethodGet, base+"/v2/models/bert", nil, nil)
	if err := json.Unmarshal(r.body, &mm); err != nil {
		t.Fatal(err)
	}
	if mm.Name != "bert" || len(mm.Outputs) != 1 || mm.Outputs[0].Name != "output" || mm.Outputs[0].Datatype != "FP32" {
		t.Errorf("model metadata = %+v, want bert with one FP32 output", mm)
	}

	// One inference of BYTES rows, then the ORCA header and metrics.
	in := inference.Tensor{Name: "text", DataType: inference.Bytes, Shape: []int64{3}}
	for _, s := range []string{"a", "bb", "ccc"} {
		in.Data = binary.LittleEndian.AppendUint32(in.Data, uint32(len(s)))
		in.Data = append(in.Data, s...)
	}
	body, _, err := codec.EncodeRequest(nil, &inference.Request{Inputs: []inference.Tensor{in}}, false)
	if err != nil {
		t.Fatal(err)
	}
	r = do(t, http.MethodPost, base+"/v2/models/bert/infer", body, nil)
	if r.status != http.StatusOK {
		t.Fatalf("infer: %d %s", r.status, r.body)
	}
	orca := r.header.Get("endpoint-load-metrics")
	for _, key := range []string{"TEXT ", "application_utilization=", "rps_fractional=", "named_metrics.queue_depth="} {
		if !strings.Contains(orca, key) {
			t.Errorf("endpoint-load-metrics %q lacks %q", orca, key)
		}
	}

	r = do(t, http.MethodGet, base+"/metrics", nil, nil)
	text := string(r.body)
	for _, want := range []string{
		`model_rows_total{model="bert"} 3`, // the warm-up is not traffic
		`model_batch_rows_bucket{model="bert",le="4"} 1`,
		`model_inference_duration_seconds_count{model="bert"} 1`,
		`model_queue_depth{model="bert"} 0`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, text)
		}
	}
}

// blockingModel is a fake at the Model interface (the real models finish on
// their own; this one lets a test hold a batch in a slot). Its Infer signals
// entered and waits for release.
type blockingModel struct {
	entered chan struct{}
	release chan struct{}
}

func (b *blockingModel) Inputs() []TensorSpec {
	return []TensorSpec{{Name: "x", DataType: "INT32", Shape: []int64{-1}}}
}
func (b *blockingModel) Outputs() []TensorSpec {
	return []TensorSpec{{Name: "x", DataType: "INT32", Shape: []int64{-1}}}
}
func (b *blockingModel) Validate(*inference.Request) error { return nil }
func (b *blockingModel) Infer(ctx context.Context, req *inference.Request) ([]inference.Tensor, error) {
	if req.ID == "" { // warm-up and unlabelled requests pass straight through
		return req.Inputs, nil
	}
	b.entered <- struct{}{}
	select { // as the real models do, it stops when its context ends
	case <-b.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return req.Inputs, nil
}

func sendLabelled(t *testing.T, url, id string) reply {
	body := `{"id":"` + id + `","inputs":[{"name":"x","datatype":"INT32","shape":[1],"data":[7]}]}`
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return reply{status: -1, body: []byte(err.Error())}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, b}
}

// TestSlotsBoundConcurrency checks that no more than -slots batches run at
// once and that the others queue (model_queue_depth) rather than fail.
func TestSlotsBoundConcurrency(t *testing.T) {
	m := &blockingModel{entered: make(chan struct{}, 8), release: make(chan struct{})}
	srv, base := startServer(t, Config{Models: map[string]Model{"b": m}, Slots: 2}, false)
	url := base + "/v2/models/b/infer"
	var wg sync.WaitGroup
	replies := make([]reply, 5)
	done := make(chan int, len(replies))
	for i := range replies {
		wg.Go(func() { replies[i] = sendLabelled(t, url, fmt.Sprint("r", i)); done <- i })
	}
	<-m.entered
	<-m.entered
	// Three more are queued; wait until the server has counted them.
	waitFor(t, func() bool { return srv.queued() == 3 })
	if q := srv.queued(); q != 3 {
		t.Fatalf("queued = %d with 2 slots busy and 5 requests sent, want 3", q)
	}
	select {
	case <-m.entered:
		t.Fatal("a third batch entered the model while both slots were busy")
	default:
	}
	// The first answer's ORCA report counts the batches that still wait
	// once the slot it freed is taken: 2 of the 3, whether or not the next
	// one has taken it yet.
	m.release <- struct{}{}
	first := <-done
	if orca := replies[first].header.Get("endpoint-load-metrics"); !strings.Contains(orca, "named_metrics.queue_depth=2") {
		t.Errorf("first answer's endpoint-load-metrics %q; want queue_depth=2", orca)
	}
	for range len(replies) - 1 {
		m.release <- struct{}{}
	}
	wg.Wait()
	for i, r := range replies {
		if r.status != http.StatusOK {
			t.Errorf("request %d: status %d: %s", i, r.status, r.body)
		}
	}
}

// TestShutdownFinishesInFlight checks SIGTERM's contract: not ready at once,
// the request in flight still gets its answer.
func TestShutdownFinishesInFlight(t *testing.T) {
	m := &blockingModel{entered: make(chan struct{}, 1), release: make(chan struct{})}
	srv, err := NewServer(Config{Models: map[string]Model{"b": m}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if err := srv.Warm(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := make(chan reply, 1)
	go func() { got <- sendLabelled(t, "http://"+ln.Addr().String()+"/v2/models/b/infer", "inflight") }()
	<-m.entered
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	waitFor(t, func() bool { return !srv.Ready() })
	select {
	case err := <-shut:
		t.Fatalf("shutdown returned (%v) before the request in flight finished", err)
	default:
	}
	select {
	case m.release <- struct{}{}:
	case r := <-got: // the shutdown ended the computation instead
		t.Fatalf("request in flight answered %d %s during shutdown, before its computation ended", r.status, r.body)
	}
	if r := <-got; r.status != http.StatusOK || !strings.Contains(string(r.body), "inflight") {
		t.Errorf("request in flight during shutdown: %d %s", r.status, r.body)
	}
	if err := <-shut; err != nil {
		t.Errorf("shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("serve after shutdown: %v", err)
	}
}

// waitFor polls cond until it holds, failing the test after 10 s. It waits
// for a state another goroutine reaches, not for time to pass.
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
