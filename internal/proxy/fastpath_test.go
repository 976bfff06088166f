package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestFastPathMatchesHandler sends the same requests through the fast
// path and through fasthttp's server alone and checks that the runtime
// receives the same request and the client the same answer, for each
// answer shape the fast path relays itself or has fasthttp parse, and for
// requests it hands over. It also checks which requests the fast path
// served, so that a change that hands everything over fails.
func TestFastPathMatchesHandler(t *testing.T) {
	rt := startWireRuntime(t)
	tp := startTwoPaths(t, passYAML(rt.ln.Addr().String()), func(c *Config) { c.MaxBodyBytes = 12 << 10 })
	body := `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,1],"data":[1]}]}`
	cases := []struct {
		name, raw string
		fast      bool // the fast path serves it
	}{
		{"content length", rawPost("/v2/models/m/infer", "X-Test-Reply: cl\r\n", body), true},
		{"hop-by-hop both ways", rawPost("/v2/models/m/infer?q=1", "X-Test-Reply: hop\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Authorization: secret\r\nX-Batchmesh-Timeout-Ms: 5000\r\nUser-Agent: test\r\n", body), true},
		{"chunked answer", rawPost("/v2/models/m/infer", "X-Test-Reply: chunked\r\n", body), true},
		{"close-delimited answer", rawPost("/v2/models/m/infer", "X-Test-Reply: close\r\n", body), true},
		{"Connection close answer", rawPost("/v2/models/m/infer", "X-Test-Reply: closeafter\r\n", body), true},
		{"204", rawPost("/v2/models/m/infer", "X-Test-Reply: nocontent\r\n", body), true},
		{"runtime's 500", rawPost("/v2/models/m/infer", "X-Test-Reply: error\r\n", body), true},
		{"big answer", rawPost("/v2/models/m/infer", "X-Test-Reply: big\r\n", body), true},
		{"folded answer header", rawPost("/v2/models/m/infer", "X-Test-Reply: folded\r\n", body), true},
		{"HTTP/1.0 answer", rawPost("/v2/models/m/infer", "X-Test-Reply: http10\r\n", body), true},
		{"model metadata", "GET /v2/models/m HTTP/1.1\r\nHost: sidecar\r\nX-Test-Reply: cl\r\n\r\n", true},
		{"batched model", rawPost("/v2/models/b/infer", "", body), false},
		{"unknown model", rawPost("/v2/models/nope/infer", "", body), false},
		{"bad timeout header", rawPost("/v2/models/m/infer", "X-Batchmesh-Timeout-Ms: soon\r\n", body), false},
		{"chunked request", "POST /v2/models/m/infer HTTP/1.1\r\nHost: sidecar\r\nX-Test-Reply: cl\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", false},
		{"Connection close request", rawPost("/v2/models/m/infer", "X-Test-Reply: cl\r\nConnection: close\r\n", body), false},
		{"escaped path", rawPost("/v2/models/%6d/infer", "X-Test-Reply: cl\r\n", body), false},
		{"dot segment", rawPost("/v2/models/x/../m/infer", "X-Test-Reply: cl\r\n", body), false},
		{"body over the limit", rawPost("/v2/models/m/infer", "X-Test-Reply: cl\r\n", strings.Repeat(" ", 13<<10)), false},
		{"body over the fast buffer", rawPost("/v2/models/m/infer", "X-Test-Reply: cl\r\n", strings.Repeat(" ", fastBuffer)+body), false},
		{"PUT", "PUT /v2/models/m/infer HTTP/1.1\r\nHost: sidecar\r\nX-Test-Reply: cl\r\nContent-Length: 2\r\n\r\n{}", false},
		{"HTTP/1.0 request", "GET /v2/models/m HTTP/1.0\r\nX-Test-Reply: cl\r\n\r\n", false},
		{"two Content-Lengths", "POST /v2/models/m/infer HTTP/1.1\r\nHost: s\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}", false},
		{"server metadata", "GET /v2 HTTP/1.1\r\nHost: sidecar\r\n\r\n", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			served := tp.fast.p.m.fastServed.Load()
			fast := ask(t, tp.fastAddr, c.raw)
			fastReq := ""
			if c.fast {
				fastReq = sent(rt.last(t))
			}
			if got := tp.fast.p.m.fastServed.Load() - served; (got == 1) != c.fast {
				t.Errorf("fast path served %d requests, want fast=%v", got, c.fast)
			}
			plain := ask(t, tp.plainAddr, c.raw)
			if fastReq != "" {
				if plainReq := sent(rt.last(t)); plainReq != fastReq {
					t.Errorf("runtime got through the fast path:\n%s\nthrough the handler:\n%s", fastReq, plainReq)
				}
			}
			if fast != plain {
				t.Errorf("fast path answered:\n%d\n%s\n%q\nthe handler:\n%d\n%s\n%q", fast.status, fast.headers, fast.body, plain.status, plain.headers, plain.body)
			}
		})
	}
}

