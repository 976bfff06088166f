package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/batchmesh/batchmesh/internal/modelrt"
	"github.com/batchmesh/batchmesh/internal/netnstest"
	"github.com/batchmesh/batchmesh/internal/runtimetest"
)

// envRunSidecar makes the test binary run as the sidecar binary (see
// TestMain): the capture tests start it as another user.
const envRunSidecar = "BATCHMESH_TEST_RUN_SIDECAR"

func TestMain(m *testing.M) {
	if addr := os.Getenv(envRunForwarder); addr != "" {
		if err := runForwarder(addr); err != nil {
			fmt.Fprintln(os.Stderr, "forwarder:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	if os.Getenv(envRunSidecar) == "1" {
		args := os.Args[1:]
		var err error
		if len(args) > 0 && args[0] == "redirect" {
			err = runRedirect(args[1:], os.Stdout, os.Stderr)
		} else {
			err = run(args, os.Stderr)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "sidecar:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// startAs runs this test binary with env set, as user uid, until the test
// ends, and returns its output so far and to come.
func startAs(t *testing.T, uid uint32, env string, args ...string) *syncBuffer {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The test binary's own directory is not the other user's to read.
	bin := filepath.Join(sharedDir(t), "bin")
	data, err := os.ReadFile(exe)
	if err == nil {
		err = os.WriteFile(bin, data, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil && !strings.Contains(env, envRunForwarder) {
			t.Errorf("%s (uid %d) exited: %v", env, uid, err)
		}
		if t.Failed() {
			t.Logf("%s (uid %d) output:\n%s", env, uid, logs.String())
		}
	})
	return logs
}

// startSidecarAs runs this test binary as the sidecar, as user uid, with
// args, until the test ends; it returns once admin's /readyz answers 200,
// with the sidecar's log so far and to come.
func startSidecarAs(t *testing.T, uid uint32, admin string, args ...string) *syncBuffer {
	t.Helper()
	logs := startAs(t, uid, envRunSidecar+"=1", append([]string{"-admin", admin}, args...)...)
	waitFor(t, func() bool {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return logs
}

// sharedDir returns a temporary directory that every user may read,
// removed when the test ends (t.TempDir's parent is not).
func sharedDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sidecar-capture")
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// answer is the status and header of post's answer.
type answer struct {
	StatusCode int
	Header     http.Header
}

// post sends body to url with a fresh connection and returns the answer.
func post(t testing.TB, url, body string) (answer, []byte) {
	t.Helper()
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	return answer{StatusCode: resp.StatusCode, Header: resp.Header}, b
}

const inferBody = `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`

// echoServer answers every connection on addr with its own bytes, closing
// its write half when the client closes its own.
func echoServer(t *testing.T, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
}

// checkEcho sends bytes that are not HTTP to addr, half-closes, and wants
// them back unchanged.
func checkEcho(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	msg := bytes.Repeat([]byte("\x16\x03\x01 not http \x00\xff"), 5000)
	go func() {
		_, _ = c.Write(msg)
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, msg) {
		t.Errorf("echo through %s: %d bytes back (err %v), want the %d sent", addr, len(got), err, len(msg))
	}
}

// batchRowsMean reads the runtime's model_batch_rows mean from /metrics.
func batchRowsMean(t *testing.T, url string) float64 {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	read := func(name string) float64 {
		m := regexp.MustCompile(`(?m)^` + name + `\{[^}]*model="m"[^}]*\} (\S+)$`).FindSubmatch(b)
		if m == nil {
			t.Fatalf("no %s for model m in:\n%s", name, b)
		}
		v, _ := strconv.ParseFloat(string(m[1]), 64)
		return v
	}
	return read("model_batch_rows_sum") / read("model_batch_rows_count")
}

// recorded is what recordServer received.
type recorded struct {
	mu   sync.Mutex
	reqs []string // "METHOD URI header-x-test body"
}

// recordServer is a plain HTTP service on a captured port that is no
// model endpoint: it records each request and answers "recorded".
func recordServer(t *testing.T, addr string) *recorded {
	t.Helper()
	rec := &recorded{}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, fmt.Sprintf("%s %s %s %s", r.Method, r.RequestURI, r.Header.Get("X-Test"), b))
		rec.mu.Unlock()
		w.Header().Set("X-Recorded", "1")
		_, _ = io.WriteString(w, "recorded")
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return rec
}

func (r *recorded) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.reqs) == 0 {
		return ""
	}
	return r.reqs[len(r.reqs)-1]
}

// TestCaptureInNamespace is the acceptance test of transparent capture: in
// a fresh network namespace, a runtime on 127.0.0.2:8000 and [fd00::2]:8000,
// the sidecar as user 1337 with -capture, and `sidecar redirect -ports
// 8000,9000-9001`; the clients (this test, as root) call the runtime's
// address directly.
func TestCaptureInNamespace(t *testing.T) {
	if !netnstest.Enter(t) {
		return
	}
	for _, a := range []string{"fd00::2/128", "fd00::3/128"} {
		netnstest.Run(t, "ip", "addr", "add", a, "dev", "lo", "nodad")
	}
	runtimetest.Start(t, modelrt.Config{Models: runtimetest.Models(t, "m=sim:linear/5ms+20us", "p=sim:linear/0s+0s")},
		runtimetest.WithMetrics(), runtimetest.Listen("[::]:8000"))
	echoServer(t, "[::]:9000")
	rec := recordServer(t, "[::]:9001")
	cfg := filepath.Join(sharedDir(t), "sidecar.yaml")
	yaml := "models:\n  - name: m\n    batching: {max_batch_size: 64, max_queue_delay: 5ms, timeout: 10s}\n" +
		"    versions: [{version: \"1\", endpoints: [{address: \"127.0.0.2:8000\"}, {address: \"[fd00::2]:8000\"}]}]\n" +
		"  - name: p\n    batching: {max_batch_size: 0}\n" +
		"    versions: [{version: \"1\", endpoints: [{address: \"127.0.0.2:8000\"}, {address: \"[fd00::2]:8000\"}]}]\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	hosts := []string{"127.0.0.2", "[fd00::2]"}
	direct, unknown, passed := map[string][]byte{}, map[string][]byte{}, map[string][]byte{}
	for _, h := range hosts {
		_, direct[h] = post(t, "http://"+h+":8000/v2/models/m/infer", inferBody)
		_, passed[h] = post(t, "http://"+h+":8000/v2/models/p/infer", inferBody)
		_, unknown[h] = post(t, "http://"+h+":8000/v2/models/nope/infer", inferBody)
	}
	logs := startSidecarAs(t, 1337, "127.0.0.1:15000", "-config", cfg, "-capture", "-log-level", "debug")
	redirectCmd(t, "-ports", "8000,9000-9001")

	var upstreams sync.Map
	for _, h := range hosts {
		t.Run(h, func(t *testing.T) {
			loadThroughSidecar(t, "http://"+h+":8000/v2/models/m/infer", direct[h], &upstreams)
			checkPassedFast(t, "http://"+h+":8000/v2/models/p/infer", passed[h])
			checkEcho(t, h+":9000")
			resp, body := post(t, "http://"+h+":8000/v2/models/nope/infer", inferBody)
			if resp.StatusCode != http.StatusNotFound || !bytes.Equal(body, unknown[h]) || resp.Header.Get("X-Batchmesh-Batch-Size") != "" {
				t.Errorf("unknown model through capture: %d %q, want the runtime's own 404 %q", resp.StatusCode, body, unknown[h])
			}
			// A model's path, batched (m) or passed through (p), but to a
			// destination that is not the model's endpoint: passed through
			// to it unchanged, on a keep-alive connection the fast path
			// would take if it ignored the destination.
			for _, model := range []string{"m", "p"} {
				path := "/v2/models/" + model + "/infer?q=1"
				req, _ := http.NewRequest(http.MethodPost, "http://"+h+":9001"+path, strings.NewReader(inferBody))
				req.Header.Set("X-Test", "kept")
				client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{}} // its request is the connection's first
				r2, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b2, _ := io.ReadAll(r2.Body)
				r2.Body.Close()
				client.CloseIdleConnections()
				want := "POST " + path + " kept " + inferBody
				if got := rec.last(); got != want || string(b2) != "recorded" || r2.Header.Get("X-Recorded") != "1" {
					t.Errorf("pass-through to %s:9001: server got %q and answered %q, want %q and \"recorded\"", h, got, b2, want)
				}
			}
		})
	}
	for _, ep := range []string{"127.0.0.2:8000", "[fd00::2]:8000"} {
		if _, ok := upstreams.Load(ep); !ok {
			t.Errorf("no answer came from endpoint %s (X-Batchmesh-Upstream)", ep)
		}
	}
	// The sidecar's own batches (to /v2/models/m/versions/1/infer) were not
	// captured back into it: no loop.
	if strings.Contains(logs.String(), "path=/v2/models/m/versions/") {
		t.Error("the sidecar captured its own upstream batches (a loop): the rules must skip its user")
	}
	if !strings.Contains(logs.String(), `msg="captured request served" method=POST path=/v2/models/m/infer host=[fd00::2]:8000 original_dst=[fd00::2]:8000`) {
		t.Error("the sidecar's debug log does not record the original destination of captured requests")
	}
	if mean := batchRowsMean(t, "http://127.0.0.2:8000"); mean < 4 {
		t.Errorf("runtime model_batch_rows mean %.2f, want well above 1 (batched)", mean)
	} else {
		t.Logf("runtime model_batch_rows mean %.2f", mean)
	}

	redirectCmd(t, "-clean")
	if out := netnstest.Run(t, "nft", "list", "ruleset"); out != "" {
		t.Errorf("after -clean: %s", out)
	}
	for _, h := range hosts {
		resp, body := post(t, "http://"+h+":8000/v2/models/m/infer", inferBody)
		if resp.Header.Get("X-Batchmesh-Batch-Size") != "" || !bytes.Equal(body, direct[h]) {
			t.Errorf("after -clean, %s answered %q with X-Batchmesh-Batch-Size %q: want the runtime directly",
				h, body, resp.Header.Get("X-Batchmesh-Batch-Size"))
		}
	}
}

// checkPassedFast sends captured requests for a pass-through model to
// url on a keep-alive connection (one with Connection: close is for the
// full handler) and wants the runtime's answer (want) from one of the
// model's endpoints, every one served by the fast path:
// batchmesh_fast_path_requests_total on the sidecar's admin listener goes
// up by their number.
func checkPassedFast(t *testing.T, url string, want []byte) {
	t.Helper()
	const n = 5
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	before := fastPathCount(t)
	for range n {
		resp, err := client.Post(url, "application/json", strings.NewReader(inferBody))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, want) || resp.Header.Get("X-Batchmesh-Upstream") == "" {
			t.Errorf("captured pass-through %s: %d %q from upstream %q, want 200 %q from the sidecar",
				url, resp.StatusCode, body, resp.Header.Get("X-Batchmesh-Upstream"), want)
		}
	}
	if got := fastPathCount(t) - before; got != n {
		t.Errorf("the fast path served %d of %d captured pass-through requests to %s, want all", got, n, url)
	}
}

// fastPathCount reads batchmesh_fast_path_requests_total from the sidecar
// of TestCaptureInNamespace.
func fastPathCount(t *testing.T) int {
	t.Helper()
	resp, err := http.Get("http://127.0.0.1:15000/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^batchmesh_fast_path_requests_total (\d+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no batchmesh_fast_path_requests_total on the sidecar's /metrics:\n%s", b)
	}
	v, _ := strconv.Atoi(string(m[1]))
	return v
}

// redirectCmd runs `sidecar redirect` with args.
func redirectCmd(t *testing.T, args ...string) {
	t.Helper()
	var out, errs bytes.Buffer
	if err := runRedirect(args, &out, &errs); err != nil {
		t.Fatalf("sidecar redirect %s: %v\n%s", strings.Join(args, " "), err, errs.Bytes())
	}
}

// loadThroughSidecar runs 32 concurrent clients, 16 calls each, against
// url and wants every answer batched and byte-identical to want.
func loadThroughSidecar(t *testing.T, url string, want []byte, upstreams *sync.Map) {
	t.Helper()
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
	defer client.CloseIdleConnections()
	const clients, calls = 32, 16
	errs := make(chan error, clients*calls)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for range calls {
				resp, err := client.Post(url, "application/json", strings.NewReader(inferBody))
				if err != nil {
					errs <- err
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				upstreams.Store(resp.Header.Get("X-Batchmesh-Upstream"), true)
				if n := resp.Header.Get("X-Batchmesh-Batch-Size"); n == "" || !bytes.Equal(body, want) {
					errs <- fmt.Errorf("%d %q with X-Batchmesh-Batch-Size %q, want %q from the sidecar", resp.StatusCode, body, n, want)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		if n++; n <= 3 {
			t.Error(err)
		}
	}
	if n > 0 {
		t.Errorf("%d of %d calls to %s went wrong", n, clients*calls, url)
	}
}
