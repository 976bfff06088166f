package upstream_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/batchmesh/batchmesh/internal/codec"
	"github.com/batchmesh/batchmesh/internal/inference"
	"github.com/batchmesh/batchmesh/internal/modelrt"
	"github.com/batchmesh/batchmesh/internal/runtimetest"
	"github.com/batchmesh/batchmesh/internal/upstream"
)

func TestProbe(t *testing.T) {
	_, sim := simModel(t, "sim=sim:linear/0s+0s")
	models := map[string]modelrt.Model{"sim": sim}
	tests := []struct {
		name       string
		addr       string
		wantBinary bool
		wantKind   inference.Kind // of the error; KindInternal for none
	}{
		{name: "reference runtime", addr: runtimetest.Start(t, modelrt.Config{Models: models}).Addr, wantBinary: true},
		{name: "runtime without the extension", addr: serve(t, (&fakeRuntime{model: sim}).handle)},
		{name: "not warmed up", addr: runtimetest.Start(t, modelrt.Config{Models: models}, runtimetest.Cold()).Addr, wantBinary: true, wantKind: inference.KindUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := upstream.New(upstream.Config{})
			defer c.Close()
			if c.Binary(tt.addr) {
				t.Error("Binary before any Probe = true")
			}
			err := c.Probe(context.Background(), tt.addr)
			if tt.wantKind == inference.KindInternal {
				if err != nil {
					t.Fatalf("Probe: %v", err)
				}
			} else {
				wantKind(t, err, tt.wantKind)
				if errors.Is(err, upstream.ErrConnect) {
					t.Errorf("a runtime that answered 'not ready' matches ErrConnect: %v", err)
				}
			}
			if got := c.Binary(tt.addr); got != tt.wantBinary {
				t.Errorf("Binary = %v, want %v", got, tt.wantBinary)
			}
		})
	}
}

// TestInferEncodings checks that binary and JSON calls, to the reference
// runtime and to one without the extension, give the same output bytes.
func TestInferEncodings(t *testing.T) {
	_, sim := simModel(t, "sim=sim:linear/0s+0s")
	ref := runtimetest.Start(t, modelrt.Config{Models: map[string]modelrt.Model{"sim": sim}}).Addr
	jsonOnly := &fakeRuntime{model: sim}
	jsonAddr := serve(t, jsonOnly.handle)
	binFake := &fakeRuntime{model: sim, binary: true}
	binAddr := serve(t, binFake.handle)

	probed := upstream.New(upstream.Config{})
	defer probed.Close()
	for _, addr := range []string{ref, jsonAddr, binAddr} {
		if err := probed.Probe(context.Background(), addr); err != nil {
			t.Fatalf("Probe %s: %v", addr, err)
		}
	}
	unprobed := upstream.New(upstream.Config{})
	defer unprobed.Close()

	req := fp32Request(8, 16, 1)
	calls := []struct {
		name   string
		client *upstream.Client
		addr   string
	}{
		{name: "reference, binary", client: probed, addr: ref},
		{name: "reference, JSON before a probe", client: unprobed, addr: ref},
		{name: "runtime without the extension, JSON", client: probed, addr: jsonAddr},
		{name: "fake with the extension, binary", client: probed, addr: binAddr},
	}
	var want []byte
	for _, call := range calls {
		reply, err := call.client.Infer(context.Background(), call.addr, req, []upstream.Header{{Key: "traceparent", Value: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}})
		if err != nil {
			t.Fatalf("%s: %v", call.name, err)
		}
		if reply.Status != http.StatusOK {
			t.Errorf("%s: status %d", call.name, reply.Status)
		}
		out := reply.Response.Output(modelrt.SimOutput)
		if out == nil || out.DataType != inference.FP32 || fmt.Sprint(out.Shape) != "[8 16]" {
			t.Fatalf("%s: output %+v, want FP32 [8 16]", call.name, out)
		}
		if want == nil {
			want = out.Data
		} else if !bytes.Equal(out.Data, want) {
			t.Errorf("%s: output bytes differ from the first call's", call.name)
		}
		if call.addr == ref && !strings.HasPrefix(reply.LoadReport, "TEXT ") {
			t.Errorf("%s: LoadReport %q, want the runtime's ORCA TEXT report", call.name, reply.LoadReport)
		}
	}

	for _, tt := range []struct {
		name string
		fake *fakeRuntime
		want fakeCall
	}{
		{name: "JSON", fake: jsonOnly, want: fakeCall{contentType: "application/json"}},
		{name: "binary", fake: binFake, want: fakeCall{contentType: "application/octet-stream", binaryOutput: true}},
	} {
		seen := tt.fake.calls()
		if len(seen) != 1 {
			t.Fatalf("%s fake saw %d calls, want 1", tt.name, len(seen))
		}
		got := seen[0]
		if got.contentType != tt.want.contentType || (got.headerLen != "") != tt.want.binaryOutput || got.binaryOutput != tt.want.binaryOutput {
			t.Errorf("%s fake saw %+v; want Content-Type %s, binary header and output %v", tt.name, got, tt.want.contentType, tt.want.binaryOutput)
		}
		if got.traceparent == "" || got.path != "/v2/models/sim/infer" {
			t.Errorf("%s fake saw path %q, traceparent %q", tt.name, got.path, got.traceparent)
		}
	}
}