// TestFastPathRuntimeDown: a refused connection is answered as the
// handler answers it (503, Retry-After, the same message but for the
// address) and reported to the health table, so that the next request
// finds the endpoint down.
func TestFastPathRuntimeDown(t *testing.T) {
	a, b := deadAddr(t), deadAddr(t)
	tp := startTwoPaths(t, fmt.Sprintf(`models:
  - name: a
    batching: {max_batch_size: 0, timeout: 10s}
    versions: [{version: "1", endpoints: [{address: %q}]}]
  - name: b
    batching: {max_batch_size: 0, timeout: 10s}
    versions: [{version: "1", endpoints: [{address: %q}]}]
`, a, b), nil)
	fast := ask(t, tp.fastAddr, rawPost("/v2/models/a/infer", "", "{}"))
	plain := ask(t, tp.plainAddr, rawPost("/v2/models/b/infer", "", "{}"))
	if tp.fast.p.m.fastServed.Load() != 1 {
		t.Errorf("fast path served %d requests, want 1; answered %+v", tp.fast.p.m.fastServed.Load(), fast)
	}
	fast.body = strings.ReplaceAll(fast.body, a, "ADDR")
	fast.headers = strings.ReplaceAll(fast.headers, strconv.Itoa(len(a)), "N")
	plain.body = strings.ReplaceAll(plain.body, b, "ADDR")
	plain.headers = strings.ReplaceAll(plain.headers, strconv.Itoa(len(b)), "N")
	if fast != plain || fast.status != http.StatusServiceUnavailable || !strings.Contains(fast.headers, "Retry-After: 1") {
		t.Errorf("fast path answered %+v, the handler %+v; want the same 503 with Retry-After", fast, plain)
	}
	if tp.p.health.Up(a) {
		t.Error("the refused endpoint is still up in the health table")
	}
}

// TestFastPathPipelinedAndStale sends two pipelined requests in one write
// to a runtime that closes each connection after answering without saying
// so: both are answered in order, the second on a new connection after
// the pooled one turns out closed.
func TestFastPathPipelinedAndStale(t *testing.T) {
	rt := startWireRuntime(t)
	tp := startTwoPaths(t, passYAML(rt.ln.Addr().String()), nil)
	c := dialFast(t, tp)
	one := rawPost("/v2/models/m/infer", "X-Test-Reply: stale\r\nX-N: 1\r\n", "{}")
	two := rawPost("/v2/models/m/infer", "X-Test-Reply: stale\r\nX-N: 2\r\n", "{}")
	if _, err := io.WriteString(c, one+two); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for i := range 2 {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer %d: %v", i+1, err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != `{"ok":true}` {
			t.Errorf("answer %d: %d %q", i+1, resp.StatusCode, body)
		}
	}
	if got := tp.fast.p.m.fastServed.Load(); got != 2 {
		t.Errorf("fast path served %d requests, want 2", got)
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if len(rt.reqs) != 2 || rt.reqs[0].Header.Get("X-N") != "1" || rt.reqs[1].Header.Get("X-N") != "2" {
		t.Errorf("runtime read %d requests, want 1 then 2", len(rt.reqs))
	}
}

