package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

func TestParseRequestHead(t *testing.T) {
	for _, c := range []struct {
		head string
		want wireVerdict
	}{
		{"POST /v2/models/m/infer HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n", wireOK},
		{"GET /v2/models/m?x=1 HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive\r\n\r\n", wireOK},
		{"GET /v2/models/m HTTP/1.1\r\n\r\n", wireOther}, // no Host
		{"POST /v2/models/m/infer HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n", wireIncomplete},
		{"POST /v2/models/m/infer HTTP/1.1\r\nHost: a\r\n\r\n", wireOther},                                    // POST without a length
		{"POST /v2/models/m/infer HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n", wireOther},     // two lengths
		{"POST /v2/models/m/infer HTTP/1.1\r\nContent-Length: +2\r\n\r\n", wireOther},                         // not digits
		{"POST /v2/models/m/infer HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", wireOther},                 // chunked
		{"POST /v2/models/m/infer HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n", wireOther},  // Expect
		{"GET /v2/models/m HTTP/1.1\r\nConnection: close\r\n\r\n", wireOther},                                 // close
		{"GET /v2/models/m HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n", wireOther},               // upgrade
		{"GET /v2/models/m HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", wireOther},                                // two hosts
		{"GET /v2/models/m HTTP/1.0\r\n\r\n", wireOther},                                                      // HTTP/1.0
		{"HEAD /v2/models/m HTTP/1.1\r\n\r\n", wireOther},                                                     // HEAD
		{"GET http://a/v2/models/m HTTP/1.1\r\n\r\n", wireOther},                                              // absolute form
		{"GET /v2/models/m HTTP/1.1\r\nX-A : b\r\n\r\n", wireOther},                                           // space before colon
		{"GET /v2/models/m HTTP/1.1\r\nX-A: b\r\n c\r\n\r\n", wireOther},                                      // folded
		{"GET /v2/models/m HTTP/1.1\r\nX-A: b\nX-B: c\r\n\r\n", wireOther},                                    // bare LF
		{"GET /v2/models/m HTTP/1.1\r\nX-A: \x01\r\n\r\n", wireOther},                                         // control byte
		{"GET /v2/models/m  HTTP/1.1\r\n\r\n", wireOther},                                                     // two spaces
		{"GET /v2/models/m HTTP/1.1\r\n" + strings.Repeat("X-A: b\r\n", maxWireFields+1) + "\r\n", wireOther}, // too many fields
	} {
		var h wireHead
		if got := parseRequestHead([]byte(c.head), &h); got != c.want {
			t.Errorf("parseRequestHead(%q) = %d, want %d", c.head, got, c.want)
		}
	}
	var h wireHead
	head := "POST /v2/models/m/infer?x=1 HTTP/1.1\r\nHost: a\r\nKeep-Alive: 5\r\nX-Batchmesh-Timeout-Ms: 20\r\ncontent-length:  12 \r\nUser-Agent: u\r\n\r\nbody"
	if parseRequestHead([]byte(head), &h) != wireOK {
		t.Fatal("not parsed")
	}
	if string(h.method) != "POST" || string(h.target) != "/v2/models/m/infer?x=1" || h.contentLength != 12 ||
		string(h.timeoutMs) != "20" || !h.userAgent || h.end != len(head)-4 || h.nf != 5 {
		t.Errorf("parsed %+v", h)
	}
	var kept []string
	for _, f := range h.fields[:h.nf] {
		if !f.drop {
			kept = append(kept, string(f.name))
		}
	}
	if strings.Join(kept, ",") != "X-Batchmesh-Timeout-Ms,content-length,User-Agent" {
		t.Errorf("forwarded fields %v, want Host and Keep-Alive dropped", kept)
	}
}

