package upstream

import (
	"net"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/batchmesh/batchmesh/internal/rawconn"
)

// maxIdleConn is how long an idle connection of Take's pool is kept, as
// fasthttp's pool keeps its own (MaxIdleConnDuration's default).
const maxIdleConn = 10 * time.Second

// Conn is a connection to an endpoint for a caller that speaks HTTP/1.1
// on it itself: the proxy's pass-through fast path. Give it back with
// Release when its last exchange ended cleanly, or Close it.
type Conn struct {
	net.Conn
	// Reused: the connection served an earlier exchange, so the runtime
	// may have closed it meanwhile (retry once on a new one if it fails
	// before any answer, as the pooled client does).
	Reused    bool
	pool      *pool
	idleSince time.Time
}

// conns is an endpoint's pool of Conns, most recently used last. open
// counts the Conns taken or idle, bounded by Config.MaxConnsPerEndpoint
// (apart from the pooled client's connections, which have their own).
type conns struct {
	mu     sync.Mutex
	idle   []*Conn
	open   int
	closed bool
}

// Take returns an idle connection to endpoint, or dials one that must be
// made by deadline; now is the time (the caller has read the clock). It
// fails with an error of kind Unavailable when the endpoint has
// Config.MaxConnsPerEndpoint connections open, and with the errors of
// Forward when it cannot connect.
func (c *Client) Take(endpoint string, now, deadline time.Time) (*Conn, error) {
	ep := c.pool(endpoint)
	rc := &ep.conns
	rc.mu.Lock()
	for len(rc.idle) > 0 {
		cn := rc.idle[len(rc.idle)-1]
		rc.idle = rc.idle[:len(rc.idle)-1]
		if now.Sub(cn.idleSince) < maxIdleConn {
			rc.mu.Unlock()
			cn.Reused = true
			return cn, nil
		}
		rc.open--
		_ = cn.Conn.Close()
	}
	if rc.open >= c.cfg.MaxConnsPerEndpoint {
		rc.mu.Unlock()
		return nil, transportError(endpoint, fasthttp.ErrNoFreeConns)
	}
	rc.open++
	rc.mu.Unlock()
	nc, err := c.dial(endpoint, deadline.Sub(now))
	if err != nil {
		rc.mu.Lock()
		rc.open--
		rc.mu.Unlock()
		return nil, transportError(endpoint, err)
	}
	return &Conn{Conn: nc, pool: ep}, nil
}

// MaxResponseBytes is Config.MaxResponseBytes, defaults applied: a caller
// of Take holds answers to it.
func (c *Client) MaxResponseBytes() int { return c.cfg.MaxResponseBytes }

// dial is the pooled client's dialler, for Take.
func (c *Client) dial(addr string, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 {
		return nil, fasthttp.ErrDialTimeout
	}
	return rawconn.DialFunc(fasthttp.DialDualStackTimeout)(addr, timeout)
}

// Release gives cn back to its pool for another exchange at time now. The
// caller must have read the whole answer and must not use cn afterwards.
func (cn *Conn) Release(now time.Time) {
	cn.idleSince = now
	rc := &cn.pool.conns
	rc.mu.Lock()
	if rc.closed {
		rc.open--
		rc.mu.Unlock()
		_ = cn.Conn.Close()
		return
	}
	rc.idle = append(rc.idle, cn)
	rc.mu.Unlock()
}

// Close closes cn and frees its place in the pool.
func (cn *Conn) Close() error {
	rc := &cn.pool.conns
	rc.mu.Lock()
	rc.open--
	rc.mu.Unlock()
	return cn.Conn.Close()
}

// closeIdle closes the idle connections; with forget, those released
// later are closed too (the endpoint left the configuration).
func (rc *conns) closeIdle(forget bool) {
	rc.mu.Lock()
	idle := rc.idle
	rc.idle = nil
	rc.open -= len(idle)
	rc.closed = rc.closed || forget
	rc.mu.Unlock()
	for _, cn := range idle {
		_ = cn.Conn.Close()
	}
}

// TransportError classifies an error of an exchange on a Conn as Forward
// classifies its own: a timeout is KindDeadline, a broken or refused
// connection KindUnavailable (and matches ErrConnect), anything else
// KindUpstream.
func TransportError(endpoint string, err error) error { return transportError(endpoint, err) }
