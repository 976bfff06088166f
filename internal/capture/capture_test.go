package capture_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/batchmesh/batchmesh/internal/capture"
)

func TestIsHTTP1(t *testing.T) {
	for in, want := range map[string]bool{
		"GET / HT": true, "POST /v2": true, "OPTIONS ": true, "CONNECT ": true, "DELETE /": true,
		"PRI * HT": false, "\x16\x03\x01\x02\x00\x01\x00\x01": false, "GET": false, "get / HT": false,
		"GETX / H": false, "": false, "\x00\x00\x00\x08\x04\xd2\x16\x2f": false,
	} {
		if got := capture.IsHTTP1([]byte(in)); got != want {
			t.Errorf("IsHTTP1(%q) = %v, want %v", in, got, want)
		}
	}
}

func FuzzIsHTTP1(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1"))
	f.Add([]byte("PRI * HTTP/2.0"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if capture.IsHTTP1(b) && !bytes.Contains(b[:min(len(b), 8)], []byte(" ")) {
			t.Fatalf("IsHTTP1(%q) without a method's space", b)
		}
	})
}

// TestExplicitCall: a connection that no rule redirected (its original
// destination is the listener itself) is an explicit call, served by the
// proxy's handler, and never spliced or passed through.
func TestExplicitCall(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := capture.New(capture.Config{Listener: ln})
	if err != nil {
		t.Fatal(err)
	}
	r := &capture.Router{
		Next: func(rc *fasthttp.RequestCtx) {
			c := rc.Conn().(*capture.Conn)
			rc.SetBodyString("explicit=" + map[bool]string{true: "yes", false: "no"}[c.Explicit])
		},
		Serves: func([]byte, []byte, netip.AddrPort) bool {
			t.Error("Serves asked about an explicit call")
			return false
		},
	}
	srv := &fasthttp.Server{Handler: r.Handle}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(cl) }()
	defer func() {
		_ = srv.Shutdown()
		if err := cl.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
		if err := <-served; err != nil {
			t.Error(err)
		}
	}()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET /v2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := io.ReadAll(c)
	if err != nil || !bytes.HasSuffix(resp, []byte("explicit=yes")) {
		t.Errorf("explicit call answered %q (%v), want the proxy's handler with Explicit set", resp, err)
	}
}

func TestMatcher(t *testing.T) {
	var m capture.Matcher
	// A model's addresses: its endpoints, then its service addresses (a
	// Kubernetes Service's ClusterIP), as proxy.ModelEndpoints lists them.
	eps := []string{"10.0.0.5:8000", "localhost:8001", "10.96.0.10:8000"}
	for _, tt := range []struct {
		host string
		dst  string
		want bool
	}{
		{"bert:8000", "10.0.0.5:8000", true},           // by destination address
		{"10.0.0.5:8000", "10.9.9.9:8000", true},       // by Host
		{"bert:8000", "10.0.0.5:9000", false},          // other port
		{"x", "127.0.0.1:8001", true},                  // a name, resolved
		{"localhost:8001", "10.1.1.1:1", true},         // a name, by Host
		{"other:8000", "10.0.0.6:8000", false},         // not an endpoint
		{"bert.ml.svc:8000", "10.96.0.10:8000", true},  // a service address: the model
		{"bert.ml.svc:8000", "10.96.0.10:9000", false}, // a service address, other port
		{"bert:8000", "[::ffff:10.0.0.5]:8000", false}, // netip keeps the mapped form distinct; OriginalDst unmaps
	} {
		if got := m.Match(context.Background(), eps, []byte(tt.host), netip.MustParseAddrPort(tt.dst)); got != tt.want {
			t.Errorf("Match(host %s, dst %s) = %v, want %v", tt.host, tt.dst, got, tt.want)
		}
	}
}

// wrapped hands on the connection under it, as the proxy's fast path
// does for a connection it gives the HTTP server.
type wrapped struct{ net.Conn }

func (w wrapped) NetConn() net.Conn { return w.Conn }

// TestServesConn: the router decides for a server that reads requests
// itself as Handle does — explicit connections and other connections are
// the proxy's, a captured one only for a destination Serves accepts — and
// finds the captured connection under wrappers.
func TestServesConn(t *testing.T) {
	dst := netip.MustParseAddrPort("10.0.0.5:8000")
	var asked []string
	r := &capture.Router{Serves: func(path, host []byte, d netip.AddrPort) bool {
		asked = append(asked, string(path)+" "+string(host)+" "+d.String())
		return string(path) == "/v2/models/m/infer" && d == dst
	}}
	plain, _ := net.Pipe()
	captured := &capture.Conn{Conn: plain, Original: dst}
	elsewhere := &capture.Conn{Conn: plain, Original: netip.MustParseAddrPort("10.0.0.6:9001")}
	for _, tt := range []struct {
		name string
		c    net.Conn
		path string
		want bool
	}{
		{"not captured", plain, "/anything", true},
		{"explicit", &capture.Conn{Conn: plain, Explicit: true}, "/anything", true},
		{"captured, a model's endpoint", captured, "/v2/models/m/infer", true},
		{"captured, another path", captured, "/v2/models/x/infer", false},
		{"captured, another destination", elsewhere, "/v2/models/m/infer", false},
		{"wrapped twice", wrapped{wrapped{captured}}, "/v2/models/m/infer", true},
		{"wrapped, another destination", wrapped{elsewhere}, "/v2/models/m/infer", false},
	} {
		if got := r.ServesConn(tt.c, []byte("POST"), []byte(tt.path), []byte("bert:8000")); got != tt.want {
			t.Errorf("%s: ServesConn = %v, want %v", tt.name, got, tt.want)
		}
	}
	if len(asked) != 5 || asked[0] != "/v2/models/m/infer bert:8000 10.0.0.5:8000" {
		t.Errorf("Serves was asked %q: want only the 5 captured requests, with their path, host and destination", asked)
	}
	if c, ok := capture.Captured(wrapped{captured}); !ok || c != captured {
		t.Errorf("Captured(wrapped) = %v, %v: want the captured connection", c, ok)
	}
	if _, ok := capture.Captured(plain); ok {
		t.Error("Captured(a plain connection) = true")
	}
}
