package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batchmesh/batchmesh/internal/modelrt"
	"github.com/batchmesh/batchmesh/internal/runtimetest"
)

const body = `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`

// startRelay serves a relay in mode in front of upstream until the test
// ends, and returns its address.
func startRelay(t *testing.T, upstream, mode string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- serve(ln, upstream, mode) }()
	t.Cleanup(func() {
		ln.Close()
		if err := <-done; !errors.Is(err, net.ErrClosed) {
			t.Errorf("relay ended with %v, want the closed listener's error", err)
		}
	})
	return ln.Addr().String()
}

// TestRelay sends requests to a real runtime through the relay in each
// mode, on keep-alive connections and pipelined, and wants the runtime's
// own answers; a message it cannot frame closes the connection.
func TestRelay(t *testing.T) {
	rt := runtimetest.Start(t, modelrt.Config{Models: runtimetest.Models(t, "m=sim:linear/0s+0s")})
	direct := postN(t, rt.Addr, 1)[0]
	modes := []string{"goroutine", "epoll"}
	if runtime.GOOS != "linux" {
		modes = modes[:1]
	}
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			addr := startRelay(t, rt.Addr, mode)
			for i, got := range postN(t, addr, 20) {
				if got != direct {
					t.Fatalf("answer %d through the relay: %q, want the runtime's %q", i, got, direct)
				}
			}
			c := dial(t, addr)
			req := "POST /v2/models/m/infer HTTP/1.1\r\nHost: rt\r\nContent-Length: " + itoa(len(body)) + "\r\n\r\n" + body
			if _, err := io.WriteString(c, req+req); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			for i := range 2 {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("pipelined answer %d: %v", i, err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(b) != direct {
					t.Errorf("pipelined answer %d: %q, want %q", i, b, direct)
				}
			}
			c = dial(t, addr)
			if _, err := io.WriteString(c, "POST /v2/models/m/infer HTTP/1.1\r\nHost: rt\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			if n, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
				t.Errorf("a chunked request: read %d bytes, %v; want the connection closed (io.EOF)", n, err)
			}
		})
	}
	if err := serve(nil, rt.Addr, "poll"); err == nil || !strings.Contains(err.Error(), `"poll" is not an I/O model`) {
		t.Errorf("serve with -mode poll: %v, want the error naming the modes", err)
	}
}

// postN posts body to addr n times on one keep-alive connection and
// returns the answers' bodies.
func postN(t *testing.T, addr string, n int) []string {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer client.CloseIdleConnections()
	var out []string
	for range n {
		resp, err := client.Post("http://"+addr+"/v2/models/m/infer", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("POST through %s: %d, %v", addr, resp.StatusCode, err)
		}
		out = append(out, string(b))
	}
	return out
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestMsgLen: framing by Content-Length, and what closes the connection.
func TestMsgLen(t *testing.T) {
	for _, tt := range []struct {
		msg  string
		want int
	}{
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 27},
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET", 27}, // pipelined: the first only
		{"GET / HTTP/1.1\r\nHost: a\r\n", 0},         // head incomplete
		{"POST / HTTP/1.1\r\ncontent-length: 3\r\n\r\nab", 0},
		{"POST / HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc", 41},
		{"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", -1},
		{"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", -1},
		{"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", -1},
		{"POST / HTTP/1.1\r\nContent-Length: 99999\r\n\r\n", -1}, // over the buffer
	} {
		if got := msgLen([]byte(tt.msg)); got != tt.want {
			t.Errorf("msgLen(%q) = %d, want %d", tt.msg, got, tt.want)
		}
	}
}

// FuzzMsgLen holds msgLen's answer to what net/http reads: a message it
// frames is a request net/http reads whole with the same length, and its
// answer does not change as more bytes arrive.
func FuzzMsgLen(f *testing.F) {
	f.Add([]byte("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
	f.Add([]byte("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m := msgLen(b)
		if m < -1 || m > len(b) {
			t.Fatalf("msgLen = %d for %d bytes", m, len(b))
		}
		if m <= 0 {
			return
		}
		if again := msgLen(append(b[:m:m], "more"...)); again != m {
			t.Fatalf("msgLen changed from %d to %d as bytes arrived", m, again)
		}
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b[:m])))
		if err != nil {
			return // net/http is stricter about the start line and fields
		}
		n, _ := io.Copy(io.Discard, req.Body)
		if head := bytes.Index(b, []byte("\r\n\r\n")) + 4; head+int(n) != m {
			t.Fatalf("msgLen = %d, net/http read a %d-byte head and a %d-byte body", m, head, n)
		}
	})
}