// TestInferOwnsOutputs checks that a binary reply's outputs stay unchanged
// while the client serves other calls (they do not alias pooled buffers),
// and that the request is left as it was.
func TestInferOwnsOutputs(t *testing.T) {
	addr := startSim(t, "linear/0s+0s", 0)
	c := upstream.New(upstream.Config{})
	defer c.Close()
	if err := c.Probe(context.Background(), addr); err != nil {
		t.Fatal(err)
	}
	req := fp32Request(4, 16, 2)
	req.Parameters = inference.Parameters{"note": "kept"}
	first, err := c.Infer(context.Background(), addr, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	kept := bytes.Clone(first.Response.Outputs[0].Data)
	for i := range 20 {
		if _, err := c.Infer(context.Background(), addr, fp32Request(4, 16, 100+i), nil); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(first.Response.Outputs[0].Data, kept) {
		t.Error("a reply's output changed after later calls")
	}
	if len(req.Parameters) != 1 || req.Parameters["note"] != "kept" {
		t.Errorf("Infer modified the request's parameters: %v", req.Parameters)
	}
}

func TestInferRuntimeErrors(t *testing.T) {
	ready := startSim(t, "linear/0s+0s", 4)
	_, sim := simModel(t, "sim=sim:linear/0s+0s")
	cold := runtimetest.Start(t, modelrt.Config{Models: map[string]modelrt.Model{"sim": sim}}, runtimetest.Cold()).Addr

	unknown := fp32Request(1, 16, 3)
	unknown.Model = "nope"
	badVersion := fp32Request(1, 16, 3)
	badVersion.Version = "9"
	tests := []struct {
		name       string
		addr       string
		req        *inference.Request
		wantKind   inference.Kind
		wantStatus int
		wantMsg    string // the runtime's own text, carried in the message
	}{
		{name: "batch over the runtime's limit", addr: ready, req: fp32Request(5, 16, 3),
			wantKind: inference.KindInvalid, wantStatus: 400, wantMsg: "batch of 5 rows is over this runtime's limit of 4"},
		{name: "unknown model", addr: ready, req: unknown,
			wantKind: inference.KindNotFound, wantStatus: 404, wantMsg: `unknown model "nope"`},
		{name: "unknown version", addr: ready, req: badVersion,
			wantKind: inference.KindNotFound, wantStatus: 404, wantMsg: `has no version "9"`},
		{name: "runtime not ready", addr: cold, req: fp32Request(1, 16, 3),
			wantKind: inference.KindUnavailable, wantStatus: 503, wantMsg: "not ready"},
	}
	c := upstream.New(upstream.Config{})
	defer c.Close()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, probe := range []bool{false, true} { // JSON, then binary
				if probe {
					if err := c.Probe(context.Background(), tt.addr); err != nil && tt.addr != cold {
						t.Fatal(err)
					}
				}
				reply, err := c.Infer(context.Background(), tt.addr, tt.req, nil)
				wantKind(t, err, tt.wantKind)
				prefix := fmt.Sprintf("upstream %s: %d: ", tt.addr, tt.wantStatus)
				if msg := err.Error(); !strings.HasPrefix(msg, prefix) || !strings.Contains(msg, tt.wantMsg) {
					t.Errorf("binary %v: message %q, want %q and then %q", probe, msg, prefix, tt.wantMsg)
				}
				if reply.Status != tt.wantStatus {
					t.Errorf("binary %v: Reply.Status = %d, want %d", probe, reply.Status, tt.wantStatus)
				}
				if errors.Is(err, upstream.ErrConnect) {
					t.Errorf("an answer matches ErrConnect: %v", err)
				}
			}
		})
	}
}

