package capture

import (
	"bufio"
	"errors"
	"net"
	"sync"
	"time"
)

// HTTP2Preface is the client connection preface of HTTP/2 with prior
// knowledge, as gRPC clients send it first on a plaintext connection.
const HTTP2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// DefaultSplitTimeout bounds the wait for a connection's first bytes in a
// Split.
const DefaultSplitTimeout = 10 * time.Second

// errSplitClosed is what the split listeners' Accept returns once closed.
var errSplitClosed = errors.New("capture: split listener closed")

// Split serves two servers on one listener: it reads the first bytes of
// each connection that ln accepts and hands those that start with the
// HTTP/2 preface to HTTP2 (a gRPC server's listener), every other one to
// HTTP1, with the bytes it read to be read again. ln may be a Listener:
// its *Conn values (and their original destinations) go to HTTP1 as they
// are. Build it with NewSplit; the accept loop starts on the first Accept
// of either side.
type Split struct {
	ln      net.Listener
	timeout time.Duration
	once    sync.Once
	h1, h2  *splitSide
	done    chan struct{}
	err     error // why the accept loop ended; read after done is closed
}

// NewSplit wraps ln. A connection that sends nothing within timeout
// (default DefaultSplitTimeout when ≤ 0) is closed. It starts nothing.
func NewSplit(ln net.Listener, timeout time.Duration) *Split {
	if timeout <= 0 {
		timeout = DefaultSplitTimeout
	}
	s := &Split{ln: ln, timeout: timeout, done: make(chan struct{})}
	s.h1 = &splitSide{s: s, c: make(chan net.Conn), shut: make(chan struct{})}
	s.h2 = &splitSide{s: s, c: make(chan net.Conn), shut: make(chan struct{})}
	return s
}

// HTTP1 is the listener of the connections that do not start with the
// HTTP/2 preface.
func (s *Split) HTTP1() net.Listener { return s.h1 }

// HTTP2 is the listener of the connections that start with the HTTP/2
// preface.
func (s *Split) HTTP2() net.Listener { return s.h2 }

// Close closes ln; both sides' Accept then fail. Connections being sniffed
// are closed once their first bytes arrive or their time is up.
func (s *Split) Close() error { return s.ln.Close() }

func (s *Split) acceptLoop() {
	defer close(s.done)
	for {
		c, err := s.ln.Accept()
		if err != nil {
			s.err = err
			return
		}
		go s.classify(c) // ends when c is handed on, refused or closed
	}
}

// peeker is a connection whose first bytes can be read without consuming
// them (a *Conn of the transparent Listener).
type peeker interface {
	Peek(n int) ([]byte, error)
}

// classify reads just enough of c to tell the HTTP/2 preface from
// anything else and hands c to its side.
func (s *Split) classify(c net.Conn) {
	limit := time.Now().Add(s.timeout)
	p, ok := c.(peeker)
	var pc *peekedConn
	if !ok {
		pc = &peekedConn{Conn: c, r: bufio.NewReader(c)}
		p, c = pc, pc
	}
	_ = c.SetReadDeadline(limit)
	h2, err := isHTTP2(p)
	_ = c.SetReadDeadline(time.Time{})
	if err != nil {
		_ = c.Close()
		return
	}
	side := s.h1
	if h2 {
		side = s.h2
	} else if pc != nil {
		pc.limit = limit // the sniff's time counts against the first request's header timeout
	}
	select {
	case side.c <- c:
	case <-s.done:
		_ = c.Close()
	case <-side.shut:
		_ = c.Close()
	}
}

// isHTTP2 peeks one byte more at a time while what arrived is a prefix of
// the preface, so that a short HTTP/1.x request is never waited on.
func isHTTP2(p peeker) (bool, error) {
	for n := 1; n <= len(HTTP2Preface); n++ {
		b, err := p.Peek(n)
		if err != nil {
			return false, err
		}
		if b[n-1] != HTTP2Preface[n-1] {
			return false, nil
		}
	}
	return true, nil
}

// splitSide is one of a Split's two listeners.
type splitSide struct {
	s        *Split
	c        chan net.Conn
	shut     chan struct{} // closed by Close
	shutOnce sync.Once
}

func (l *splitSide) Accept() (net.Conn, error) {
	l.s.once.Do(func() { go l.s.acceptLoop() })
	select {
	case c := <-l.c:
		return c, nil
	case <-l.s.done:
		return nil, l.s.err
	case <-l.shut:
		return nil, errSplitClosed
	}
}

// Close stops this side; the other side goes on. Closing both does not
// close the underlying listener: Split.Close does.
func (l *splitSide) Close() error {
	l.shutOnce.Do(func() { close(l.shut) })
	return nil
}

func (l *splitSide) Addr() net.Addr { return l.s.ln.Addr() }

// peekedConn reads again the bytes sniffed from its connection. Its first
// SetReadDeadline — the HTTP server's header timeout of the first request
// — is moved no later than limit (when set), so that the time the split
// spent reading the first bytes counts against that timeout; later ones
// are the caller's. Only the goroutine serving the connection sets them.
type peekedConn struct {
	net.Conn
	r     *bufio.Reader
	limit time.Time
}

func (c *peekedConn) SetReadDeadline(t time.Time) error {
	if !c.limit.IsZero() {
		if t.IsZero() || t.After(c.limit) {
			t = c.limit
		}
		c.limit = time.Time{}
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Unwrap returns the connection under c, the bytes c has read from it
// and not yet returned, and the limit of its first read deadline (zero
// when none), for a caller that reads the connection itself from then on
// (the proxy's pass-through fast path) and no longer uses c.
func (c *peekedConn) Unwrap() (net.Conn, []byte, time.Time) {
	b, _ := c.r.Peek(c.r.Buffered())
	return c.Conn, b, c.limit
}

func (c *peekedConn) Peek(n int) ([]byte, error) { return c.r.Peek(n) }

// Peek returns the next n bytes without consuming them.
func (c *Conn) Peek(n int) ([]byte, error) { return c.r.Peek(n) }
