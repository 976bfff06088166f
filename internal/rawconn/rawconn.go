// Package rawconn makes TCP reads and writes without the Go scheduler's
// system-call bookkeeping.
//
// A read or write on a net.Conn enters the scheduler's "in a system call"
// state. When that state outlasts one tick of the runtime's monitor thread
// (sysmon, 20 µs) while other goroutines wait, the monitor hands the
// thread's processor to another thread, waking it, and keeps ticking every
// 20 µs for as long as it finds such calls. Loopback TCP writes, which
// deliver to the peer inside the call, often take that long on a virtual
// machine: under a proxy's load the monitor then never backs off, and the
// hand-offs and wake-ups cost more CPU than the proxying itself.
//
// The sockets are non-blocking, so a read or write returns at once (with
// EAGAIN when it would block, after which Conn waits in the network poller
// as net.Conn does). Conn makes the call directly (syscall.RawSyscall) in
// the poller's raw-I/O callback, so the scheduler sees ordinary Go code.
// Deadlines, Close and everything else are the net.TCPConn's own.
package rawconn

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"time"
	"unsafe"
)

// direct is whether Read and Write make their system calls directly; see
// race.go.
var direct = !raceEnabled

// Conn is a *net.TCPConn whose Read and Write make their system calls
// directly. A Conn is safe for one reader and one writer at a time, as
// net.Conn is in practice.
type Conn struct {
	*net.TCPConn
	rc syscall.RawConn

	rbuf  []byte
	rn    int
	rerr  syscall.Errno
	readF func(fd uintptr) bool

	wbuf   []byte
	wn     int
	werr   syscall.Errno
	writeF func(fd uintptr) bool
}

// Wrap returns c as a Conn when it is a *net.TCPConn, and c otherwise.
func Wrap(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	rw := &Conn{TCPConn: tc, rc: rc}
	rw.readF, rw.writeF = rw.read, rw.write
	return rw
}

// Unwrap returns the *net.TCPConn under c.
func (c *Conn) Unwrap() *net.TCPConn { return c.TCPConn }

func (c *Conn) read(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&c.rbuf[0])), uintptr(len(c.rbuf)))
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		c.rn, c.rerr = int(n), e
		return true
	}
}

// maxWrite bounds one write system call, and so the time a goroutine
// spends in it unseen by the scheduler (a large write to an idle loopback
// peer copies all it is given).
const maxWrite = 1 << 20

func (c *Conn) write(fd uintptr) bool {
	for len(c.wbuf) > 0 {
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&c.wbuf[0])), uintptr(min(len(c.wbuf), maxWrite)))
		switch e {
		case 0:
			c.wn += int(n)
			c.wbuf = c.wbuf[n:]
			continue
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		c.werr = e
		return true
	}
	return true
}

// Read reads as net.Conn does.
func (c *Conn) Read(b []byte) (int, error) {
	if !direct {
		return c.TCPConn.Read(b)
	}
	if len(b) == 0 {
		return 0, nil
	}
	c.rbuf, c.rn, c.rerr = b, 0, 0
	err := c.rc.Read(c.readF)
	c.rbuf = nil
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case c.rerr != 0:
		return 0, c.opError("read", c.rerr)
	case c.rn == 0:
		return 0, io.EOF
	}
	return c.rn, nil
}

// Write writes all of b as net.Conn does.
func (c *Conn) Write(b []byte) (int, error) {
	if !direct {
		return c.TCPConn.Write(b)
	}
	c.wbuf, c.wn, c.werr = b, 0, 0
	err := c.rc.Write(c.writeF)
	c.wbuf = nil
	switch {
	case err != nil:
		return c.wn, c.opError("write", err)
	case c.werr != 0:
		return c.wn, c.opError("write", c.werr)
	}
	return c.wn, nil
}

// opError shapes err as net.Conn's own errors: a *net.OpError around the
// poller's error (a deadline, a closed connection) or an
// *os.SyscallError.
func (c *Conn) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		err = os.NewSyscallError(op, e)
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// Listener wraps the connections a TCP listener accepts.
type Listener struct{ net.Listener }

// Accept returns the next connection, wrapped.
func (l Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Wrap(c), nil
}

// DialFunc wraps the connections dial makes: for a client's dialler
// setting, such as fasthttp's DialTimeout.
func DialFunc(dial func(addr string, timeout time.Duration) (net.Conn, error)) func(addr string, timeout time.Duration) (net.Conn, error) {
	return func(addr string, timeout time.Duration) (net.Conn, error) {
		c, err := dial(addr, timeout)
		if err != nil {
			return nil, err
		}
		return Wrap(c), nil
	}
}
