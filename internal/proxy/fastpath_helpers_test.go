package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/telemetry"
)

// wireRuntime is a runtime on a loopback port that answers with the raw
// bytes a test names (the X-Test-Reply header picks them), so that the
// answers' framing and headers are exactly what the test says: chunked,
// close-delimited, hop-by-hop fields, no Date. It records each request it
// reads.
type wireRuntime struct {
	ln   net.Listener
	mu   sync.Mutex
	reqs []*http.Request
	// hold, when set, is where hanging requests wait.
	hold chan struct{}
}

// wireReplies are the answers of wireRuntime by X-Test-Reply. "close" and
// "closeafter" close the connection after the answer.
var wireReplies = map[string]string{
	"cl":         "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Answer: 1\r\nContent-Length: 11\r\n\r\n{\"ok\":true}",
	"hop":        "HTTP/1.1 201 Created\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\nKeep-Alive: timeout=5\r\nX-Batchmesh-Upstream: spoofed\r\nX-Batchmesh-Cache: hit\r\nContent-Length: 2\r\n\r\nhi",
	"chunked":    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n",
	"close":      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end",
	"closeafter": "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbye!",
	"nocontent":  "HTTP/1.1 204 No Content\r\nX-Answer: none\r\n\r\n",
	"error":      "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"error\":\"boom\"}",
	"big":        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n" + strings.Repeat("0123456789", 10000),
	"folded":     "HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
	"http10":     "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
	"bigcut":     "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + strings.Repeat("0123456789", 2000),
}

func startWireRuntime(t *testing.T) *wireRuntime {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rt := &wireRuntime{ln: ln, hold: make(chan struct{})}
	t.Cleanup(func() { _ = ln.Close(); close(rt.hold) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go rt.serve(c)
		}
	}()
	return rt
}

func (rt *wireRuntime) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		rt.mu.Lock()
		rt.reqs = append(rt.reqs, req)
		rt.mu.Unlock()
		kind := req.Header.Get("X-Test-Reply")
		if kind == "hang" {
			<-rt.hold
			return
		}
		reply, ok := wireReplies[kind]
		if !ok {
			reply = wireReplies["cl"]
		}
		if _, err := io.WriteString(c, reply); err != nil || kind == "close" || kind == "closeafter" || kind == "bigcut" {
			return
		}
		if kind == "stale" { // answers, then closes as if idle too long
			return
		}
	}
}

// last returns the last request the runtime read.
func (rt *wireRuntime) last(t *testing.T) *http.Request {
	t.Helper()
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if len(rt.reqs) == 0 {
		t.Fatal("the runtime read no request")
	}
	return rt.reqs[len(rt.reqs)-1]
}

// twoPaths is one proxy served twice: through the fast path (as the
// sidecar serves it) and by fasthttp's server alone.
type twoPaths struct {
	p         *Proxy
	fast      *FastListener
	fastAddr  string
	plainAddr string
	fastSrv   *fasthttp.Server
	plainSrv  *fasthttp.Server
}

func startTwoPaths(t *testing.T, yaml string, tune func(*Config)) *twoPaths {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	metrics, err := telemetry.NewMetrics()
	if err != nil {
		t.Fatal(err)
	}
	pc := Config{Models: cfg, Meter: metrics.Meter("sidecar"), Metrics: metrics.Handler(), ProbeInterval: time.Hour}
	if tune != nil {
		tune(&pc)
	}
	p, err := New(pc)
	if err != nil {
		t.Fatal(err)
	}
	tp := &twoPaths{p: p, fastSrv: p.NewServer(), plainSrv: p.NewServer()}
	fln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tp.fastAddr, tp.plainAddr = fln.Addr().String(), pln.Addr().String()
	tp.fast = p.FastPath(fln, tp.fastSrv)
	go func() { _ = tp.fastSrv.Serve(tp.fast) }()
	go func() { _ = tp.plainSrv.Serve(pln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tp.fastSrv.ShutdownWithContext(ctx)
		_ = tp.fast.Wait(ctx)
		_ = tp.plainSrv.ShutdownWithContext(ctx)
		p.Close()
	})
	return tp
}

func passYAML(addr string) string {
	return fmt.Sprintf(`models:
  - name: m
    batching: {max_batch_size: 0, timeout: 10s}
    versions: [{version: "1", endpoints: [{address: %q}]}]
  - name: b
    batching: {max_batch_size: 8, max_queue_delay: 1ms, timeout: 10s}
    versions: [{version: "1", endpoints: [{address: %q}]}]
`, addr, addr)
}

// ask writes raw to a new connection to addr and reads one answer.
func ask(t *testing.T, addr, raw string) answer {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer to %q: %v", raw, err)
	}
	defer resp.Body.Close()
	return seen(t, resp)
}

// answer is what a client sees of an answer, less Date (a clock reading,
// checked for presence).
type answer struct {
	status  int
	headers string
	body    string
}

func seen(t *testing.T, resp *http.Response) answer {
	t.Helper()
	if resp.Header.Get("Date") == "" {
		t.Errorf("answer has no Date: %v", resp.Header)
	}
	var hs []string
	for k, vs := range resp.Header {
		if k != "Date" {
			hs = append(hs, k+": "+strings.Join(vs, ", "))
		}
	}
	slices.Sort(hs)
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading an answer's body: %v", err)
	}
	if len(body) > 200 {
		body = fmt.Appendf(body[:100:100], "… (%d bytes, sum %x)", len(body), sha256.Sum256(body))
	}
	return answer{status: resp.StatusCode, headers: strings.Join(hs, "\n"), body: string(body)}
}

// sent is what the runtime saw of a request.
func sent(r *http.Request) string {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	var hs []string
	for k, vs := range r.Header {
		hs = append(hs, k+": "+strings.Join(vs, ", "))
	}
	slices.Sort(hs)
	return fmt.Sprintf("%s %s %s host=%s len=%d\n%s\n%s", r.Method, r.RequestURI, r.Proto, r.Host, r.ContentLength, strings.Join(hs, "\n"), body)
}

func rawPost(path, headers, body string) string {
	return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: sidecar\r\n%sContent-Length: %d\r\n\r\n%s", path, headers, len(body), body)
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}
