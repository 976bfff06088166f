package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// rawConn dials the sidecar's inference listener for raw writes.
func rawConn(t *testing.T, sc *sidecar) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(sc.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawReply is one response read off a raw connection.
type rawReply struct {
	StatusCode int
	Header     http.Header
}

// readReply reads one response from c within 5 s.
func readReply(t *testing.T, c net.Conn) (rawReply, []byte) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return rawReply{resp.StatusCode, resp.Header}, body
}

// closedQuietly waits for the server to close c and reports the bytes it
// wrote first and how long that took.
func closedQuietly(t *testing.T, c net.Conn) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := io.Copy(io.Discard, c)
	if err != nil {
		t.Fatalf("connection not closed by the server within 5s: %v", err)
	}
	return int(n), time.Since(start)
}

func TestHeaderSizes(t *testing.T) {
	sc := startSidecarConfig(t, Config{})
	jwt := strings.Repeat("J", 4000)
	for _, n := range []int{0, 16 << 10, 60 << 10} {
		c := rawConn(t, sc)
		fmt.Fprintf(c, "GET /v2/health/live HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nX-Pad: %s\r\n\r\n", jwt, strings.Repeat("p", n))
		if resp, body := readReply(t, c); resp.StatusCode != http.StatusOK {
			t.Errorf("4,000-character Authorization and %d bytes of padding: %d %s, want 200", n, resp.StatusCode, body)
		}
	}
	c := rawConn(t, sc)
	secret := "SECRET-" + strings.Repeat("s", 128<<10)
	fmt.Fprintf(c, "GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", secret)
	resp, body := readReply(t, c)
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("128 KiB of headers: %d %s, want 431", resp.StatusCode, body)
	}
	if bytes.Contains(body, []byte("SECRET")) || bytes.Contains(body, []byte("X-Big")) {
		t.Errorf("431 echoes the request's headers: %.200s", body)
	}
}

func TestSlowHeadersAndIdleAreCutQuietly(t *testing.T) {
	sc := startSidecarConfig(t, Config{HeaderTimeout: 300 * time.Millisecond, IdleTimeout: 300 * time.Millisecond})

	t.Run("one byte at a time", func(t *testing.T) {
		c := rawConn(t, sc)
		done := make(chan struct{})
		defer close(done)
		go func() {
			for _, b := range []byte("GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("z", 100)) {
				select {
				case <-done:
					return
				case <-time.After(50 * time.Millisecond):
				}
				if _, err := c.Write([]byte{b}); err != nil {
					return
				}
			}
		}()
		n, took := closedQuietly(t, c)
		if n != 0 {
			t.Errorf("slow client got %d bytes, want the connection closed without a response", n)
		}
		if took > 2*time.Second {
			t.Errorf("slow client cut after %v, want about the header timeout (300ms)", took)
		}
	})
	t.Run("new connection sending nothing", func(t *testing.T) {
		if n, _ := closedQuietly(t, rawConn(t, sc)); n != 0 {
			t.Errorf("silent connection got %d bytes, want none", n)
		}
	})
	t.Run("keep-alive connection idle", func(t *testing.T) {
		c := rawConn(t, sc)
		fmt.Fprint(c, "GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
		br := bufio.NewReader(c)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if n, _ := io.Copy(io.Discard, br); n != 0 {
			t.Errorf("idle keep-alive connection got %d unsolicited bytes, want a quiet close", n)
		}
	})
}

func TestContentLengthWithTransferEncodingRefused(t *testing.T) {
	sc := startSidecarConfig(t, Config{})
	for _, hdrs := range []string{
		"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
		"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
		"transfer-encoding: chunked\r\ncontent-length: 0\r\n",
	} {
		c := rawConn(t, sc)
		// The smuggled request after the chunked body must not be served.
		fmt.Fprintf(c, "POST /v2/health/live HTTP/1.1\r\nHost: x\r\n%s\r\n0\r\n\r\nGET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n", hdrs)
		resp, body := readReply(t, c)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "both Content-Length and Transfer-Encoding") {
			t.Errorf("%q: %d %s, want 400 naming both headers", hdrs, resp.StatusCode, body)
		}
		if n, _ := closedQuietly(t, c); n != 0 {
			t.Errorf("%q: %d more bytes after the 400, want the connection closed (no smuggled request served)", hdrs, n)
		}
	}
	c := rawConn(t, sc)
	fmt.Fprint(c, "POST /v2/health/live HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
	if resp, body := readReply(t, c); resp.StatusCode != http.StatusOK {
		t.Errorf("chunked alone: %d %s, want 200", resp.StatusCode, body)
	}
}

func TestBodyBudget(t *testing.T) {
	sc := startSidecarConfig(t, Config{MaxBodyBytes: 1000, MaxBodyBytesInFlight: 1500})
	// The first request's headers take 800 bytes of the budget; its body
	// is held back.
	slow := rawConn(t, sc)
	fmt.Fprint(slow, "POST /v2/health/live HTTP/1.1\r\nHost: x\r\nContent-Length: 800\r\n\r\n"+strings.Repeat("a", 100))
	waitFor(t, func() bool { return sc.p.body.inFlight() == 800 })

	c := rawConn(t, sc)
	fmt.Fprint(c, "POST /v2/health/live HTTP/1.1\r\nHost: x\r\nContent-Length: 800\r\n\r\n"+strings.Repeat("b", 800))
	resp, body := readReply(t, c)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("second body past the budget: %d Retry-After %q %s, want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	c = rawConn(t, sc)
	fmt.Fprint(c, "POST /v2/health/live HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n")
	if resp, _ := readReply(t, c); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("chunked body (counted at the body limit) past the budget: %d, want 429", resp.StatusCode)
	}
	c = rawConn(t, sc)
	fmt.Fprint(c, "POST /v2/health/live HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n")
	if resp, _ := readReply(t, c); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("body over the limit: %d, want 413", resp.StatusCode)
	}

	// With Expect: 100-continue the refusal comes instead of 100 Continue,
	// before the body is sent.
	c = rawConn(t, sc)
	fmt.Fprint(c, "POST /v2/health/live HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 800\r\n\r\n")
	if resp, body := readReply(t, c); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("Expect: 100-continue past the budget: %d %s, want 429 instead of 100 Continue", resp.StatusCode, body)
	}
	c = rawConn(t, sc)
	fmt.Fprint(c, "POST /v2/health/live HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n")
	if resp, _ := readReply(t, c); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("Expect: 100-continue over the body limit: %d, want 413 instead of 100 Continue", resp.StatusCode)
	}
	c = rawConn(t, sc)
	fmt.Fprint(c, "POST /v2/health/live HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
	br := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, err := br.ReadString('\n'); err != nil || !strings.Contains(line, "100 Continue") {
		t.Fatalf("Expect: 100-continue within the budget: %q %v, want 100 Continue", line, err)
	}
	_, _ = br.ReadString('\n') // the blank line after 100 Continue
	fmt.Fprint(c, "abc")
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("body after 100 Continue: %v %v, want 200", resp, err)
	} else {
		resp.Body.Close()
	}

	fmt.Fprint(slow, strings.Repeat("a", 700))
	if resp, body := readReply(t, slow); resp.StatusCode != http.StatusOK {
		t.Fatalf("held request once its body arrived: %d %s", resp.StatusCode, body)
	}
	waitFor(t, func() bool { return sc.p.body.inFlight() == 0 })
	if r := post(sc.url+"/v2/health/live", bytes.Repeat([]byte("c"), 900), nil); r.status != http.StatusOK {
		t.Errorf("after the budget was given back: %d %s, want 200", r.status, r.body)
	}
	if got := sc.p.body.inFlight(); got != 0 {
		t.Errorf("budget in use after every request was answered: %d, want 0", got)
	}
}

