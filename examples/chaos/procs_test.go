package chaos_test

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// binDir holds the binaries the suite builds; TestMain removes it.
var binDir string

func TestMain(m *testing.M) {
	// net/http logs a response that came without a request ("Unsolicited
	// response received on idle HTTP channel"): a second answer to one
	// request. The scenarios count those lines.
	log.SetOutput(io.MultiWriter(os.Stderr, &unsolicited))
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// unsolicited counts the log lines of net/http's clients that report a
// response no request asked for.
var unsolicited lineCounter

// lineCounter counts the writes that contain "Unsolicited response".
type lineCounter struct{ n atomic.Int64 }

func (c *lineCounter) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("Unsolicited response")) {
		c.n.Add(1)
	}
	return len(p), nil
}

// buildBinaries builds the sidecar, model and controlplane commands once
// per test binary: the suite runs the programs users run, not the packages
// behind them.
var buildBinaries = sync.OnceValues(func() (string, error) {
	goBin, err := exec.LookPath("go") // go test puts its GOROOT/bin first on PATH
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "batchmesh-chaos-")
	if err != nil {
		return "", err
	}
	binDir = dir
	cmd := exec.Command(goBin, "build", "-o", dir+string(filepath.Separator),
		"github.com/batchmesh/batchmesh/sidecar",
		"github.com/batchmesh/batchmesh/model",
		"github.com/batchmesh/batchmesh/controlplane")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	return dir, nil
})

// bin returns the path of the built command name, failing t if the build
// failed; in -short mode it skips t.
func bin(t *testing.T, name string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("the chaos suite builds and runs the binaries for about two minutes; skipped in -short mode")
	}
	dir, err := buildBinaries()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, name)
}

// proc is a process of the suite's own. Its output is kept and logged if
// the test fails; at cleanup it is resumed (it may be stopped) and killed.
type proc struct {
	name   string
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
}

// startProc runs the built command name with args.
func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, out: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin(t, name), args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { defer close(p.exited); _ = p.cmd.Wait() }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("%s %q output:\n%s", name, args, p.out.String())
		}
	})
	return p
}

// signal sends sig to the process.
func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s: signal %v: %v", p.name, sig, err)
	}
}

// kill resumes the process if it was stopped, kills it and waits for it.
func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// terminate sends SIGTERM and waits up to 15 s for the process to drain and
// exit, failing t (and killing it) if it does not.
func (p *proc) terminate(t *testing.T) {
	t.Helper()
	p.signal(t, syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		p.kill()
		t.Fatalf("%s did not exit 15s after SIGTERM", p.name)
	}
}

// waitLog waits up to 30 s for re to match the process's output and
// returns the submatches.
func (p *proc) waitLog(t *testing.T, re *regexp.Regexp) []string {
	t.Helper()
	deadline := time.After(30 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if m := re.FindStringSubmatch(p.out.String()); m != nil {
			return m
		}
		select {
		case <-p.exited:
			t.Fatalf("%s exited before logging %q:\n%s", p.name, re, p.out.String())
		case <-deadline:
			t.Fatalf("%s logged no %q in 30s:\n%s", p.name, re, p.out.String())
		case <-tick.C:
		}
	}
}

// runtime is a model process serving model "m" at a fixed address, so that
// it can be restarted where the sidecar expects it.
type runtime struct {
	addr string
	args []string
	proc *proc
}

// simModel is the runtime's model: a simulator whose output is a pure
// function of each row, 2 ms + 50 µs per row, so the expected answers can be
// computed by a direct call.
const simModel = "m=sim:linear/2ms+50us"

var runtimeListening = regexp.MustCompile(`msg=listening addr=(\S+)`)

// startRuntime runs the model binary on a port of 127.0.0.1 the system
// picks, with extra flags, and waits until it is ready.
func startRuntime(t *testing.T, extra ...string) *runtime {
	t.Helper()
	flags := append([]string{"-model", simModel, "-slots", "2", "-drain-timeout", "5s", "-grpc-listen", "off"}, extra...)
	p := startProc(t, "model", append([]string{"-listen", "127.0.0.1:0"}, flags...)...)
	r := &runtime{addr: p.waitLog(t, runtimeListening)[1], proc: p}
	r.args = append([]string{"-listen", r.addr}, flags...)
	waitOK(t, "http://"+r.addr+"/v2/health/ready", p)
	return r
}

// restart stops the runtime with SIGTERM (it drains) and starts it again
// on the same address.
func (r *runtime) restart(t *testing.T) {
	t.Helper()
	r.proc.terminate(t)
	r.proc = startProc(t, "model", r.args...)
	waitOK(t, "http://"+r.addr+"/v2/health/ready", r.proc)
}

// sidecarProc is a sidecar process on free loopback ports.
type sidecarProc struct {
	url, admin string
	proc       *proc
}

var sidecarServing = regexp.MustCompile(`msg="sidecar serving" listen=(\S+) admin=(\S+)`)

// startSidecar runs the sidecar binary with args (its listeners on free
// ports) and waits until /readyz answers 200.
func startSidecar(t *testing.T, args ...string) *sidecarProc {
	t.Helper()
	p := startProc(t, "sidecar", append([]string{"-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0"}, args...)...)
	m := p.waitLog(t, sidecarServing)
	s := &sidecarProc{url: "http://" + m[1], admin: "http://" + m[2], proc: p}
	waitOK(t, s.admin+"/readyz", p)
	return s
}

// sidecarConfig writes a sidecar config file into a temporary directory and
// returns its path.
func sidecarConfig(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "batchmesh.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// waitOK polls url until it answers 200, for up to 30 s, failing t if p
// exits first.
func waitOK(t *testing.T, url string, p *proc) {
	t.Helper()
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		select {
		case <-p.exited:
			t.Fatalf("%s exited before %s answered 200:\n%s", p.name, url, p.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not 200 after 30s: %v", url, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer safe for a process's writes and the test's
// reads at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
