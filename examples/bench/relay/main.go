// Command relay is the floor of a proxy on this machine, a reference point
// for the sidecar's pass-through benchmark only (examples/bench/batching.sh
// pass): it copies HTTP/1.1 requests to a runtime and answers back and does
// nothing else — no routing, no health, no metrics, no header rewriting,
// no timeouts. Each client connection gets an upstream connection of its
// own; messages are framed by their Content-Length alone (a message
// without one has no body; one with Transfer-Encoding, or with more than
// one Content-Length, closes the connection). Two I/O models:
//
//   - -mode goroutine: a goroutine per client connection reads a request,
//     writes it upstream, reads the answer and writes it back, through
//     internal/rawconn and Go's network poller, as the sidecar does;
//   - -mode epoll (Linux): one event loop per CPU on its own epoll set
//     reads and writes non-blocking sockets, as nginx's workers do.
//
// Usage:
//
//	relay -listen 127.0.0.1:18860 -upstream 127.0.0.1:18831 -mode epoll
package main

import (
	"bytes"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"strconv"

	"github.com/batchmesh/batchmesh/internal/rawconn"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:18860", "listen address")
	upstream := flag.String("upstream", "127.0.0.1:18831", "the runtime's host:port")
	mode := flag.String("mode", "goroutine", "I/O model: goroutine or epoll")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	if err := serve(ln, *upstream, *mode); err != nil {
		fmt.Fprintln(os.Stderr, "relay:", err)
		os.Exit(1)
	}
}

// serve relays the connections ln accepts to upstream until ln fails.
func serve(ln net.Listener, upstream, mode string) error {
	switch mode {
	case "goroutine":
		return serveGoroutines(ln, upstream)
	case "epoll":
		return serveEpoll(ln, upstream)
	}
	return fmt.Errorf("-mode %q is not an I/O model; must be goroutine or epoll", mode)
}

// bufSize is each direction's buffer: the largest message relayed.
const bufSize = 16 << 10

// msgLen is the length of the HTTP/1.1 message at the start of b: 0 while
// it is incomplete, -1 when it cannot be framed by a single Content-Length
// (Transfer-Encoding, a repeated or malformed Content-Length, or a message
// over bufSize).
func msgLen(b []byte) int {
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		if len(b) >= bufSize {
			return -1
		}
		return 0
	}
	length, seen := 0, false
	for head := b[:end+2]; len(head) > 0; {
		i := bytes.Index(head, []byte("\r\n"))
		line := head[:i]
		head = head[i+2:]
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue // the start line
		}
		switch {
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return -1
		case bytes.EqualFold(name, []byte("Content-Length")):
			n, err := strconv.Atoi(string(bytes.TrimSpace(value)))
			if seen || err != nil || n < 0 || n > bufSize {
				return -1
			}
			length, seen = n, true
		}
	}
	total := end + 4 + length
	switch {
	case total > bufSize:
		return -1
	case len(b) < total:
		return 0
	}
	return total
}

// serveGoroutines relays each connection in a goroutine of its own.
func serveGoroutines(ln net.Listener, upstream string) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				log.Printf("relay: upstream: %v", err)
				return
			}
			defer u.Close()
			relayConn(rawconn.Wrap(c), rawconn.Wrap(u))
		}()
	}
}

// relayConn copies requests from c to u and answers from u to c, one at a
// time, until either side closes or sends a message it cannot frame.
func relayConn(c, u net.Conn) {
	var req, resp buffer
	for {
		n, err := req.next(c)
		if err != nil {
			return
		}
		if _, err := u.Write(req.b[:n]); err != nil {
			return
		}
		req.consume(n)
		if n, err = resp.next(u); err != nil {
			return
		}
		if _, err := c.Write(resp.b[:n]); err != nil {
			return
		}
		resp.consume(n)
	}
}

// buffer holds what was read of one direction's messages: b[:n].
type buffer struct {
	b [bufSize]byte
	n int
}

// next reads from c until the buffer holds a whole message and returns
// its length.
func (b *buffer) next(c net.Conn) (int, error) {
	for {
		switch m := msgLen(b.b[:b.n]); {
		case m > 0:
			return m, nil
		case m < 0:
			return 0, errUnframed
		}
		k, err := c.Read(b.b[b.n:])
		if err != nil {
			return 0, err
		}
		b.n += k
	}
}

// consume drops the first n bytes (a message relayed).
func (b *buffer) consume(n int) { b.n = copy(b.b[:], b.b[n:b.n]) }

var errUnframed = fmt.Errorf("a message without a single Content-Length, or over %d bytes", bufSize)
