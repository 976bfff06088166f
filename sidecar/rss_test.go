package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batchmesh/batchmesh/internal/modelrt"
	"github.com/batchmesh/batchmesh/internal/runtimetest"
)

// rssBoundMiB is the documented usual peak RSS of a sidecar at the
// default limits with the row cache empty (docs/resilience.md, "Memory"):
// 64 MiB of base, plus twice -max-body-in-flight (256 MiB by default: the
// bodies read, and what decoding them holds at most, before the GC returns
// it). Here no body reaches the runtime, so the third copy that
// examples/chaos allows for (the batch sent upstream) never exists.
const rssBoundMiB = 64 + 2*256

// freePort returns a loopback address nothing listens on right now.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startSidecarProcess builds the sidecar binary and runs it with a config
// of model p at runtime addr; it returns the process, its inference URL
// once it is ready, and its output.
func startSidecarProcess(t *testing.T, addr string, args ...string) (*os.Process, string) {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "sidecar")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/batchmesh/batchmesh/sidecar").CombinedOutput(); err != nil {
		t.Fatalf("go build ./sidecar: %v\n%s", err, out)
	}
	cfg := filepath.Join(dir, "sidecar.yaml")
	yaml := fmt.Sprintf("models:\n  - name: p\n    batching: {max_batch_size: 8, max_queue_delay: 1ms, timeout: 250ms}\n    versions: [{version: \"1\", endpoints: [{address: %s}]}]\n", addr)
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	listen, admin := freePort(t), freePort(t)
	cmd := exec.Command(bin, append([]string{"-config", cfg, "-listen", listen, "-admin", admin}, args...)...)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("sidecar output:\n%s", out.String())
		}
	})
	waitFor(t, func() bool {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return cmd.Process, "http://" + listen
}

// peakRSSMiB reads the process's VmHWM (peak resident set) in MiB.
func peakRSSMiB(t *testing.T, p *os.Process) float64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.Pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb / 1024
		}
	}
	t.Fatal("no VmHWM in /proc/PID/status")
	return 0
}

// TestRSSBound runs a sidecar process at its default limits and measures
// its peak RSS (VmHWM) after a few seconds of three times the runtime's
// capacity, then after eight concurrent 60 MB bodies; both stay under the
// documented bound.
func TestRSSBound(t *testing.T) {
	if testing.Short() {
		t.Skip("sends 480 MB of bodies")
	}
	rt := runtimetest.Start(t, modelrt.Config{Models: runtimetest.Models(t, "p=sim:linear/20ms+1ms")})
	proc, url := startSidecarProcess(t, rt.Addr)
	base := peakRSSMiB(t, proc)
	overloadSidecar(t, url, 3*time.Second)
	overload := peakRSSMiB(t, proc)

	body := bytes.Repeat([]byte(" "), 60<<20) // whitespace: read whole, then refused as an empty document
	statuses := make([]int, 8)
	// Every body stops one byte short of its end until each of the eight
	// has got there or been refused, so that all of them are in the
	// sidecar at once, however slowly a busy machine starts them: no
	// body is read whole (and its budget freed) before the last arrives.
	var ready sync.WaitGroup
	ready.Add(len(statuses))
	release := make(chan struct{})
	go func() { ready.Wait(); close(release) }()
	var wg sync.WaitGroup
	for i := range statuses {
		wg.Go(func() {
			arrived := sync.OnceFunc(ready.Done)
			defer arrived() // refused: it holds no one back
			r := io.MultiReader(bytes.NewReader(body[1:]), gate{arrived, release}, bytes.NewReader(body[:1]))
			req, err := http.NewRequest(http.MethodPost, url+"/v2/models/p/infer", r)
			if err != nil {
				t.Error(err)
				return
			}
			req.ContentLength = int64(len(body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				// Past the budget the sidecar answers 429 and closes the
				// connection: a client still writing its body sees a reset.
				if !strings.Contains(err.Error(), "connection reset") && !strings.Contains(err.Error(), "broken pipe") {
					t.Errorf("60 MB body %d: %v", i, err)
				}
				return
			}
			resp.Body.Close()
			statuses[i] = resp.StatusCode
		})
	}
	wg.Wait()
	bodies := peakRSSMiB(t, proc)
	read := 0
	for _, s := range statuses {
		switch s {
		case http.StatusBadRequest:
			read++
		case http.StatusTooManyRequests, 0: // 0: reset while sending, past the budget
		default:
			t.Errorf("60 MB bodies answered %v, want 400 (read, then refused) or 429 (past the budget)", statuses)
		}
	}
	if read == 0 || read > 4 {
		t.Errorf("%d of the 60 MB bodies were read, want 1 to 4 (the 256 MiB budget)", read)
	}
	t.Logf("sidecar VmHWM: %.0f MiB at start, %.0f MiB after 3 s at 3× capacity, %.0f MiB after eight concurrent 60 MB bodies (statuses %v, 0: reset past the budget); bound %d MiB",
		base, overload, bodies, statuses, rssBoundMiB)
	if bodies > rssBoundMiB || overload > rssBoundMiB {
		t.Errorf("peak RSS %.0f MiB, over the documented %d MiB", max(bodies, overload), rssBoundMiB)
	}
}

// gate is a body's pause: its first read says the body got there and
// waits for release, then ends (io.MultiReader goes on to the rest).
type gate struct {
	arrived func()
	release <-chan struct{}
}

func (g gate) Read([]byte) (int, error) {
	g.arrived()
	<-g.release
	return 0, io.EOF
}

// overloadSidecar offers p three times its runtime's capacity (8 rows per
// 28ms batch: 857 one-row requests a second), open loop, for d.
func overloadSidecar(t *testing.T, url string, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	tick := time.NewTicker(time.Second / 857)
	defer tick.Stop()
	var wg sync.WaitGroup
	req := []byte(`{"inputs":[{"name":"input","datatype":"FP32","shape":[1,3],"data":[1,2,3]}]}`)
	for ctx.Err() == nil {
		select {
		case <-tick.C:
		case <-ctx.Done():
			continue
		}
		wg.Go(func() {
			resp, err := http.Post(url+"/v2/models/p/infer", "application/json", bytes.NewReader(req))
			if err == nil {
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
}
