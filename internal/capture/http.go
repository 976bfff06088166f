package capture

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// Router is the HTTP handler of the transparent listener's connections. A
// request on an explicit connection, or one the proxy serves (Serves), goes
// to Next, the usual proxy handler; any other captured request is
// forwarded unchanged to its original destination.
type Router struct {
	// Next is the proxy's handler.
	Next fasthttp.RequestHandler
	// Serves reports whether the proxy serves a captured request: its
	// path names a model the sidecar knows and its Host or original
	// destination is one of that model's endpoints.
	Serves func(path, host []byte, dst netip.AddrPort) bool
	// Logger receives a debug line per captured request; nil discards.
	Logger *slog.Logger

	mu      sync.Mutex
	clients map[netip.AddrPort]*fasthttp.HostClient
}

// Handle serves one request.
func (r *Router) Handle(rc *fasthttp.RequestCtx) {
	if r.ServesConn(rc.Conn(), rc.Method(), rc.Path(), rc.Host()) {
		r.Next(rc)
		return
	}
	c, _ := Captured(rc.Conn()) // ServesConn refuses captured connections only
	r.debug("captured request passed through", rc.Method(), rc.Path(), rc.Host(), c.Original)
	if err := r.client(c.Original).Do(&rc.Request, &rc.Response); err != nil {
		rc.Response.Reset()
		rc.SetStatusCode(fasthttp.StatusBadGateway)
		rc.SetContentType("text/plain; charset=utf-8")
		rc.SetBodyString(fmt.Sprintf("batchmesh: captured request to %s: %v\n", c.Original, err))
	}
}

// ServesConn reports whether the proxy serves a request for path with
// host on c: any request on an explicit connection, a captured one when
// Serves says so. Handle decides by it, and so does a server that reads
// requests itself (the proxy's pass-through fast path). It logs the
// captured requests it serves; one it does not serve is left to Handle.
func (r *Router) ServesConn(c net.Conn, method, path, host []byte) bool {
	cc, ok := Captured(c)
	if !ok || cc.Explicit {
		return true
	}
	if !r.Serves(path, host, cc.Original) {
		return false
	}
	r.debug("captured request served", method, path, host, cc.Original)
	return true
}

// Captured returns the transparent listener's connection that c is or
// wraps (through NetConn methods, as tls.Conn's), if any.
func Captured(c net.Conn) (*Conn, bool) {
	for c != nil {
		if cc, ok := c.(*Conn); ok {
			return cc, true
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return nil, false
		}
		c = u.NetConn()
	}
	return nil, false
}

func (r *Router) debug(msg string, method, path, host []byte, dst netip.AddrPort) {
	if r.Logger != nil && r.Logger.Enabled(context.Background(), slog.LevelDebug) {
		r.Logger.Debug(msg, "method", string(method), "path", string(path),
			"host", string(host), "original_dst", dst.String())
	}
}

// client returns the keep-alive client of one original destination.
func (r *Router) client(dst netip.AddrPort) *fasthttp.HostClient {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.clients == nil {
		r.clients = map[netip.AddrPort]*fasthttp.HostClient{}
	}
	hc := r.clients[dst]
	if hc == nil {
		hc = &fasthttp.HostClient{
			Addr:                          dst.String(),
			MaxIdleConnDuration:           time.Minute,
			DisableHeaderNamesNormalizing: true,
			DisablePathNormalizing:        true,
			NoDefaultUserAgentHeader:      true,
			DialDualStack:                 true,
		}
		r.clients[dst] = hc
	}
	return hc
}

// Close releases the pass-through connections.
func (r *Router) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, hc := range r.clients {
		hc.CloseIdleConnections()
	}
}
