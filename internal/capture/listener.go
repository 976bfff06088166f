package capture

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/batchmesh/batchmesh/internal/rawconn"
)

// Defaults of Config.
const (
	DefaultSniffTimeout = 500 * time.Millisecond
	DefaultDialTimeout  = 5 * time.Second
)

// sniffLen is how many first bytes decide whether a connection is HTTP/1.x:
// enough for the longest method and its space ("OPTIONS ", "CONNECT ").
const sniffLen = 8

// Config configures a Listener.
type Config struct {
	// Listener is the capture listener the redirect rules send
	// connections to (required). The Listener closes it.
	Listener net.Listener
	// SniffTimeout bounds the wait for a connection's first bytes; a
	// client that sends nothing by then (a protocol whose server speaks
	// first) is spliced. Default DefaultSniffTimeout.
	SniffTimeout time.Duration
	// DialTimeout bounds the connection to an original destination.
	// Default DefaultDialTimeout.
	DialTimeout time.Duration
	// Logger receives debug lines per connection; nil discards.
	Logger *slog.Logger
}

// Conn is an HTTP/1.x connection the Listener hands to the HTTP server:
// the first bytes it read are read again, and it knows where the client
// meant to go.
type Conn struct {
	net.Conn
	r *bufio.Reader
	// Original is the destination the client dialled before the
	// redirect; Explicit is true when that was the sidecar itself (or the
	// connection was not redirected): serve it as an explicit call.
	Original netip.AddrPort
	Explicit bool
}

func (c *Conn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Listener is the transparent listener: a net.Listener whose Accept
// returns only the HTTP/1.x connections (as *Conn), after reading each
// one's original destination and sniffing its first bytes. Everything else
// is spliced, byte for byte, to its original destination. Build it with
// New; it starts its accept loop on the first Accept.
type Listener struct {
	cfg  Config
	once sync.Once
	http chan *Conn
	done chan struct{}
	err  error // why the accept loop ended; read after done is closed

	mu      sync.Mutex
	splices map[net.Conn]struct{}
	shut    bool           // Shutdown has closed the splices; no new one starts
	wg      sync.WaitGroup // classify and splice goroutines
}

// New builds a Listener on cfg.Listener. It starts nothing.
func New(cfg Config) (*Listener, error) {
	if cfg.Listener == nil {
		return nil, errors.New("capture: no listener")
	}
	if cfg.SniffTimeout <= 0 {
		cfg.SniffTimeout = DefaultSniffTimeout
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Listener{cfg: cfg, http: make(chan *Conn), done: make(chan struct{}), splices: map[net.Conn]struct{}{}}, nil
}

// Accept returns the next HTTP/1.x connection.
func (l *Listener) Accept() (net.Conn, error) {
	l.once.Do(func() { go l.acceptLoop() })
	select {
	case c := <-l.http:
		return c, nil
	case <-l.done:
		return nil, l.err
	}
}

// Close stops accepting. Spliced connections go on until Shutdown.
func (l *Listener) Close() error { return l.cfg.Listener.Close() }

// Addr is the capture listener's address.
func (l *Listener) Addr() net.Addr { return l.cfg.Listener.Addr() }

// Shutdown closes the listener, waits for the spliced connections to end
// until ctx does, then closes those still open and waits for them.
func (l *Listener) Shutdown(ctx context.Context) error {
	_ = l.Close()
	ended := make(chan struct{})
	go func() { l.wg.Wait(); close(ended) }()
	select {
	case <-ended:
		return nil
	case <-ctx.Done():
	}
	l.mu.Lock()
	l.shut = true
	n := len(l.splices)
	for c := range l.splices {
		_ = c.Close()
	}
	l.mu.Unlock()
	<-ended
	return fmt.Errorf("capture: closed %d spliced connections still open: %w", n, ctx.Err())
}

func (l *Listener) acceptLoop() {
	defer close(l.done)
	for {
		c, err := l.cfg.Listener.Accept()
		if err != nil {
			l.err = err
			return
		}
		tc, ok := c.(*net.TCPConn)
		if !ok {
			_ = c.Close()
			continue
		}
		l.wg.Go(func() { l.classify(tc) })
	}
}

// classify reads c's original destination and first bytes and hands it
// on: HTTP/1.x and explicit calls to the HTTP server, the rest to splice.
func (l *Listener) classify(c *net.TCPConn) {
	dst, err := OriginalDst(c)
	explicit := err != nil || l.isSelf(c, dst)
	// The HTTP server reads and writes through rawconn (no scheduler
	// system-call state per read and write); a splice copies from c.
	rc := rawconn.Wrap(c)
	br := bufio.NewReader(rc)
	if !explicit {
		_ = c.SetReadDeadline(time.Now().Add(l.cfg.SniffTimeout))
		first, err := br.Peek(sniffLen)
		_ = c.SetReadDeadline(time.Time{})
		if err != nil || !IsHTTP1(first) {
			// A short or failed read leaves its error in br: splice
			// from the raw connection after what br holds.
			held, _ := br.Peek(br.Buffered())
			l.splice(c, append([]byte(nil), held...), dst)
			return
		}
	}
	hc := &Conn{Conn: rc, r: br, Original: dst, Explicit: explicit}
	select {
	case l.http <- hc:
	case <-l.done:
		_ = c.Close()
	}
}

// isSelf reports whether dst is the capture listener itself: a connection
// that was not redirected, or one redirected from another local address of
// the sidecar's port.
func (l *Listener) isSelf(c net.Conn, dst netip.AddrPort) bool {
	local := addrPort(c.LocalAddr())
	if dst == local {
		return true
	}
	if dst.Port() != local.Port() {
		return false
	}
	if dst.Addr().IsLoopback() || dst.Addr().IsUnspecified() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if p, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(p.IP); ok && ip.Unmap() == dst.Addr() {
				return true
			}
		}
	}
	return false
}

func addrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// httpMethods are the HTTP/1.x request methods a sniffed connection may
// start with, each with its space.
var httpMethods = []string{"GET ", "POST ", "PUT ", "HEAD ", "DELETE ", "OPTIONS ", "PATCH ", "TRACE ", "CONNECT "}

// IsHTTP1 reports whether a connection's first bytes (up to sniffLen) are
// the start of an HTTP/1.x request. HTTP/2's prior-knowledge preface ("PRI
// * HTTP/2.0") and TLS are not.
func IsHTTP1(first []byte) bool {
	for _, m := range httpMethods {
		if strings.HasPrefix(string(first), m) {
			return true
		}
	}
	return false
}
