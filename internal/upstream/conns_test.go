package upstream_test

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/batchmesh/batchmesh/internal/inference"
	"github.com/batchmesh/batchmesh/internal/upstream"
)

// acceptor accepts connections on a loopback port and holds them open.
func acceptor(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { _ = c.Close() })
		}
	}()
	return ln.Addr().String()
}

// TestTakeReusesAndBounds: Take hands back the connection released last,
// dials past the idle ones, refuses past MaxConnsPerEndpoint with an
// Unavailable error, and drops a connection idle longer than 10 s.
func TestTakeReusesAndBounds(t *testing.T) {
	addr := acceptor(t)
	c := upstream.New(upstream.Config{MaxConnsPerEndpoint: 2})
	defer c.Close()
	now := time.Now()
	deadline := now.Add(5 * time.Second)
	a, err := c.Take(addr, now, deadline)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Take(addr, now, deadline)
	if err != nil {
		t.Fatal(err)
	}
	if a.Reused || b.Reused || a == b {
		t.Fatalf("two fresh connections expected: %p %v, %p %v", a, a.Reused, b, b.Reused)
	}
	if _, err := c.Take(addr, now, deadline); !errors.Is(err, inference.ErrUnavailable) {
		t.Fatalf("third connection with a limit of 2: %v, want Unavailable", err)
	}
	a.Release(now)
	b.Release(now.Add(time.Second))
	got, err := c.Take(addr, now.Add(2*time.Second), deadline)
	if err != nil || got != b || !got.Reused {
		t.Fatalf("Take after two releases: %p (reused %v) %v, want the last released, %p", got, got.Reused, err, b)
	}
	// a has been idle 11 s by now: closed, and a new one dialled.
	fresh, err := c.Take(addr, now.Add(11*time.Second), deadline.Add(11*time.Second))
	if err != nil || fresh == a || fresh.Reused {
		t.Fatalf("Take with the idle connection stale: %p (reused %v) %v", fresh, fresh.Reused, err)
	}
	if _, err := a.Conn.Write([]byte("x")); err == nil {
		t.Error("the stale idle connection is still open")
	}
	_ = got.Close()
	_ = fresh.Close()
	if cn, err := c.Take(addr, now, deadline); err != nil {
		t.Fatalf("Take after closing both: %v", err)
	} else {
		_ = cn.Close()
	}
}

// TestTakeForget: a forgotten endpoint's idle connections close, and so do
// those released after.
func TestTakeForget(t *testing.T) {
	addr := acceptor(t)
	c := upstream.New(upstream.Config{})
	defer c.Close()
	now := time.Now()
	idle, err := c.Take(addr, now, now.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	busy, err := c.Take(addr, now, now.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	idle.Release(now)
	c.Forget(addr)
	busy.Release(now)
	for _, cn := range []*upstream.Conn{idle, busy} {
		if _, err := cn.Conn.Write([]byte("x")); err == nil {
			t.Error("a connection of the forgotten endpoint is still open")
		}
	}
	next, err := c.Take(addr, now, now.Add(time.Second))
	if err != nil || next.Reused {
		t.Fatalf("Take after Forget: reused %v, %v; want a new connection", next != nil && next.Reused, err)
	}
	_ = next.Close()
}

// TestTakeRefused: a refused dial is Unavailable and matches ErrConnect,
// as Forward's; a passed deadline is Deadline.
func TestTakeRefused(t *testing.T) {
	c := upstream.New(upstream.Config{})
	defer c.Close()
	now := time.Now()
	_, err := c.Take(deadAddr(t), now, now.Add(time.Second))
	if !errors.Is(err, inference.ErrUnavailable) || !errors.Is(err, upstream.ErrConnect) {
		t.Errorf("refused: %v, want Unavailable and ErrConnect", err)
	}
	addr := acceptor(t)
	if _, err := c.Take(addr, now, now.Add(-time.Second)); !errors.Is(err, inference.ErrDeadline) {
		t.Errorf("deadline passed: %v, want Deadline", err)
	}
}
