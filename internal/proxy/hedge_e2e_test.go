package proxy

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// buildModel builds the model binary into the test's temporary directory
// (the go build cache makes every build after the first a link).
func buildModel(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "model")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/batchmesh/batchmesh/model").CombinedOutput()
	if err != nil {
		t.Fatalf("go build ./model: %v\n%s", err, out)
	}
	return bin
}

// lockedBuffer is a bytes.Buffer a process writes to while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// runtimeProcess is a reference model runtime in a process of its own,
// so that a test can SIGSTOP it as a stuck driver would freeze it.
type runtimeProcess struct {
	addr string
	cmd  *exec.Cmd
}

// startRuntimeProcess runs the model binary bin with flags on a free loopback
// port and waits until it is ready. It is killed at cleanup.
func startRuntimeProcess(t *testing.T, bin string, flags ...string) *runtimeProcess {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var out lockedBuffer
	cmd := exec.Command(bin, append([]string{"-listen", addr, "-grpc-listen", "off"}, flags...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("runtime %s output:\n%s", addr, out.String())
		}
	})
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		if r, err := http.Get("http://" + addr + "/v2/health/ready"); err == nil {
			r.Body.Close()
			if r.StatusCode == http.StatusOK {
				return &runtimeProcess{addr: addr, cmd: cmd}
			}
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("runtime %s not ready after 20s:\n%s", addr, out.String())
		}
	}
}

func (r *runtimeProcess) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := r.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%v to runtime %s: %v", sig, r.addr, err)
	}
}

// TestSIGSTOPNoClientError is the hung-runtime scenario: two runtime
// processes behind the sidecar, 32 closed-loop clients with a 1 s
// deadline, and one runtime frozen with SIGSTOP for 10 s (3 s with
// -short). No request may fail or take longer than its deadline: batches
// stuck on the frozen runtime are hedged on the other one, and the
// late attempts eject the frozen runtime. Every answer carries the bytes
// the runtime computes for that request (checked against answers fetched
// directly beforehand).
func TestSIGSTOPNoClientError(t *testing.T) {
	const model = "p"
	flags := []string{"-model", model + "=sim:linear/2ms+50us", "-slots", "2"}
	bin := buildModel(t)
	a, b := startRuntimeProcess(t, bin, flags...), startRuntimeProcess(t, bin, flags...)
	sc := startSidecar(t, fmt.Sprintf(`models:
  - name: %s
    batching: {max_batch_size: 32, timeout: 1s}
    versions: [{version: "1", endpoints: [{address: %s, slots: 2}, {address: %s, slots: 2}]}]
`, model, a.addr, b.addr))

	const clients, distinct = 32, 4
	want := map[string][]byte{} // request id → the runtime's output bytes
	for c := range clients {
		for s := range distinct {
			req := rowsRequest(1, 3, c, s)
			_, resp, err := send("http://"+a.addr+"/v2/models/"+model+"/infer", req, true, nil)
			if err != nil {
				t.Fatalf("direct call: %v", err)
			}
			want[req.ID] = resp.Outputs[0].Data
		}
	}

	freeze := 10 * time.Second
	if testing.Short() {
		freeze = 3 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	var ok, failed atomic.Int64
	var mu sync.Mutex
	var failures []string
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			for seq := 0; ctx.Err() == nil; seq++ {
				req := rowsRequest(1, 3, c, seq%distinct)
				start := time.Now()
				r, resp, err := send(sc.url+"/v2/models/"+model+"/infer", req, true, nil)
				took := time.Since(start)
				switch {
				case err != nil || r.status != http.StatusOK:
					failed.Add(1)
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%s: %d %v %s", req.ID, r.status, err, r.body))
					mu.Unlock()
				case took > time.Second:
					failed.Add(1)
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%s: answered after %v, past the client's 1s timeout", req.ID, took))
					mu.Unlock()
				case len(resp.Outputs) != 1 || !bytes.Equal(resp.Outputs[0].Data, want[req.ID]):
					failed.Add(1)
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%s: wrong bytes from %s", req.ID, r.header.Get("X-Batchmesh-Upstream")))
					mu.Unlock()
				default:
					ok.Add(1)
				}
			}
		})
	}
	time.Sleep(time.Second) // warm-up: both runtimes answer, latencies learned
	b.signal(t, syscall.SIGSTOP)
	frozenAt := time.Now()
	for !sc.p.health.Ejected(b.addr) && time.Since(frozenAt) < freeze {
		time.Sleep(10 * time.Millisecond)
	}
	ejectedAfter := time.Since(frozenAt)
	time.Sleep(time.Until(frozenAt.Add(freeze)))
	b.signal(t, syscall.SIGCONT)
	time.Sleep(time.Second)
	cancel()
	wg.Wait()

	t.Logf("%d answers, %d failures; the frozen runtime was ejected after %v", ok.Load(), failed.Load(), ejectedAfter.Round(time.Millisecond))
	if n := failed.Load(); n > 0 {
		t.Errorf("%d client errors, want none; first ones: %q", n, failures[:min(len(failures), 5)])
	}
	if ejectedAfter >= freeze {
		t.Errorf("the frozen runtime was never ejected in %v", freeze)
	}
	if ok.Load() < clients {
		t.Errorf("only %d answers", ok.Load())
	}
}
