package chaos_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// headerTimeout is the -header-timeout of the hostile-client sidecars:
// short, so that the slow-header test stays short.
const headerTimeout = 2 * time.Second

// hostileRig is one runtime behind a sidecar run with extra flags, and
// the sidecar's answer to rowBody(1).
type hostileRig struct {
	rt   *runtime
	sc   *sidecarProc
	addr string // the sidecar's inference listener, host:port
	want []byte
}

func newHostileRig(t *testing.T, flags ...string) *hostileRig {
	t.Helper()
	return newHostileRigTimeout(t, deadline, flags...)
}

// newHostileRigTimeout is newHostileRig with the model's batching.timeout
// set to timeout.
func newHostileRigTimeout(t *testing.T, timeout time.Duration, flags ...string) *hostileRig {
	t.Helper()
	rt := startRuntime(t)
	yaml := strings.Replace(endpointYAML([]string{rt.addr}), "timeout: 1s", "timeout: "+timeout.String(), 1)
	args := append([]string{"-config", sidecarConfig(t, yaml)}, flags...)
	sc := startSidecar(t, args...)
	h := &hostileRig{rt: rt, sc: sc, addr: strings.TrimPrefix(sc.url, "http://")}
	h.want = expectedAnswers(t, rt)[1].want[0]
	return h
}

// inferRequest is a raw HTTP/1.1 request for rowBody(1) with extra header
// lines (each ending in \r\n).
func inferRequest(extra string) []byte {
	body := rowBody(1)
	return fmt.Appendf(nil, "POST /v2/models/m/infer HTTP/1.1\r\nHost: chaos\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s", len(body), extra, body)
}

// answer is one response read off a raw connection.
type answer struct {
	status int
	header http.Header
	body   []byte
	rest   *bufio.Reader // the connection after the response, for more reads
}

// exchange writes raw on a new connection to addr (from a goroutine, so
// that a server answering before it has read everything is seen) and
// reads one response. The connection stays open for more reads from rest
// until the test ends.
func exchange(t *testing.T, addr string, raw []byte) answer {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	a, err := exchangeOn(c, raw)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// exchangeOn is exchange on c, for any goroutine.
func exchangeOn(c net.Conn, raw []byte) (answer, error) {
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	go func() { _, _ = c.Write(raw) }() // a refused request may be cut short: the write may fail
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return answer{}, fmt.Errorf("reading the sidecar's response: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, fmt.Errorf("reading the sidecar's response body: %w", err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: body, rest: br}, nil
}

// TestHeaderSizes: a request carrying a 16 KB header (a large JWT), or a
// 60 KB one, is served; one with a 128 KB header gets 431, and nothing of
// it is echoed.
func TestHeaderSizes(t *testing.T) {
	h := newHostileRig(t)

	for _, kb := range []int{16, 60} { // a large JWT; near the 64 KiB of all headers
		jwt := strings.Repeat("eyJhbGciOiJSUzI1NiJ9", kb<<10/20)
		a := exchange(t, h.addr, inferRequest("Authorization: Bearer "+jwt+"\r\n"))
		if a.status != http.StatusOK || !bytes.Equal(a.body, h.want) {
			t.Errorf("%d KB Authorization header: %d %.300s; want 200 with %s", kb, a.status, a.body, h.want)
		}
	}

	const marker = "hostile-header-value-"
	huge := strings.Repeat(marker, 128<<10/len(marker))
	a := exchange(t, h.addr, inferRequest("X-Huge: "+huge+"\r\n"))
	if a.status != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("128 KB header: %d %.300s; want 431", a.status, a.body)
	}
	for k, vs := range a.header {
		if strings.Contains(k+strings.Join(vs, ""), marker) {
			t.Errorf("the 431 echoes the request's header in its header %s", k)
		}
	}
	if bytes.Contains(a.body, []byte(marker)) || bytes.Contains(a.body, []byte("X-Huge")) {
		t.Errorf("the 431 echoes the request's headers: %.300s", a.body)
	}
}

// TestContentLengthWithTransferEncoding: a request framed both ways — the
// request-smuggling shape — gets 400 and its connection is closed, so the
// request hidden in its body is never served.
func TestContentLengthWithTransferEncoding(t *testing.T) {
	h := newHostileRig(t)
	smuggled := "GET /v2/models/m HTTP/1.1\r\nHost: chaos\r\n\r\n"
	chunked := "0\r\n\r\n" + smuggled
	for name, framing := range map[string]string{
		"CL then TE": fmt.Sprintf("Content-Length: %d\r\nTransfer-Encoding: chunked\r\n", len(chunked)),
		"TE then CL": fmt.Sprintf("Transfer-Encoding: chunked\r\nContent-Length: %d\r\n", len(chunked)),
	} {
		t.Run(name, func(t *testing.T) {
			raw := "POST /v2/models/m/infer HTTP/1.1\r\nHost: chaos\r\n" + framing + "\r\n" + chunked
			a := exchange(t, h.addr, []byte(raw))
			if a.status != http.StatusBadRequest {
				t.Errorf("status %d %.300s; want 400", a.status, a.body)
			}
			if rest, err := io.ReadAll(a.rest); len(rest) != 0 || err != nil {
				t.Errorf("after the 400 the connection gave %q (%v); want it closed with nothing more", rest, err)
			}
		})
	}
}

// TestSlowHeaders: a client sending its headers one byte a second is cut
// off once -header-timeout has passed since its first byte, and nothing is
// answered to it — including the second the listener takes to tell "POST"
// from the HTTP/2 preface ("PRI"), which counts against the timeout
// (docs/grpc.md). The slack covers a loaded machine.
func TestSlowHeaders(t *testing.T) {
	h := newHostileRig(t, "-header-timeout", headerTimeout.String())
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw := inferRequest("")
	start := time.Now()
	go func() {
		for _, b := range raw {
			if _, err := c.Write([]byte{b}); err != nil {
				return
			}
			time.Sleep(time.Second) // the scenario: one byte a second
		}
	}()
	_ = c.SetReadDeadline(time.Now().Add(headerTimeout + 30*time.Second))
	got, err := io.ReadAll(c)
	cut := time.Since(start)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the connection was not cut in %v (header timeout %v)", cut, headerTimeout)
	}
	const slack = 3 * time.Second
	if cut < headerTimeout || cut > headerTimeout+slack {
		t.Errorf("the slow client was cut after %v; want between the header timeout %v and %v", cut, headerTimeout, headerTimeout+slack)
	}
	if len(got) != 0 {
		t.Errorf("the slow client was answered %q; want the connection closed quietly", got)
	}
	t.Logf("a client sending 1 byte/s was cut after %v (-header-timeout %v)", cut.Round(time.Millisecond), headerTimeout)
}