// TestFastPathTimeout: a runtime that does not answer is cut off at the
// request's X-Batchmesh-Timeout-Ms with the handler's 504.
func TestFastPathTimeout(t *testing.T) {
	rt := startWireRuntime(t)
	tp := startTwoPaths(t, passYAML(rt.ln.Addr().String()), nil)
	req := rawPost("/v2/models/m/infer", "X-Test-Reply: hang\r\nX-Batchmesh-Timeout-Ms: 200\r\n", "{}")
	start := time.Now()
	fast := ask(t, tp.fastAddr, req)
	took := time.Since(start)
	plain := ask(t, tp.plainAddr, req)
	if fast.status != http.StatusGatewayTimeout || took < 200*time.Millisecond || took > 5*time.Second {
		t.Errorf("fast path: %d after %v, want 504 after 200ms", fast.status, took)
	}
	addr := rt.ln.Addr().String()
	if fast.status != plain.status || !strings.Contains(fast.body, "deadline exceeded") || !strings.Contains(plain.body, addr) || !strings.Contains(fast.body, addr) {
		t.Errorf("fast path answered %+v, the handler %+v", fast, plain)
	}
}

// TestFastPathDrain: when the server shuts down, an idle connection is
// closed without an answer and a request in flight is answered, with
// Connection: close, before its connection closes; Wait returns then.
func TestFastPathDrain(t *testing.T) {
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	defer slow.Close()
	tp := startTwoPaths(t, passYAML(slow.Listener.Addr().String()), nil)
	idle, err := net.Dial("tcp", tp.fastAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	busy, err := net.Dial("tcp", tp.fastAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	_ = idle.SetDeadline(time.Now().Add(10 * time.Second))
	_ = busy.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(busy, rawPost("/v2/models/m/infer", "", "{}")); err != nil {
		t.Fatal(err)
	}
	<-arrived
	shut := make(chan error, 1)
	go func() { shut <- tp.fastSrv.Shutdown() }()
	if n, err := idle.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("idle connection at shutdown: read %d bytes, %v; want EOF", n, err)
	}
	close(release)
	resp, err := http.ReadResponse(bufio.NewReader(busy), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !resp.Close {
		t.Errorf("request in flight at shutdown: %d, Connection: close %v", resp.StatusCode, resp.Close)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tp.fast.Wait(ctx); err != nil {
		t.Errorf("Wait: %v", err)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// TestFastPathMetrics: requests the fast path serves are counted as the
// handler counts pass-through requests.
func TestFastPathMetrics(t *testing.T) {
	rt := startWireRuntime(t)
	addr := rt.ln.Addr().String()
	sc := startSidecar(t, passYAML(addr))
	for range 3 {
		if r := post(sc.url+"/v2/models/m/infer", []byte("{}"), nil); r.err != nil || r.status != http.StatusOK {
			t.Fatalf("request: %v %d", r.err, r.status)
		}
	}
	r := post(sc.url+"/v2/models/m/infer", []byte("{}"), map[string]string{"X-Test-Reply": "error"})
	if r.status != http.StatusInternalServerError {
		t.Fatalf("runtime's 500 came back as %d", r.status)
	}
	m := sc.adminU + "/metrics"
	if got := metricValue(t, m, `batchmesh_requests_total{cache="bypass",code="200",model="m"`); got != 3 {
		t.Errorf("requests_total 200: %v, want 3", got)
	}
	if got := metricValue(t, m, `batchmesh_requests_total{cache="bypass",code="500",model="m"`); got != 1 {
		t.Errorf("requests_total 500: %v, want 1", got)
	}
	if got := metricValue(t, m, fmt.Sprintf(`batchmesh_upstream_requests_total{code="200",endpoint=%q,model="m"`, addr)); got != 3 {
		t.Errorf("upstream_requests_total 200: %v, want 3", got)
	}
	if got := metricValue(t, m, `batchmesh_request_duration_seconds_count{model="m"`); got != 4 {
		t.Errorf("request_duration_seconds_count: %v, want 4", got)
	}
	if got := metricValue(t, m, `batchmesh_fast_path_requests_total `); got != 4 {
		t.Errorf("fast_path_requests_total: %v, want 4 (the fast path served every request)", got)
	}
}

// TestFastPathBodyCutShort: a runtime that closes in the middle of a body
// bigger than the buffer (its head already relayed) makes the fast path
// close the client's connection, so that the client sees the answer cut
// short rather than a complete-looking one.
func TestFastPathBodyCutShort(t *testing.T) {
	rt := startWireRuntime(t)
	tp := startTwoPaths(t, passYAML(rt.ln.Addr().String()), nil)
	c := dialFast(t, tp)
	if _, err := io.WriteString(c, rawPost("/v2/models/m/infer", "X-Test-Reply: bigcut\r\n", "{}")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if !errors.Is(err, io.ErrUnexpectedEOF) || len(body) != 20000 {
		t.Errorf("read %d bytes of 100000, %v; want 20000 and the connection closed (unexpected EOF)", len(body), err)
	}
}

// dialFast opens a connection to the fast path, closed when the test ends,
// with a 10 s deadline.
func dialFast(t *testing.T, tp *twoPaths) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", tp.fastAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// TestFastPathIdleAndSlowBody: after a request the fast path served, a
// connection left idle is closed quietly at the idle timeout; a body that
// stops arriving is cut at the body timeout, without an answer.
func TestFastPathIdleAndSlowBody(t *testing.T) {
	rt := startWireRuntime(t)
	tp := startTwoPaths(t, passYAML(rt.ln.Addr().String()), func(c *Config) {
		c.IdleTimeout, c.BodyTimeout = 300*time.Millisecond, 300*time.Millisecond
	})
	c := dialFast(t, tp)
	if _, err := io.WriteString(c, rawPost("/v2/models/m/infer", "", "{}")); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if tp.fast.p.m.fastServed.Load() != 1 {
		t.Fatalf("fast path served %d requests, want 1", tp.fast.p.m.fastServed.Load())
	}
	start := time.Now()
	if n, err := io.Copy(io.Discard, br); n != 0 || err != nil {
		t.Errorf("idle connection: %d unsolicited bytes, %v; want a quiet close", n, err)
	}
	if took := time.Since(start); took < 200*time.Millisecond || took > 5*time.Second {
		t.Errorf("idle connection closed after %v, want about the idle timeout (300ms)", took)
	}

	c = dialFast(t, tp)
	head := "POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if n, err := io.Copy(io.Discard, c); n != 0 || err != nil {
		t.Errorf("body cut short: %d bytes back, %v; want a quiet close", n, err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("slow body cut after %v, want about the body timeout (300ms)", took)
	}
}

// TestFastPathSaysWhyItHandsOver: a connection handed to the full handler
// leaves one debug line with the reason and the request line.
func TestFastPathSaysWhyItHandsOver(t *testing.T) {
	rt := startWireRuntime(t)
	var logs lockedBuffer
	tp := startTwoPaths(t, passYAML(rt.ln.Addr().String()), func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	ask(t, tp.fastAddr, rawPost("/v2/models/b/infer", "", `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,1],"data":[1]}]}`))
	ask(t, tp.fastAddr, "PUT /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
	out := logs.String()
	for _, want := range []string{
		`why="not a pass-through request of a configured model (or one the handler refuses)" request="\"POST /v2/models/b/infer HTTP/1.1\""`,
		`why="a request head outside the fast path's subset (method, version, framing or fields)" request="\"PUT /v2/models/m/infer HTTP/1.1\""`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("debug log lacks %s:\n%s", want, out)
		}
	}
}
