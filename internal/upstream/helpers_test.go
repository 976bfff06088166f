package upstream_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/batchmesh/batchmesh/internal/codec"
	"github.com/batchmesh/batchmesh/internal/inference"
	"github.com/batchmesh/batchmesh/internal/modelrt"
	"github.com/batchmesh/batchmesh/internal/runtimetest"
)

// simModel parses a sim model flag such as "sim=sim:linear/0s+0s".
func simModel(t testing.TB, flag string) (string, modelrt.Model) {
	t.Helper()
	name, m, err := modelrt.ParseModelFlag(flag)
	if err != nil {
		t.Fatal(err)
	}
	return name, m
}

// startSim serves one sim model named "sim" with the given latency spec
// ("linear/0s+0s") and returns the runtime's address.
func startSim(t testing.TB, latency string, maxBatch int) string {
	t.Helper()
	models := runtimetest.Models(t, "sim=sim:"+latency)
	return runtimetest.Start(t, modelrt.Config{Models: models, MaxBatch: maxBatch}).Addr
}

// serve serves h with fasthttp on a loopback port until cleanup and returns
// its address.
func serve(t testing.TB, h fasthttp.RequestHandler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: h, NoDefaultServerHeader: true, NoDefaultContentType: true}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		if err := srv.Shutdown(); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// deadAddr returns a loopback address nothing listens on: a port that was
// listened on and closed.
func deadAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// fakeRuntime is a v2 runtime that may lack the binary tensor extension.
// It is a fake because the reference runtime always offers the extension,
// and the sidecar must also serve runtimes that do not (MLServer, OpenVINO):
// this one lists no extension in GET /v2 (unless binary is set) and refuses
// a binary request with 400, as such a runtime would. It computes with the
// same sim model as the reference runtime, so the outputs are comparable,
// and records what it was sent.
type fakeRuntime struct {
	model  modelrt.Model
	binary bool

	mu   sync.Mutex
	seen []fakeCall
}

// fakeCall is what the fake saw of one infer request.
type fakeCall struct {
	contentType  string
	headerLen    string
	binaryOutput bool
	traceparent  string
	path         string
}

func (f *fakeRuntime) handle(ctx *fasthttp.RequestCtx) {
	switch path := string(ctx.Path()); {
	case path == "/v2":
		md := codec.ServerMetadata{Name: "fake", Version: "1", Extensions: []string{}}
		if f.binary {
			md.Extensions = append(md.Extensions, codec.ExtensionBinaryTensorData)
		}
		writeJSON(ctx, fasthttp.StatusOK, md)
	case path == "/v2/health/ready":
		writeJSON(ctx, fasthttp.StatusOK, codec.Ready{Ready: true})
	case strings.HasPrefix(path, "/v2/models/sim/") && strings.HasSuffix(path, "/infer") && ctx.IsPost():
		f.infer(ctx)
	default:
		writeError(ctx, fasthttp.StatusNotFound, "fake: no route "+path)
	}
}

func (f *fakeRuntime) infer(ctx *fasthttp.RequestCtx) {
	hlv := ctx.Request.Header.Peek(codec.HeaderContentLength)
	var req inference.Request
	call := fakeCall{
		contentType: string(ctx.Request.Header.ContentType()),
		headerLen:   string(hlv),
		traceparent: string(ctx.Request.Header.Peek("traceparent")),
		path:        string(ctx.Path()),
	}
	defer func() {
		f.mu.Lock()
		f.seen = append(f.seen, call)
		f.mu.Unlock()
	}()
	if len(hlv) > 0 && !f.binary {
		writeError(ctx, fasthttp.StatusBadRequest, "fake: binary tensor data is not supported")
		return
	}
	hl, err := codec.ParseHeaderLen(hlv)
	if err == nil {
		req, err = codec.DecodeRequest(ctx.PostBody(), hl)
	}
	if err == nil {
		err = f.model.Validate(&req)
	}
	if err != nil {
		writeError(ctx, inference.HTTPStatus(err), err.Error())
		return
	}
	call.binaryOutput = req.BinaryOutput(modelrt.SimOutput)
	outs, err := f.model.Infer(context.Background(), &req) // never *RequestCtx as a context
	if err != nil {
		writeError(ctx, inference.HTTPStatus(err), err.Error())
		return
	}
	resp := inference.Response{ModelName: "sim", ModelVersion: "1", Outputs: outs}
	body, hl, err := codec.EncodeResponse(nil, &resp, req.BinaryOutput)
	if err != nil {
		writeError(ctx, fasthttp.StatusInternalServerError, err.Error())
		return
	}
	if hl != codec.NoHeader {
		ctx.Response.Header.Set(codec.HeaderContentLength, strconv.Itoa(hl))
		ctx.SetContentType("application/octet-stream")
	} else {
		ctx.SetContentType("application/json")
	}
	ctx.SetBody(body)
}

func (f *fakeRuntime) calls() []fakeCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeCall(nil), f.seen...)
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

func writeError(ctx *fasthttp.RequestCtx, status int, msg string) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(codec.AppendError(nil, msg))
}

// fp32Request is a request to model "sim" of rows × cols FP32 values that
// depend on seed.
func fp32Request(rows, cols, seed int) *inference.Request {
	data := make([]byte, 0, rows*cols*4)
	for i := range rows * cols {
		v := float32(math.Sin(float64(seed*100_000 + i)))
		data = binary.LittleEndian.AppendUint32(data, math.Float32bits(v))
	}
	return &inference.Request{
		Model: "sim",
		Inputs: []inference.Tensor{{
			Name: "input", DataType: inference.FP32,
			Shape: []int64{int64(rows), int64(cols)}, Data: data,
		}},
	}
}

// wantKind fails unless err is an *inference.Error of kind.
func wantKind(t *testing.T, err error, kind inference.Kind) {
	t.Helper()
	var ie *inference.Error
	if !errors.As(err, &ie) {
		t.Fatalf("error %v (%T) is not an *inference.Error", err, err)
	}
	if ie.Kind != kind {
		t.Fatalf("error %q has kind %d, want %d", err, ie.Kind, kind)
	}
}
