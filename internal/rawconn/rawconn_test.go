//go:build unix

package rawconn

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestMain runs the tests on the direct path even in a race-enabled build
// (race.go): they order their goroutines without relying on I/O.
func TestMain(m *testing.M) {
	direct = true
	os.Exit(m.Run())
}

// pair returns a connected loopback TCP pair: the accepted end and the
// dialled end, both wrapped.
func pair(t testing.TB) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ln = Listener{Listener: ln}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(); _ = c.Close() })
	return s, Wrap(c)
}

func TestWrapsTCPOnly(t *testing.T) {
	s, c := pair(t)
	if _, ok := s.(*Conn); !ok {
		t.Fatalf("accepted conn is %T, want *Conn", s)
	}
	if _, ok := c.(*Conn); !ok {
		t.Fatalf("dialled conn is %T, want *Conn", c)
	}
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	if got := Wrap(p1); got != p1 {
		t.Fatalf("Wrap(net.Pipe) = %T, want it unchanged", got)
	}
}

// TestBothWaysLarge sends 16 MiB each way at once, more than the socket
// buffers hold, so that both ends meet EAGAIN and wait in the poller.
func TestBothWaysLarge(t *testing.T) {
	s, c := pair(t)
	a := make([]byte, 16<<20)
	b := make([]byte, 16<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range a {
		a[i], b[i] = byte(r.Uint32()), byte(r.Uint32())
	}
	errs := make(chan error, 2)
	go func() { _, err := c.Write(a); errs <- err }()
	go func() { _, err := s.Write(b); errs <- err }()
	gotA, gotB := make([]byte, len(a)), make([]byte, len(b))
	readErr := make(chan error, 1)
	go func() { _, err := io.ReadFull(c, gotB); readErr <- err }()
	if _, err := io.ReadFull(s, gotA); err != nil {
		t.Fatal(err)
	}
	if err := <-readErr; err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(gotA, a) || !bytes.Equal(gotB, b) {
		t.Fatal("bytes differ")
	}
}

func TestReadDeadline(t *testing.T) {
	s, _ := pair(t)
	if err := s.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	n, err := s.Read(make([]byte, 16))
	var ne net.Error
	if n != 0 || !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read = %d, %v; want a timeout (os.ErrDeadlineExceeded)", n, err)
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Fatalf("Read returned after %v, before its deadline", d)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("error %v is not a read *net.OpError", err)
	}
}

func TestWriteDeadline(t *testing.T) {
	s, _ := pair(t) // nobody reads the client end: the buffers fill
	if err := s.SetWriteDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	n, err := s.Write(make([]byte, 64<<20))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write = %d, %v; want os.ErrDeadlineExceeded", n, err)
	}
	if n == 0 || n >= 64<<20 {
		t.Fatalf("Write reported %d bytes; want the part the buffers took", n)
	}
}

func TestEOFAndClose(t *testing.T) {
	s, c := pair(t)
	if _, err := c.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	got, err := io.ReadAll(s)
	if err != nil || string(got) != "bye" {
		t.Fatalf("ReadAll = %q, %v; want \"bye\" then EOF", got, err)
	}
	if n, err := s.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("Read after EOF = %d, %v; want 0, io.EOF", n, err)
	}

	s2, _ := pair(t)
	done := make(chan error, 1)
	go func() { _, err := s2.Read(make([]byte, 1)); done <- err }()
	time.Sleep(10 * time.Millisecond) // let Read wait in the poller (it returns either way)
	_ = s2.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read on a closed conn = %v; want net.ErrClosed", err)
	}
	if _, err := s2.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write on a closed conn = %v; want net.ErrClosed", err)
	}
}

func TestReset(t *testing.T) {
	s, c := pair(t)
	_ = c.(*Conn).SetLinger(0)
	_ = c.Close() // RST
	var err error
	for range 100 { // the reset arrives at once on loopback; the loop is a bound
		if _, err = s.Write([]byte("x")); err != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("Write to a reset connection = %v; want ECONNRESET or EPIPE", err)
	}
	var se *os.SyscallError
	if !errors.As(err, &se) || se.Syscall != "write" {
		t.Fatalf("error %v carries no write *os.SyscallError", err)
	}
}

func TestZeroLengthRead(t *testing.T) {
	s, _ := pair(t)
	if n, err := s.Read(nil); n != 0 || err != nil {
		t.Fatalf("Read(nil) = %d, %v; want 0, nil without waiting", n, err)
	}
}

// BenchmarkPingPong is one small request and answer over loopback, with
// both ends plain net.Conn or both wrapped. Compare the CPU it costs with
// -cpuprofile or time(1): the wrapped ends do not enter the scheduler's
// system-call state.
func BenchmarkPingPong(b *testing.B) {
	for _, wrap := range []bool{false, true} {
		name := "net"
		if wrap {
			name = "rawconn"
		}
		b.Run(name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			go func() {
				s, err := ln.Accept()
				if err != nil {
					return
				}
				if wrap {
					s = Wrap(s)
				}
				buf := make([]byte, 512)
				for {
					n, err := s.Read(buf)
					if err != nil {
						return
					}
					if _, err := s.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			if wrap {
				c = Wrap(c)
			}
			msg, buf := bytes.Repeat([]byte("x"), 256), make([]byte, 256)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
