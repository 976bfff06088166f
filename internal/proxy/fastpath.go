package proxy

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/batchmesh/batchmesh/internal/codec"
)

// The pass-through fast path. fasthttp's server and client cost the
// sidecar about half again nginx's CPU per pass-through request (parsing
// into header objects, buffered readers and writers, pools, a deadline set
// per call); a loop that reads a request head, writes it to a pooled
// runtime connection and copies the answer back costs no more than nginx.
// FastListener runs that loop on every connection of the inference
// listener and hands a connection to fasthttp, for good, at the first
// request the loop does not take: a batched request, one outside the head
// subset of wire.go, a body over fastBuffer, a refused or failed request
// that needs an error answer of the full handler. Requests it takes get
// what the handler's pass-through gives them: the same endpoint choice,
// header rewriting, timeouts, metrics and health reports.

// fastBuffer is the size of a fast connection's read buffer, and so the
// largest request (head and body) the fast path takes.
const fastBuffer = 16 << 10

// FastListener is the inference listener with the pass-through fast path.
// Serve srv on it: its Accept serves the connections it accepts itself and
// gives srv the ones it hands over with ServeConn, so it never returns a
// connection, only the wrapped listener's error. Close (srv.Shutdown calls
// it) starts the drain; Wait waits for it.
type FastListener struct {
	net.Listener
	p     *Proxy
	srv   *fasthttp.Server
	open  atomic.Int64
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[*fastConn]struct{}
	drain atomic.Bool

	// Serves, when set, tells for a request the fast path would take
	// whether the proxy serves it at all: a transparent listener's
	// connection may be bound for a destination that is not a model's
	// endpoint. A request it refuses goes, with its connection, to the
	// server's handler, which passes it on. Set it before serving.
	Serves func(c net.Conn, method, path, host []byte) bool
}

// FastPath returns ln with the pass-through fast path in front of srv,
// which must be the server NewServer returned (with its Concurrency set
// as it will be served).
func (p *Proxy) FastPath(ln net.Listener, srv *fasthttp.Server) *FastListener {
	return &FastListener{Listener: ln, p: p, srv: srv, conns: map[*fastConn]struct{}{}}
}

// Accept serves each accepted connection in a goroutine of its own and
// returns only the wrapped listener's error.
func (l *FastListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		limit := int64(l.srv.Concurrency)
		if limit <= 0 {
			limit = fasthttp.DefaultConcurrency
		}
		if l.open.Add(1) > limit || l.drain.Load() {
			l.open.Add(-1)
			go refuseConn(c, limit)
			continue
		}
		fc := &fastConn{l: l, p: l.p, c: c, buf: make([]byte, fastBuffer)}
		if u, ok := c.(unwrapper); ok {
			raw, pending, first := u.Unwrap()
			fc.c, fc.n, fc.limit = raw, copy(fc.buf, pending), first
		}
		l.mu.Lock()
		l.conns[fc] = struct{}{}
		l.mu.Unlock()
		l.wg.Add(1)
		go fc.serve()
	}
}

// unwrapper is a connection that has read ahead (the gRPC split's
// sniffing): Unwrap gives the connection under it, what it read and the
// limit of the first read deadline.
type unwrapper interface {
	Unwrap() (net.Conn, []byte, time.Time)
}

// refuseConn answers a connection over the limit with 503 and closes it,
// as fasthttp's server does.
func refuseConn(c net.Conn, limit int64) {
	body := `{"error":"proxy: the inference listener has its limit of ` + strconv.FormatInt(limit, 10) + ` connections open; retry later"}` + "\n"
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = c.Write([]byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body))
	_ = c.Close()
}

// Close stops accepting and starts the drain: idle connections close now,
// busy ones after the answer they are writing (which says Connection:
// close).
func (l *FastListener) Close() error {
	l.drain.Store(true)
	l.mu.Lock()
	for fc := range l.conns {
		if fc.idle.Load() {
			_ = fc.c.SetReadDeadline(time.Unix(1, 0))
		}
	}
	l.mu.Unlock()
	return l.Listener.Close()
}

