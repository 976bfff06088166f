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
// Deadlines, Close and everything else are the net.TCPConn's own. On
// systems other than Unix, Wrap returns the connection unchanged.
package rawconn

import (
	"net"
	"time"
)

// Wrap returns c as a *Conn when it is a *net.TCPConn on a Unix system,
// and c otherwise.
func Wrap(c net.Conn) net.Conn { return wrap(c) }

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
