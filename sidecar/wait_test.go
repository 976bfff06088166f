package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// readyAfter serves /readyz on 127.0.0.1: 503 for the first n calls, then 200.
func readyAfter(t *testing.T, n int64) (string, *atomic.Int64) {
	t.Helper()
	var calls atomic.Int64
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
			return
		}
		if calls.Add(1) <= n {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
		}
	})}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Close() })
	return lis.Addr().String(), &calls
}

func TestWaitReady(t *testing.T) {
	addr, calls := readyAfter(t, 3)
	if err := runWait(context.Background(), []string{"-admin", addr, "-timeout", "10s"}, io.Discard); err != nil {
		t.Fatal(err)
	}
	if got := calls.Load(); got != 4 {
		t.Fatalf("%d calls; want 3 refused and the fourth ready", got)
	}
}

func TestWaitTimesOut(t *testing.T) {
	addr, _ := readyAfter(t, 1<<40)
	start := time.Now()
	err := runWait(context.Background(), []string{"-admin", addr, "-timeout", "300ms"}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "not ready within 300ms") || !strings.Contains(err.Error(), "503") {
		t.Fatalf("error %v; want not ready within 300ms, naming the 503", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %s", d)
	}
	for _, args := range [][]string{{"-timeout", "0s"}, {"extra"}} {
		if err := runWait(context.Background(), args, io.Discard); err == nil || !strings.HasPrefix(err.Error(), "wait: ") {
			t.Errorf("%q: %v", args, err)
		}
	}
}