// Wait waits until every connection the fast path still serves has
// closed (those handed to fasthttp are its server's), or ctx ends.
func (l *FastListener) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fastConn is one connection on the fast path.
type fastConn struct {
	l    *FastListener
	p    *Proxy
	c    net.Conn
	idle atomic.Bool // waiting for a request's first byte
	buf  []byte      // read buffer: buf[:n] is read and not yet served
	n    int
	h    wireHead // the request in buf
	out  []byte   // write buffer
	up   fastUpstream
	// series are the metric series of the last answer.
	series passSeries
	// deadline is the read deadline set on c; limit, when set, bounds
	// the first one (the time spent sniffing the connection counts).
	deadline, limit time.Time
}

// setReadDeadline sets c's read deadline to now + timeout, or keeps the
// one set when it is no later and at most timeout/64 earlier: a timer
// update per request is a tenth of the path's own CPU, and the timeouts
// bound waits of seconds to minutes.
func (fc *fastConn) setReadDeadline(now time.Time, timeout time.Duration) {
	d := now.Add(timeout)
	if !fc.limit.IsZero() {
		d, fc.limit = minTime(d, fc.limit), time.Time{}
	} else if !fc.deadline.After(d) && d.Sub(fc.deadline) <= timeout/64 {
		return
	}
	fc.deadline = d
	_ = fc.c.SetReadDeadline(d)
}