func TestParseResponseHead(t *testing.T) {
	for _, c := range []struct {
		head string
		want wireVerdict
	}{
		{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", wireOK},
		{"HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n", wireOK},
		{"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n", wireOK},
		{"HTTP/1.1 200 OK\r\n\r\n", wireOther},                                         // close-delimited
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", wireOther},           // chunked
		{"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", wireOther},            // no body by status
		{"HTTP/1.1 100 Continue\r\n\r\n", wireOther},                                   // interim
		{"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", wireOther},                    // HTTP/1.0
		{"HTTP/1.1 200 OK\r\nConnection: X-A\r\nContent-Length: 2\r\n\r\n", wireOther}, // names a field
		{"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\n", wireOther},
		{"HTTP/1.1 20x OK\r\nContent-Length: 2\r\n\r\n", wireOther},
	} {
		var h wireHead
		if got := parseResponseHead([]byte(c.head), &h); got != c.want {
			t.Errorf("parseResponseHead(%q) = %d, want %d", c.head, got, c.want)
		}
	}
	var h wireHead
	head := "HTTP/1.1 503 Busy\r\nConnection: close\r\nServer: rt\r\nX-Batchmesh-Upstream: x\r\nContent-Length: 7\r\n\r\n"
	if parseResponseHead([]byte(head), &h) != wireOK || h.status != 503 || !h.close || !h.server || h.date || h.contentLength != 7 {
		t.Errorf("parsed %+v", h)
	}
}

// FuzzRequestHead checks that every head the fast path accepts is one
// that fasthttp's and net/http's parsers accept too, with the same method,
// target, Host, Content-Length and field values: the fast path must never
// take a request either of them would read differently.
func FuzzRequestHead(f *testing.F) {
	for _, s := range []string{
		"POST /v2/models/m/infer HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}",
		"GET /v2/models/m?x=1 HTTP/1.1\r\nHost: a:80\r\nConnection: keep-alive\r\nTE: trailers\r\n\r\n",
		"POST /v2/models/m/infer HTTP/1.1\r\nHost: h\r\nX-Batchmesh-Timeout-Ms: 5\r\ncontent-length: 0\r\nX-A: \t b \r\n\r\n",
		"GET / HTTP/1.1\r\nHost: h\r\nX-A: \x80\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var h wireHead
		if parseRequestHead(data, &h) != wireOK {
			return
		}
		head := data[:h.end]
		var fh fasthttp.RequestHeader
		if err := fh.Read(bufio.NewReader(bytes.NewReader(head))); err != nil {
			t.Fatalf("fast path accepts %q, fasthttp refuses it: %v", head, err)
		}
		if string(fh.Method()) != string(h.method) || string(fh.RequestURI()) != string(h.target) {
			t.Fatalf("%q: fasthttp reads %s %s", head, fh.Method(), fh.RequestURI())
		}
		if h.contentLength >= 0 && int64(fh.ContentLength()) != h.contentLength {
			t.Fatalf("%q: fasthttp reads Content-Length %d, the fast path %d", head, fh.ContentLength(), h.contentLength)
		}
		req, err := http.ReadRequest(bufio.NewReader(io.MultiReader(bytes.NewReader(head), bytes.NewReader(make([]byte, max(h.contentLength, 0))))))
		if err != nil {
			t.Fatalf("fast path accepts %q, net/http refuses it: %v", head, err)
		}
		if req.Method != string(h.method) || req.RequestURI != string(h.target) || req.ContentLength != max(h.contentLength, 0) {
			t.Fatalf("%q: net/http reads %s %s length %d", head, req.Method, req.RequestURI, req.ContentLength)
		}
		for _, fl := range h.fields[:h.nf] {
			if fl.drop {
				continue
			}
			if vs := req.Header.Values(string(fl.name)); !contains(vs, string(fl.value)) {
				t.Fatalf("%q: field %s is %q to the fast path, %q to net/http", head, fl.name, fl.value, vs)
			}
		}
	})
}

// FuzzResponseHead checks that every answer head the fast path relays
// itself is one that fasthttp and net/http read with the same status and
// Content-Length.
func FuzzResponseHead(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}",
		"HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 201\r\nKeep-Alive: timeout=5\r\nContent-Length: 1\r\n\r\nx",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var h wireHead
		if parseResponseHead(data, &h) != wireOK {
			return
		}
		head := data[:h.end]
		var fh fasthttp.ResponseHeader
		if err := fh.Read(bufio.NewReader(bytes.NewReader(head))); err != nil {
			t.Fatalf("fast path accepts %q, fasthttp refuses it: %v", head, err)
		}
		if fh.StatusCode() != h.status || int64(fh.ContentLength()) != h.contentLength {
			t.Fatalf("%q: fasthttp reads %d length %d", head, fh.StatusCode(), fh.ContentLength())
		}
		resp, err := http.ReadResponse(bufio.NewReader(io.MultiReader(bytes.NewReader(head), bytes.NewReader(make([]byte, h.contentLength)))), nil)
		if err != nil {
			t.Fatalf("fast path accepts %q, net/http refuses it: %v", head, err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != h.status || resp.ContentLength != h.contentLength || resp.Close != h.close {
			t.Fatalf("%q: net/http reads %d length %d close %v", head, resp.StatusCode, resp.ContentLength, resp.Close)
		}
	})
}

func contains(vs []string, v string) bool {
	for _, x := range vs {
		if x == v {
			return true
		}
	}
	return false
}