// TestStatusKinds checks the kind of every class of status, and that the
// runtime's message is carried whatever its body looks like.
func TestStatusKinds(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		body     string
		header   map[string]string
		wantKind inference.Kind
		wantMsg  string
	}{
		{name: "400", status: 400, body: `{"error":"input \"x\": bad"}`, wantKind: inference.KindInvalid, wantMsg: `400: input "x": bad`},
		{name: "413", status: 413, body: `{"error":"too big"}`, wantKind: inference.KindInvalid, wantMsg: "413: too big"},
		{name: "404", status: 404, body: `{"error":"no model"}`, wantKind: inference.KindNotFound, wantMsg: "404: no model"},
		{name: "429", status: 429, body: `{"error":"busy"}`, wantKind: inference.KindUnavailable, wantMsg: "429: busy"},
		{name: "503", status: 503, body: `{"error":"draining"}`, wantKind: inference.KindUnavailable, wantMsg: "503: draining"},
		{name: "500", status: 500, body: `{"error":"CUDA out of memory"}`, wantKind: inference.KindUpstream, wantMsg: "500: CUDA out of memory"},
		{name: "502 text", status: 502, body: "bad gateway", wantKind: inference.KindUpstream, wantMsg: "502: bad gateway"},
		{name: "500 empty", status: 500, wantKind: inference.KindUpstream, wantMsg: "500: empty body"},
		{name: "long text", status: 500, body: strings.Repeat("é", 600), wantKind: inference.KindUpstream, wantMsg: ": " + strings.Repeat("é", 512) + "…"},
		{name: "200 not JSON", status: 200, body: "<html>", wantKind: inference.KindUpstream, wantMsg: "bad response"},
		{name: "200 short binary body", status: 200, body: `{}`, header: map[string]string{"Inference-Header-Content-Length": "99"},
			wantKind: inference.KindUpstream, wantMsg: "bad response"},
		{name: "200 bad header length", status: 200, body: `{}`, header: map[string]string{"Inference-Header-Content-Length": "x"},
			wantKind: inference.KindUpstream, wantMsg: "bad response"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := serve(t, func(ctx *fasthttp.RequestCtx) {
				ctx.SetStatusCode(tt.status)
				for k, v := range tt.header {
					ctx.Response.Header.Set(k, v)
				}
				ctx.Response.Header.Set(upstream.HeaderLoadReport, "TEXT application_utilization=0.5")
				ctx.SetBodyString(tt.body)
			})
			c := upstream.New(upstream.Config{})
			defer c.Close()
			reply, err := c.Infer(context.Background(), addr, fp32Request(1, 4, 0), nil)
			wantKind(t, err, tt.wantKind)
			if !strings.HasPrefix(err.Error(), "upstream "+addr+": ") || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("message %q, want it to name %s and contain %q", err, addr, tt.wantMsg)
			}
			if reply.Status != tt.status || reply.LoadReport != "TEXT application_utilization=0.5" {
				t.Errorf("Reply = status %d, load report %q", reply.Status, reply.LoadReport)
			}
		})
	}
}

func TestDeadEndpoint(t *testing.T) {
	addr := deadAddr(t)
	c := upstream.New(upstream.Config{})
	defer c.Close()
	ctx := context.Background()

	freq := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(freq)
	freq.SetRequestURI("/v2/models/sim")
	fresp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(fresp)

	for name, call := range map[string]func() error{
		"Infer":   func() error { _, err := c.Infer(ctx, addr, fp32Request(1, 4, 0), nil); return err },
		"Probe":   func() error { return c.Probe(ctx, addr) },
		"Forward": func() error { return c.Forward(ctx, addr, freq, fresp) },
	} {
		err := call()
		if !errors.Is(err, upstream.ErrConnect) {
			t.Errorf("%s: %v does not match ErrConnect", name, err)
		}
		wantKind(t, err, inference.KindUnavailable)
		if inference.HTTPStatus(err) != http.StatusServiceUnavailable {
			t.Errorf("%s: status %d, want 503", name, inference.HTTPStatus(err))
		}
		var op *net.OpError
		if !errors.As(err, &op) {
			t.Errorf("%s: %v does not wrap the *net.OpError cause", name, err)
		}
	}
}

