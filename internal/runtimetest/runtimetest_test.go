package runtimetest_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batchmesh/batchmesh/internal/codec"
	"github.com/batchmesh/batchmesh/internal/modelrt"
	"github.com/batchmesh/batchmesh/internal/runtimetest"
)

var client = &http.Client{Timeout: 10 * time.Second}

// post sends body to url and returns the status and the body of the reply.
func post(t *testing.T, url, body string) (int, []byte) {
	t.Helper()
	resp, err := client.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func get(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

const request = `{"inputs":[{"name":"input","datatype":"FP32","shape":[2,3],"data":[1,2,3,4,5,6]}]}`

// TestInferAndStop does one real inference over HTTP, checks the answer
// against the model computed in process, then stops the runtime and checks
// that its address refuses connections.
func TestInferAndStop(t *testing.T) {
	models := runtimetest.Models(t, "m=sim:linear/0s+0s")
	rt := runtimetest.Start(t, modelrt.Config{Models: models, Version: "7"})
	if !strings.HasPrefix(rt.Addr, "127.0.0.1:") || rt.URL != "http://"+rt.Addr {
		t.Fatalf("Addr %q, URL %q: want a loopback address and its http URL", rt.Addr, rt.URL)
	}
	if !rt.Server.Ready() {
		t.Fatal("runtime not ready when Start returned")
	}

	status, body := post(t, rt.URL+"/v2/models/m/infer", request)
	if status != http.StatusOK {
		t.Fatalf("infer: status %d %s, want 200", status, body)
	}
	got, err := codec.DecodeResponse(body, codec.NoHeader)
	if err != nil {
		t.Fatalf("infer: %v in %s", err, body)
	}
	req, err := codec.DecodeRequest([]byte(request), codec.NoHeader)
	if err != nil {
		t.Fatal(err)
	}
	want, err := models["m"].Infer(context.Background(), &req)
	if err != nil {
		t.Fatal(err)
	}
	out := got.Output(modelrt.SimOutput)
	if got.ModelName != "m" || got.ModelVersion != "7" || out == nil {
		t.Fatalf("infer: model %q version %q outputs %v, want m, 7 and %q", got.ModelName, got.ModelVersion, got.Outputs, modelrt.SimOutput)
	}
	if len(out.Shape) != 2 || out.Shape[0] != 2 || out.Shape[1] != modelrt.SimOutputWidth {
		t.Errorf("output shape %v, want [2 %d]", out.Shape, modelrt.SimOutputWidth)
	}
	if !bytes.Equal(out.Data, want[0].Data) {
		t.Errorf("output over HTTP differs from the model's own answer:\n got %x\nwant %x", out.Data, want[0].Data)
	}

	rt.Stop()
	rt.Stop() // a second Stop, and the one at cleanup, do nothing
	if rt.Server.Ready() {
		t.Error("runtime still ready after Stop")
	}
	conn, err := net.DialTimeout("tcp", rt.Addr, 5*time.Second)
	if err == nil {
		conn.Close()
		t.Fatalf("dial %s after Stop succeeded, want connection refused", rt.Addr)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial %s after Stop: %v, want connection refused", rt.Addr, err)
	}
}

// TestCold: a Cold runtime serves but is not ready until warmed up.
func TestCold(t *testing.T) {
	rt := runtimetest.Start(t, modelrt.Config{Models: runtimetest.Models(t, "m=sim:linear/0s+0s")}, runtimetest.Cold())
	if status, body := get(t, rt.URL+"/v2/health/ready"); status != http.StatusServiceUnavailable {
		t.Errorf("cold runtime: ready status %d %s, want 503", status, body)
	}
	if status, body := post(t, rt.URL+"/v2/models/m/infer", request); status != http.StatusServiceUnavailable {
		t.Errorf("cold runtime: infer status %d %s, want 503", status, body)
	}
	if err := rt.Server.Warm(context.Background()); err != nil {
		t.Fatal(err)
	}
	if status, body := get(t, rt.URL+"/v2/health/ready"); status != http.StatusOK {
		t.Errorf("warmed runtime: ready status %d %s, want 200", status, body)
	}
}

// TestWithMetrics: the runtime's model_* metrics are served at /metrics,
// and count the rows computed.
func TestWithMetrics(t *testing.T) {
	rt := runtimetest.Start(t, modelrt.Config{Models: runtimetest.Models(t, "m=sim:linear/0s+0s")}, runtimetest.WithMetrics())
	if status, body := post(t, rt.URL+"/v2/models/m/infer", request); status != http.StatusOK {
		t.Fatalf("infer: status %d %s, want 200", status, body)
	}
	status, body := get(t, rt.URL+"/metrics")
	if status != http.StatusOK {
		t.Fatalf("GET /metrics: status %d %s, want 200", status, body)
	}
	// Warm-up runs the model directly, uncounted; the request has two rows.
	if want := `model_rows_total{model="m"} 2`; !strings.Contains(string(body), want) {
		t.Errorf("GET /metrics lacks %q:\n%s", want, body)
	}
}

// TestModelsBadFlag: a bad flag fails the test that gave it.
func TestModelsBadFlag(t *testing.T) {
	ft := &fakeT{TB: t}
	func() {
		defer func() { _ = recover() }()
		runtimetest.Models(ft, "no-equals-sign")
	}()
	if !ft.failed {
		t.Error("Models with a bad flag did not fail the test")
	}
}

// fakeT records a Fatalf instead of ending the test.
type fakeT struct {
	testing.TB
	failed bool
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed = true
	panic("fatal")
}

// TestStopAtOnce stops runtimes right after Start, which may be before
// their Serve goroutine has taken the listener; Stop must still return.
func TestStopAtOnce(t *testing.T) {
	models := runtimetest.Models(t, "m=sim:linear/0s+0s")
	for range 50 {
		runtimetest.Start(t, modelrt.Config{Models: models}, runtimetest.Cold()).Stop()
	}
}
