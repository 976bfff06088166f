package main

import (
	"errors"
	"fmt"
	"log"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
)

// serveEpoll relays with one event loop per CPU (GOMAXPROCS): the
// connections leave Go's network poller and are read and written by their
// loop on non-blocking sockets. A write that would block switches its
// socket to blocking mode for that write, stalling the loop: a reference
// point for small messages on loopback, not a proxy.
func serveEpoll(ln net.Listener, upstream string) error {
	loops := make([]*loop, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	defer func() {
		for _, l := range loops {
			if l != nil {
				l.stop.Store(true)
			}
		}
		wg.Wait()
	}()
	for i := range loops {
		ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			return fmt.Errorf("epoll_create1: %w", err)
		}
		loops[i] = &loop{ep: ep, pairs: map[int32]*pair{}}
		wg.Go(loops[i].run)
	}
	for i := 0; ; i++ {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		if err := loops[i%len(loops)].add(c, upstream); err != nil {
			log.Printf("relay: %v", err) // this connection only
		}
	}
}

// loop is one event loop: its epoll set and the pairs it relays, by the
// token of either side. An event carries its side's token, not the
// descriptor: a descriptor closed with an event still pending in the batch
// being served may already be reused by a new pair.
type loop struct {
	ep    int
	mu    sync.Mutex // guards pairs: the acceptor adds, the loop reads and drops
	pairs map[int32]*pair
	next  atomic.Int32 // the last token given
	stop  atomic.Bool  // the listener failed: close everything and end
}

// pair is a client connection and its upstream connection: their
// descriptors and tokens.
type pair struct {
	client, up       int32
	clientTok, upTok int32
	req, resp        buffer
}

// add dials upstream for c and hands both connections to the loop.
func (l *loop) add(c net.Conn, upstream string) error {
	u, err := net.Dial("tcp", upstream)
	if err != nil {
		_ = c.Close()
		return fmt.Errorf("upstream: %w", err)
	}
	p := &pair{client: -1, up: -1}
	var errs [2]error
	p.client, errs[0] = takeFD(c)
	p.up, errs[1] = takeFD(u)
	if err := errors.Join(errs[:]...); err != nil {
		for _, fd := range []int32{p.client, p.up} {
			if fd >= 0 {
				_ = syscall.Close(int(fd))
			}
		}
		return err
	}
	p.clientTok, p.upTok = l.next.Add(1), l.next.Add(1)
	// Both sides join the set under the lock, which the loop takes to
	// look a pair up: an event of the first side cannot drop the pair
	// (closing the second) before the second has joined.
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pairs[p.clientTok], l.pairs[p.upTok] = p, p
	for _, side := range [][2]int32{{p.client, p.clientTok}, {p.up, p.upTok}} {
		if err := syscall.EpollCtl(l.ep, syscall.EPOLL_CTL_ADD, int(side[0]), &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: side[1]}); err != nil {
			delete(l.pairs, p.clientTok)
			delete(l.pairs, p.upTok)
			_ = syscall.Close(int(p.client))
			_ = syscall.Close(int(p.up))
			return fmt.Errorf("epoll_ctl: %w", err)
		}
	}
	return nil
}

// takeFD takes c's socket out of Go's network poller: a duplicate of its
// descriptor (non-blocking, as Go left it), after which c is closed.
func takeFD(c net.Conn) (int32, error) {
	defer c.Close()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = syscall.Dup(int(s)) }); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, fmt.Errorf("dup: %w", derr)
	}
	return int32(fd), nil
}

// run serves the loop's events until stop, then closes its pairs and its
// epoll set.
func (l *loop) run() {
	defer func() {
		for _, p := range l.pairs {
			l.drop(p)
		}
		_ = syscall.Close(l.ep)
	}()
	events := make([]syscall.EpollEvent, 128)
	for !l.stop.Load() {
		n, err := syscall.EpollWait(l.ep, events, 100) // ms: how soon it sees stop
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			log.Printf("relay: epoll_wait: %v", err)
			return
		}
		for _, ev := range events[:n] {
			l.mu.Lock()
			p := l.pairs[ev.Fd]
			l.mu.Unlock()
			if p != nil && !p.step(ev.Fd) {
				l.drop(p)
			}
		}
	}
}

// step reads what arrived on the side with token tok and relays the whole
// messages it completes to the other side. It reports false when the pair
// must close.
func (p *pair) step(tok int32) bool {
	from, to, b := p.client, p.up, &p.req
	if tok == p.upTok {
		from, to, b = p.up, p.client, &p.resp
	}
	n, err := syscall.Read(int(from), b.b[b.n:])
	switch {
	case errors.Is(err, syscall.EAGAIN):
		return true
	case err != nil || n == 0:
		return false
	}
	b.n += n
	for {
		switch m := msgLen(b.b[:b.n]); {
		case m == 0:
			return true
		case m < 0:
			return false
		default:
			if writeAll(to, b.b[:m]) != nil {
				return false
			}
			b.consume(m)
		}
	}
}

// writeAll writes all of b to fd, blocking when the socket is full.
func writeAll(fd int32, b []byte) error {
	for len(b) > 0 {
		n, err := syscall.Write(int(fd), b)
		if errors.Is(err, syscall.EAGAIN) {
			if err := syscall.SetNonblock(int(fd), false); err != nil {
				return err
			}
			n, err = syscall.Write(int(fd), b)
			_ = syscall.SetNonblock(int(fd), true)
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// drop closes both sides of p (closing removes them from the epoll set).
func (l *loop) drop(p *pair) {
	l.mu.Lock()
	delete(l.pairs, p.clientTok)
	delete(l.pairs, p.upTok)
	l.mu.Unlock()
	_ = syscall.Close(int(p.client))
	_ = syscall.Close(int(p.up))
}