// serve is the connection's loop: it serves requests while they are for
// the fast path, then hands the connection to fasthttp, or closes it.
func (fc *fastConn) serve() {
	defer fc.l.wg.Done()
	handed := false
	defer func() {
		fc.l.mu.Lock()
		delete(fc.l.conns, fc)
		fc.l.mu.Unlock()
		if !handed {
			_ = fc.c.Close()
		}
		fc.l.open.Add(-1)
	}()
	for first := true; ; first = false {
		v, ok := fc.readHead(first)
		fc.limit = time.Time{} // it bounds the first request only
		if !ok {
			return
		}
		why := "a request head outside the fast path's subset (method, version, framing or fields)"
		if v == wireOK {
			served, keep, whyNot := fc.serveRequest()
			if served {
				if !keep {
					return
				}
				continue
			}
			why = whyNot
		}
		handed = true
		fc.handOver(why)
		return
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// readHead waits for a request and reads its head into buf, within the
// idle timeout (the header timeout for the connection's first request)
// for its first byte and the header timeout from there. It reports false
// when the connection should close: the client closed it, a timeout, the
// drain.
func (fc *fastConn) readHead(first bool) (wireVerdict, bool) {
	cfg := &fc.p.cfg
	if fc.n == 0 {
		wait := cfg.IdleTimeout
		if first {
			wait = cfg.HeaderTimeout
		}
		// Idle, then the deadline, then the drain's flag: a drain that
		// starts after the check sees the connection idle and moves its
		// deadline after this one.
		fc.idle.Store(true)
		fc.setReadDeadline(time.Now(), wait)
		if fc.l.drain.Load() {
			return 0, false
		}
		n, err := fc.c.Read(fc.buf)
		fc.idle.Store(false)
		if err != nil {
			return 0, false
		}
		fc.n = n
	}
	deadline := false
	for {
		v := parseRequestHead(fc.buf[:fc.n], &fc.h)
		if v != wireIncomplete || fc.n == len(fc.buf) {
			if v == wireIncomplete {
				v = wireOther // a head over the buffer: fasthttp's limit decides
			}
			return v, true
		}
		if !deadline {
			fc.setReadDeadline(time.Now(), cfg.HeaderTimeout)
			deadline = true
		}
		n, err := fc.c.Read(fc.buf[fc.n:])
		if err != nil {
			return 0, false
		}
		fc.n += n
	}
}

// readBody reads until buf holds need bytes, within the body timeout.
func (fc *fastConn) readBody(need int) bool {
	if fc.n >= need {
		return true
	}
	fc.setReadDeadline(time.Now(), fc.p.cfg.BodyTimeout)
	for fc.n < need {
		n, err := fc.c.Read(fc.buf[fc.n:])
		if err != nil {
			return false
		}
		fc.n += n
	}
	return true
}

// handOver gives the connection, with what it has read, to fasthttp's
// server, which serves it from there on like any other. why goes to the
// debug log, once per connection.
func (fc *fastConn) handOver(why string) {
	if log := fc.p.cfg.Logger; log.Enabled(context.Background(), slog.LevelDebug) {
		line := fc.buf[:min(fc.n, 200)]
		if i := bytes.Index(line, []byte("\r\n")); i >= 0 {
			line = line[:i]
		}
		log.Debug("fast path: connection handed to the full handler", "remote", fc.c.RemoteAddr().String(), "why", why, "request", strconv.Quote(string(line)))
	}
	_ = fc.c.SetReadDeadline(time.Time{})
	c := &handedConn{Conn: fc.c, pending: append([]byte(nil), fc.buf[:fc.n]...)}
	fc.buf, fc.out = nil, nil
	fc.up.close()
	fc.up.buf, fc.up.resp = nil, nil
	_ = fc.l.srv.ServeConn(c)
}

// handedConn is a connection handed to fasthttp: reads return what the
// fast path had read first.
type handedConn struct {
	net.Conn
	pending []byte
}

// NetConn is the connection under c, for a handler that looks for the
// transparent listener's connection (capture.Captured).
func (c *handedConn) NetConn() net.Conn { return c.Conn }

func (c *handedConn) Read(b []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// route finds the model and version of a request that the handler would
// pass through, and its deadline. ok is false for anything else,
// including requests the handler answers with an error.
func (fc *fastConn) route(start time.Time) (m *model, v *version, deadline time.Time, ok bool) {
	path := fc.h.target
	if i := bytes.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if bytes.ContainsAny(path, "%#") {
		return nil, nil, time.Time{}, false // fasthttp decodes such paths
	}
	if !cleanPath(path) {
		return nil, nil, time.Time{}, false
	}
	route := codec.ParseRoute(string(path))
	if route.Model == "" {
		return nil, nil, time.Time{}, false
	}
	if fc.l.Serves != nil && !fc.l.Serves(fc.c, fc.h.method, path, fc.h.host) {
		return nil, nil, time.Time{}, false
	}
	m = fc.p.st.Load().models[route.Model]
	if m == nil || routeProtocol(route.Kind) != m.cfg.Protocol {
		return nil, nil, time.Time{}, false
	}
	v, err := fc.p.pickVersion(m, route.Version)
	if err != nil {
		return nil, nil, time.Time{}, false
	}
	if !passesThrough(route, v) {
		return nil, nil, time.Time{}, false
	}
	timeout, err := timeoutMs(fc.h.timeoutMs, m.cfg.Batching.Timeout)
	if err != nil {
		return nil, nil, time.Time{}, false
	}
	return m, v, start.Add(timeout), true
}

// cleanPath reports whether path has no empty, "." or ".." segment, which
// fasthttp would normalise.
func cleanPath(path []byte) bool {
	for i := 0; i < len(path); i++ {
		if path[i] != '/' {
			continue
		}
		rest := path[i+1:]
		if len(rest) == 0 && i > 0 {
			return true // a trailing slash is kept
		}
		if len(rest) > 0 && rest[0] == '/' {
			return false
		}
		if len(rest) > 0 && rest[0] == '.' {
			if len(rest) == 1 || rest[1] == '/' || (rest[1] == '.' && (len(rest) == 2 || rest[2] == '/')) {
				return false
			}
		}
	}
	return true
}