func TestInferDeadline(t *testing.T) {
	addr := startSim(t, "linear/50ms+0s", 0)
	c := upstream.New(upstream.Config{})
	defer c.Close()
	if err := c.Probe(context.Background(), addr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Infer(ctx, addr, fp32Request(1, 16, 0), nil)
	elapsed := time.Since(start)
	wantKind(t, err, inference.KindDeadline)
	if errors.Is(err, upstream.ErrConnect) {
		t.Errorf("a runtime too slow for the deadline matches ErrConnect: %v", err)
	}
	// A bound on a timeout, not a timing assertion: the call must end at
	// its deadline, not when the runtime answers 50 ms later.
	if elapsed >= 40*time.Millisecond {
		t.Errorf("Infer returned after %v; the deadline was 5ms and the runtime takes 50ms", elapsed)
	}
}

func TestContextDone(t *testing.T) {
	c := upstream.New(upstream.Config{})
	defer c.Close()
	addr := deadAddr(t) // never dialled: the calls end before
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	for _, tt := range []struct {
		name  string
		ctx   context.Context
		kind  inference.Kind
		cause error
	}{
		{name: "cancelled", ctx: cancelled, kind: inference.KindUnavailable, cause: context.Canceled},
		{name: "expired", ctx: expired, kind: inference.KindDeadline, cause: context.DeadlineExceeded},
	} {
		_, err := c.Infer(tt.ctx, addr, fp32Request(1, 4, 0), nil)
		wantKind(t, err, tt.kind)
		if !errors.Is(err, tt.cause) || errors.Is(err, upstream.ErrConnect) {
			t.Errorf("%s: %v; want it to wrap %v and not match ErrConnect", tt.name, err, tt.cause)
		}
	}
}

// TestInferRetriesStaleConnection serves its first request on a connection
// that it then closes without saying so (as a runtime closing an idle
// keep-alive connection does); the next call finds the connection dead and
// must be retried once on a new one.
func TestInferRetriesStaleConnection(t *testing.T) {
	_, sim := simModel(t, "sim=sim:linear/0s+0s")
	fake := &fakeRuntime{model: sim}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := func() {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			t.Error(err)
		}
		wg.Wait()
	}
	t.Cleanup(stop)
	handler := fasthttp.RequestHandler(fake.handle)
	conns := 0
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conns++
			// Serve one request per connection, then close it.
			if err := serveOne(conn, handler); err != nil {
				t.Errorf("serve: %v", err)
			}
			if err := conn.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
		}
	})

	c := upstream.New(upstream.Config{})
	defer c.Close()
	for i := range 3 {
		if _, err := c.Infer(context.Background(), ln.Addr().String(), fp32Request(2, 4, i), nil); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	stop()
	if conns != 3 {
		t.Errorf("%d connections for 3 calls", conns)
	}
}

// serveOne reads one request from conn, runs h on it and writes the answer
// without "Connection: close".
func serveOne(conn net.Conn, h fasthttp.RequestHandler) error {
	var ctx fasthttp.RequestCtx
	if err := ctx.Request.Read(bufio.NewReader(conn)); err != nil {
		return err
	}
	h(&ctx)
	w := bufio.NewWriter(conn)
	if err := ctx.Response.Write(w); err != nil {
		return err
	}
	return w.Flush()
}

func TestInferConcurrent(t *testing.T) {
	addr := startSim(t, "linear/0s+0s", 0)
	c := upstream.New(upstream.Config{MaxConnsPerEndpoint: 4})
	defer c.Close()
	want := map[int][]byte{}
	for seed := range 4 {
		reply, err := c.Infer(context.Background(), addr, fp32Request(3, 8, seed), nil)
		if err != nil {
			t.Fatal(err)
		}
		want[seed] = reply.Response.Outputs[0].Data
	}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 10 {
				if i == 5 && g%4 == 0 {
					if err := c.Probe(context.Background(), addr); err != nil {
						t.Error(err)
					}
				}
				seed := (g + i) % 4
				reply, err := c.Infer(context.Background(), addr, fp32Request(3, 8, seed), nil)
				if err != nil {
					t.Error(err)
					return
				}
				if !bytes.Equal(reply.Response.Outputs[0].Data, want[seed]) {
					t.Errorf("goroutine %d call %d: wrong output", g, i)
				}
			}
		})
	}
	wg.Wait()
}

