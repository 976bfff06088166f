package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/batchmesh/batchmesh/internal/modelrt"
	"github.com/batchmesh/batchmesh/internal/runtimetest"
)

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestBadConfigFailsStartup(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(path, []byte("models:\n  - name: m\n    batching: {max_batch_sise: 4}\n    versions: [{version: \"1\", endpoints: [{address: 127.0.0.1:1}]}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	err := run([]string{"-config", path, "-listen", freeAddr(t), "-admin", freeAddr(t)}, &stderr)
	if err == nil || !strings.Contains(err.Error(), "bad.yaml:3") || !strings.Contains(err.Error(), "max_batch_sise") {
		t.Fatalf("run with an unknown key: %v, want an error naming the file, line and key", err)
	}
	if err := run(nil, &stderr); err == nil || !strings.Contains(err.Error(), "-config") {
		t.Errorf("run without -config: %v, want an error asking for it", err)
	}
	err = run([]string{"-xds", "127.0.0.1:1", "-xds-protocol", "incremental"}, &stderr)
	if err == nil || !strings.Contains(err.Error(), `-xds-protocol "incremental": want sotw or delta`) {
		t.Errorf("run with -xds-protocol incremental: %v, want an error naming the choices", err)
	}
}

// TestSIGTERMUnderLoad runs the real main loop, sends the process SIGTERM
// while 16 clients keep sending, and checks that run returns nil and that
// no client got an HTTP error: requests are either answered 200 or refused
// at the socket once the listener has closed.
func TestSIGTERMUnderLoad(t *testing.T) {
	rt := runtimetest.Start(t, modelrt.Config{Models: runtimetest.Models(t, "m=sim:linear/2ms+10us")})
	cfg := filepath.Join(t.TempDir(), "sidecar.yaml")
	yaml := fmt.Sprintf("models:\n  - name: m\n    batching: {max_batch_size: 8, timeout: 5s}\n    versions: [{version: \"1\", endpoints: [{address: %s}]}]\n", rt.Addr)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	listen, admin := freeAddr(t), freeAddr(t)
	done := make(chan error, 1)
	go func() {
		done <- run([]string{"-config", cfg, "-listen", listen, "-admin", admin, "-log-level", "warn"}, io.Discard)
	}()
	waitFor(t, func() bool {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	var ok, refused atomic.Int64
	var mu sync.Mutex
	var bad []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	body := []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[1,2]}]}`)
	for range 16 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := http.Post("http://"+listen+"/v2/models/m/infer", "application/json", bytes.NewReader(body))
				if err != nil {
					refused.Add(1)
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					ok.Add(1)
				} else {
					mu.Lock()
					bad = append(bad, fmt.Sprintf("%d %s", resp.StatusCode, b))
					mu.Unlock()
				}
			}
		})
	}
	waitFor(t, func() bool { return ok.Load() > 100 })
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run after SIGTERM: %v, want nil (exit 0)", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return within 30s of SIGTERM")
	}
	close(stop)
	wg.Wait()
	if len(bad) > 0 {
		t.Errorf("%d requests got an HTTP error during drain, e.g. %s", len(bad), bad[0])
	}
	if _, err := net.Dial("tcp", listen); err == nil {
		t.Error("the inference listener still accepts after exit")
	}
}

// waitFor polls cond until it holds, failing after 10 s. It waits for a
// state the server reaches, not for time to pass.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(10 * time.Second)
	for !cond() {
		select {
		case <-tick.C:
		case <-timeout:
			t.Fatal("condition not reached within 10s")
		}
	}
}
