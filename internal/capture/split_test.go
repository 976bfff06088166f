package capture_test

import (
	"bufio"
	"io"
	"net"
	"testing"

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