// TestSilentConnection: a connection that sends nothing at all is closed,
// quietly, once -header-timeout has passed since it opened.
func TestSilentConnection(t *testing.T) {
	h := newHostileRig(t, "-header-timeout", headerTimeout.String())
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(headerTimeout + 30*time.Second))
	got, err := io.ReadAll(c)
	cut := time.Since(start)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the silent connection was not closed in %v (header timeout %v)", cut, headerTimeout)
	}
	const slack = 3 * time.Second
	if cut < headerTimeout || cut > headerTimeout+slack || len(got) != 0 {
		t.Errorf("the silent connection was closed after %v with %q; want it closed quietly between the header timeout %v and %v",
			cut, got, headerTimeout, headerTimeout+slack)
	}
}

// TestIdleCloseIsQuiet: a keep-alive connection left idle past
// -idle-timeout is closed without an unsolicited response.
func TestIdleCloseIsQuiet(t *testing.T) {
	h := newHostileRig(t, "-idle-timeout", "1s")
	a := exchange(t, h.addr, inferRequest(""))
	if a.status != http.StatusOK || !bytes.Equal(a.body, h.want) {
		t.Fatalf("first request: %d %.300s; want 200", a.status, a.body)
	}
	rest, err := io.ReadAll(a.rest) // the read deadline of exchange bounds it
	if err != nil {
		t.Fatalf("the idle connection was not closed: %v", err)
	}
	if len(rest) != 0 {
		t.Errorf("the idle connection was closed with %q; want nothing", rest)
	}
}

// idleConns is the flood of TestIdleConnections.
const idleConns = 5000

// TestIdleConnections: 5,000 connections that send nothing do not stop
// normal requests, which all get their right answer while the sidecar
// holds the 5,000 open.
func TestIdleConnections(t *testing.T) {
	raiseNoFile(t, idleConns+1024)
	h := newHostileRig(t)
	conns := make([]net.Conn, 0, idleConns)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range idleConns {
		c, err := net.DialTimeout("tcp", h.addr, 5*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", len(conns)+1, err)
		}
		conns = append(conns, c)
	}
	// The sidecar accepted them: it holds a socket for each.
	waitFor(t, 10*time.Second, fmt.Sprintf("the sidecar to hold %d connections", idleConns), func() bool {
		return openFDs(t, h.sc.proc.cmd.Process.Pid) >= idleConns
	})

	hc := &http.Client{Timeout: 5 * time.Second}
	for i := range 200 {
		resp, err := hc.Post(h.sc.url+"/v2/models/m/infer", "application/json", bytes.NewReader(rowBody(1)))
		if err != nil {
			t.Fatalf("request %d beside %d idle connections: %v", i, idleConns, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, h.want) {
			t.Fatalf("request %d beside %d idle connections: %d %v %.300s; want 200 with the right answer", i, idleConns, resp.StatusCode, err, body)
		}
	}
	if n := openFDs(t, h.sc.proc.cmd.Process.Pid); n < idleConns {
		t.Errorf("the sidecar holds %d descriptors after the requests; the %d idle connections were dropped", n, idleConns)
	}
}

// raiseNoFile raises this process's soft RLIMIT_NOFILE to its hard limit
// (the sidecar raises its own at start), skipping t when the hard limit
// is below need.
func raiseNoFile(t *testing.T, need uint64) {
	t.Helper()
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		t.Fatal(err)
	}
	if l.Max < need {
		t.Skipf("the hard RLIMIT_NOFILE is %d; this test needs %d descriptors (raise it with ulimit -Hn or in the container's limits)", l.Max, need)
	}
	if l.Cur < need {
		old := l
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
	}
}

// openFDs counts the open descriptors of process pid.
func openFDs(t *testing.T, pid int) int {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}
