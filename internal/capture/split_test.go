package capture_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/batchmesh/batchmesh/internal/capture"
)

// TestSplit connects three clients to one listener: the one that starts
// with the HTTP/2 preface comes out of HTTP2, a short HTTP/1.0 request (18
// bytes, less than the preface) and a POST (which shares the preface's first
// byte) out of HTTP1, each with its bytes read again from the start.
func TestSplit(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := capture.NewSplit(ln, 0)
	defer s.Close()
	for _, tc := range []struct {
		name, first string
		side        net.Listener
	}{
		{"h2", capture.HTTP2Preface + "\x00\x00\x00\x04", s.HTTP2()},
		{"short HTTP/1.0", "GET / HTTP/1.0\r\n\r\n", s.HTTP1()},
		{"POST", "POST /v2 HTTP/1.1\r\nHost: x\r\n\r\n", s.HTTP1()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, tc.first); err != nil {
				t.Fatal(err)
			}
			got, err := tc.side.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer got.Close()
			b := make([]byte, len(tc.first))
			if _, err := io.ReadFull(bufio.NewReader(got), b); err != nil || string(b) != tc.first {
				t.Errorf("the accepted connection reads %q, %v; want %q", b, err, tc.first)
			}
		})
	}
	// A closed side refuses; the other goes on until Close.
	_ = s.HTTP2().Close()
	if _, err := s.HTTP2().Accept(); err == nil {
		t.Error("Accept on a closed side succeeded")
	}
	_ = s.Close()
	if _, err := s.HTTP1().Accept(); err == nil {
		t.Error("Accept after Close succeeded")
	}
}

// TestSplitSniffCountsAgainstTheFirstDeadline: an HTTP/1 connection's
// first read deadline (the HTTP server's header timeout) is moved no later
// than the split's timeout from the connection's opening, so the time the
// split spent on its first bytes is not granted twice; a later deadline is
// left as it is set.
func TestSplitSniffCountsAgainstTheFirstDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := capture.NewSplit(ln, 200*time.Millisecond)
	defer s.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "G"); err != nil {
		t.Fatal(err)
	}
	got, err := s.HTTP1().Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	if err := got.SetReadDeadline(time.Now().Add(time.Hour)); err != nil { // as a 1 h header timeout would
		t.Fatal(err)
	}
	b := make([]byte, 8)
	if n, err := got.Read(b); err != nil || string(b[:n]) != "G" {
		t.Fatalf("first read: %q, %v; want the sniffed G", b[:n], err)
	}
	// Without the split's limit the read would wait the hour: a watchdog
	// closes the connection, and the read fails with no timeout.
	watchdog := time.AfterFunc(10*time.Second, func() { got.Close() })
	defer watchdog.Stop()
	var ne net.Error
	if _, err := got.Read(b); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past the split's timeout: %v; want a timeout, not the hour the first deadline asked for", err)
	}
	// The next deadline (no deadline at all) is the caller's.
	if err := got.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "ET"); err != nil {
		t.Fatal(err)
	}
	if n, err := got.Read(b); err != nil || string(b[:n]) != "ET" {
		t.Errorf("read with the deadline cleared: %q, %v; want ET", b[:n], err)
	}
}