func TestConnectionLimit(t *testing.T) {
	sc := startSidecarConfig(t, Config{MaxConns: 4})
	held := make([]net.Conn, 4)
	for i := range held {
		held[i] = rawConn(t, sc)
		fmt.Fprint(held[i], "GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, _ := readReply(t, held[i]); resp.StatusCode != http.StatusOK {
			t.Fatalf("connection %d: %d", i, resp.StatusCode)
		}
	}
	c := rawConn(t, sc)
	fmt.Fprint(c, "GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, _ := readReply(t, c); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("fifth connection with a limit of 4: %d, want 503", resp.StatusCode)
	}
	held[0].Close()
	// Until the server has seen the close, a new connection may still get
	// the 503 (sent before any request, so Go's client reports an error).
	waitFor(t, func() bool {
		resp, err := client.Get(sc.url + "/v2/health/live")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func TestConnLimit(t *testing.T) {
	for _, c := range []struct {
		nofile uint64
		want   int
	}{{20000, 9936}, {1024, 448}, {10, 16}, {1 << 62, 1<<29 - 64}} {
		if got := ConnLimit(c.nofile); got != c.want {
			t.Errorf("ConnLimit(%d) = %d, want %d", c.nofile, got, c.want)
		}
	}
}

func TestFasthttpLogsThroughSlog(t *testing.T) {
	var buf bytes.Buffer
	l := fasthttpLogger{slog.New(slog.NewTextHandler(&buf, nil))}
	l.Printf("error when serving connection %q: %v", "1.2.3.4", context.Canceled)
	if got := buf.String(); !strings.Contains(got, "level=WARN") || !strings.Contains(got, "fasthttp: error when serving connection") {
		t.Errorf("log line %q, want a WARN through slog", got)
	}
	// A body cut at its limit (413, or 429 past the budget) is the
	// client's doing: a debug line, not a warning per refused request.
	buf.Reset()
	l.Printf("error when serving connection %q<->%q: %v", "1.2.3.4", "5.6.7.8", fmt.Errorf("wrapped: %w", fasthttp.ErrBodyTooLarge))
	if got := buf.String(); got != "" {
		t.Errorf("a body over its limit logged %q at the default level; want a debug line only", got)
	}
}

func TestBudgetBelowBodyLimitRefused(t *testing.T) {
	_, err := New(Config{MaxBodyBytes: 1000, MaxBodyBytesInFlight: 999})
	if err == nil || !strings.Contains(err.Error(), "max body bytes in flight") {
		t.Errorf("New: %v, want an error naming the budget", err)
	}
}