func TestForget(t *testing.T) {
	addr := startSim(t, "linear/0s+0s", 0)
	c := upstream.New(upstream.Config{})
	defer c.Close()
	if err := c.Probe(context.Background(), addr); err != nil {
		t.Fatal(err)
	}
	c.Forget(addr)
	if c.Binary(addr) {
		t.Error("Binary after Forget = true")
	}
	if _, err := c.Infer(context.Background(), addr, fp32Request(1, 4, 0), nil); err != nil {
		t.Errorf("Infer after Forget: %v", err)
	}
}

func TestInferPath(t *testing.T) {
	tests := []struct {
		model, version, want string
	}{
		{model: "bert-base", want: "/v2/models/bert-base/infer"},
		{model: "bert", version: "2", want: "/v2/models/bert/versions/2/infer"},
		{model: "a b/c?d#e%", version: "v 1", want: "/v2/models/a%20b%2Fc%3Fd%23e%25/versions/v%201/infer"},
	}
	for _, tt := range tests {
		var got string
		addr := serve(t, func(ctx *fasthttp.RequestCtx) {
			got = string(ctx.Request.Header.RequestURI())
			ctx.SetStatusCode(http.StatusNotFound)
		})
		c := upstream.New(upstream.Config{})
		req := fp32Request(1, 4, 0)
		req.Model, req.Version = tt.model, tt.version
		_, err := c.Infer(context.Background(), addr, req, nil)
		wantKind(t, err, inference.KindNotFound)
		if got != tt.want {
			t.Errorf("model %q version %q: path %q, want %q", tt.model, tt.version, got, tt.want)
		}
		c.Close()
	}
}

func TestInferNoModel(t *testing.T) {
	c := upstream.New(upstream.Config{})
	req := fp32Request(1, 4, 0)
	req.Model = ""
	_, err := c.Infer(context.Background(), deadAddr(t), req, nil)
	wantKind(t, err, inference.KindInternal)
}

func BenchmarkInfer(b *testing.B) {
	addr := startSim(b, "linear/0s+0s", 0)
	c := upstream.New(upstream.Config{})
	defer c.Close()
	if err := c.Probe(context.Background(), addr); err != nil {
		b.Fatal(err)
	}
	if !c.Binary(addr) {
		b.Fatal("the reference runtime should speak binary")
	}
	req := fp32Request(64, 16, 0)
	headers := []upstream.Header{{Key: "traceparent", Value: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}
	ctx := context.Background()
	b.ReportAllocs()
	b.SetBytes(int64(len(req.Inputs[0].Data)))
	for b.Loop() {
		if _, err := c.Infer(ctx, addr, req, headers); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInferClient measures the client alone: the runtime is a fasthttp
// handler that answers every call with one pre-encoded binary reply, so
// nearly all the time and allocations are the client's (encode, round trip,
// one body copy, decode).
func BenchmarkInferClient(b *testing.B) {
	_, sim := simModel(b, "sim=sim:linear/0s+0s")
	req := fp32Request(64, 16, 0)
	outs, err := sim.Infer(context.Background(), req)
	if err != nil {
		b.Fatal(err)
	}
	resp := inference.Response{ModelName: "sim", ModelVersion: "1", Outputs: outs}
	body, hl, err := codec.EncodeResponse(nil, &resp, func(string) bool { return true })
	if err != nil {
		b.Fatal(err)
	}
	hlv := strconv.Itoa(hl)
	addr := serve(b, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/v2" {
			writeJSON(ctx, fasthttp.StatusOK, codec.ServerMetadata{Extensions: []string{codec.ExtensionBinaryTensorData}})
			return
		}
		if string(ctx.Path()) != "/v2/models/sim/infer" {
			ctx.SetStatusCode(fasthttp.StatusOK) // ready
			return
		}
		ctx.Response.Header.Set(codec.HeaderContentLength, hlv)
		ctx.Response.Header.Set(upstream.HeaderLoadReport, "TEXT application_utilization=0.5000, rps_fractional=100.00, named_metrics.queue_depth=0")
		ctx.SetContentType("application/octet-stream")
		ctx.Response.SetBodyRaw(body)
	})
	c := upstream.New(upstream.Config{})
	defer c.Close()
	if err := c.Probe(context.Background(), addr); err != nil || !c.Binary(addr) {
		b.Fatalf("Probe: %v, binary %v", err, c.Binary(addr))
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.SetBytes(int64(len(req.Inputs[0].Data)))
	for b.Loop() {
		if _, err := c.Infer(ctx, addr, req, nil); err != nil {
			b.Fatal(err)
		}
	}
}
