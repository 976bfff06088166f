//go:build unix

// Package quickstart_test runs the quick start of the top-level README as
// it is written: every ```sh (or ```bash) block under the "## Quick start"
// heading, in order, as one bash script from the repository root. The
// README is the test's input, so a quick start that stops working fails
// here rather than on a newcomer's machine.
package quickstart_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	readme  = "../../README.md"
	section = "## Quick start"
	// marker opens each block's output in the script's stdout.
	marker = "### quickstart block "
	// timeout bounds the whole script, a cold build included.
	timeout = 6 * time.Minute
)

// quickStartBlocks returns the shell blocks of the README's quick start, in
// order: the fenced blocks tagged sh or bash between the "## Quick start"
// heading and the next level-2 heading.
func quickStartBlocks(text string) ([]string, error) {
	var blocks []string
	in, fenced := false, false
	var cur []string
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case fenced:
			if strings.TrimSpace(line) == "```" {
				blocks = append(blocks, strings.Join(cur, "\n"))
				cur, fenced = nil, false
				continue
			}
			cur = append(cur, line)
		case strings.HasPrefix(line, "## "):
			if in {
				return blocks, nil
			}
			in = strings.TrimSpace(line) == section
		case in && (line == "```sh" || line == "```bash"):
			fenced = true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if fenced {
		return nil, errors.New("an unclosed ``` block in the quick start")
	}
	if !in && blocks == nil {
		return nil, fmt.Errorf("no %q heading", section)
	}
	return blocks, nil
}

// addrPattern finds host:port pairs in the blocks.
var addrPattern = regexp.MustCompile(`([A-Za-z0-9.\-]*):(\d{2,5})\b`)

// ports returns the ports the blocks use, and an error for any address
// that is not on 127.0.0.1: the quick start must not listen on, or call,
// anything but loopback.
func ports(blocks []string) ([]int, error) {
	seen := map[int]bool{}
	var out []int
	for _, b := range blocks {
		for _, m := range addrPattern.FindAllStringSubmatch(b, -1) {
			if m[1] != "127.0.0.1" {
				return nil, fmt.Errorf("the quick start uses %q: every address must be 127.0.0.1 with a fixed port", m[0])
			}
			p, _ := strconv.Atoi(m[2])
			if !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
		}
	}
	return out, nil
}

func TestParseQuickStart(t *testing.T) {
	text := "# x\n\n## Quick start\n\ntext\n\n```sh\na\nb\n```\n\n```yaml\nno\n```\n\n```bash\nc\n```\n\n## Next\n\n```sh\nnot this\n```\n"
	blocks, err := quickStartBlocks(text)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"a\nb", "c"}; strings.Join(blocks, "|") != strings.Join(want, "|") {
		t.Errorf("blocks = %q, want %q", blocks, want)
	}
	if _, err := quickStartBlocks("# x\n\n## Other\n"); err == nil {
		t.Error("a README without a quick start parsed")
	}
	if _, err := ports([]string{"curl localhost:8000/v2"}); err == nil {
		t.Error("localhost:8000 passed the loopback check")
	}
	if p, err := ports([]string{"curl 127.0.0.1:8000/v2 127.0.0.1:15001", "127.0.0.1:8000"}); err != nil || len(p) != 2 {
		t.Errorf("ports = %v, %v; want [8000 15001]", p, err)
	}
}

func TestQuickStart(t *testing.T) {
	if testing.Short() {
		t.Skip("the quick start builds the binaries and runs them for about 20 s; skipped in -short mode")
	}
	for _, tool := range []string{"curl", "bash", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("the README's quick start needs %s, which is not on PATH: %v", tool, err)
		}
	}
	text, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := quickStartBlocks(string(text))
	if err != nil {
		t.Fatalf("%s: %v", readme, err)
	}
	if len(blocks) < 5 {
		t.Fatalf("%s: %d sh blocks under %q; want the whole quick start (build, runtime, config, sidecar, curl, bench, control plane)", readme, len(blocks), section)
	}
	used, err := ports(blocks)
	if err != nil {
		t.Fatalf("%s: %v", readme, err)
	}
	for _, p := range used {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("the quick start uses the fixed port 127.0.0.1:%d, which is busy (%v): stop what holds it and run again", p, err)
		}
		ln.Close()
	}

	var script strings.Builder
	for i, b := range blocks {
		fmt.Fprintf(&script, "echo '%s%d'\n%s\n", marker, i, b)
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	out := runScript(t, root, script.String())

	byBlock := splitOutput(out)
	all := string(out)
	find := func(what string, pred func(string) bool) string {
		for _, o := range byBlock {
			if pred(o) {
				return o
			}
		}
		t.Errorf("no block printed %s", what)
		return ""
	}

	// The inference through the sidecar: the output tensor and the
	// headers that say it went through a batch.
	infer := find("a sidecar's inference answer", func(o string) bool {
		return strings.Contains(o, "X-Batchmesh-Batch-Size:") && strings.Contains(o, `"shape":[2,16]`)
	})
	for _, want := range []string{"HTTP/1.1 200", `"name":"output"`, `"datatype":"FP32"`, "X-Batchmesh-Upstream: 127.0.0.1:8000", "X-Batchmesh-Cache: bypass", `"model_name":"bert"`} {
		if infer != "" && !strings.Contains(infer, want) {
			t.Errorf("the inference answer lacks %q:\n%s", want, infer)
		}
	}

	// The bench: a line per run, with a mean batch above one row through
	// the sidecar, no errors, and the comparison table.
	bench := find("the bench's results", func(o string) bool { return strings.Contains(o, "rows/s") && strings.Contains(o, "ratio") })
	if m := regexp.MustCompile(`127\.0\.0\.1:15001: (\d+) req, .*; (\d+) errors[^;]*; batch ([0-9.]+) rows`).FindStringSubmatch(bench); m == nil {
		t.Errorf("no sidecar result line with a mean batch size in the bench output:\n%s", bench)
	} else {
		reqs, _ := strconv.Atoi(m[1])
		errs, _ := strconv.Atoi(m[2])
		batch, _ := strconv.ParseFloat(m[3], 64)
		if batch < 2 {
			t.Errorf("bench through the sidecar: mean batch %.2f rows, want at least 2 (64 clients on one slot must batch)", batch)
		}
		// A loaded machine may miss a deadline now and then; more is a bug.
		if reqs == 0 || errs*100 > reqs {
			t.Errorf("bench through the sidecar: %d errors in %d requests, want under 1%%", errs, reqs)
		}
	}
	if !regexp.MustCompile(`127\.0\.0\.1:8000: \d+ req`).MatchString(bench) {
		t.Errorf("no result line for the direct run in the bench output:\n%s", bench)
	}

	// The sidecar's metrics: batches of more than one row on average.
	sum := regexp.MustCompile(`(?m)^batchmesh_batch_rows_sum\{model="bert"\} (\d+)`).FindStringSubmatch(all)
	count := regexp.MustCompile(`(?m)^batchmesh_batch_rows_count\{model="bert"\} (\d+)`).FindStringSubmatch(all)
	if sum == nil || count == nil {
		t.Errorf("no batchmesh_batch_rows_sum and _count for bert in the output")
	} else {
		s, _ := strconv.ParseFloat(sum[1], 64)
		c, _ := strconv.ParseFloat(count[1], 64)
		if c == 0 || s/c < 2 {
			t.Errorf("batchmesh_batch_rows: sum %v over %v batches; want a mean of at least 2 rows", s, c)
		}
	}

	// The control plane's admin: a snapshot with the model's cluster.
	snap := find("the control plane's /snapshot", func(o string) bool { return strings.Contains(o, `"resources"`) })
	for _, want := range []string{`"version"`, `batchmesh|bert|1`, `batchmesh-outbound`} {
		if snap != "" && !strings.Contains(snap, want) {
			t.Errorf("the control plane's /snapshot lacks %q:\n%s", want, snap)
		}
	}

	// The sidecar configured over xDS answers too.
	xds := find("the xDS sidecar's inference answer", func(o string) bool {
		return strings.Contains(o, `"shape":[1,16]`) && strings.Contains(o, "X-Batchmesh-Batch-Size:")
	})
	if xds != "" && !strings.Contains(xds, "HTTP/1.1 200") {
		t.Errorf("the xDS sidecar's answer is not a 200:\n%s", xds)
	}
	if t.Failed() {
		t.Logf("the script's output:\n%s", out)
	}
}

// runScript runs script with bash -euo pipefail in dir, in a process group
// of its own, and returns its stdout. Whatever happens, every process of
// the group (the background runtimes, sidecars and control plane) is gone
// when it returns. The script's stderr (the processes' logs) is logged on
// failure.
func runScript(t *testing.T, dir, script string) []byte {
	t.Helper()
	tmp := t.TempDir()
	stdout, err := os.Create(filepath.Join(tmp, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	stderr, err := os.Create(filepath.Join(tmp, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = dir
	cmd.Stdin = nil
	// Files, not pipes: Wait returns when bash exits even while its
	// background children still hold their copies of stdout and stderr.
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second

	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	waitErr := cmd.Wait()
	killGroup(t, pgid)
	t.Logf("the quick start ran in %v", time.Since(start).Round(time.Second))

	out, err := os.ReadFile(stdout.Name())
	if err != nil {
		t.Fatal(err)
	}
	if waitErr != nil {
		logs, _ := os.ReadFile(stderr.Name())
		if ctx.Err() != nil {
			waitErr = fmt.Errorf("%w (ran past %v)", waitErr, timeout)
		}
		t.Fatalf("the quick start failed: %v\nlast block started: %s\nstdout:\n%s\nstderr:\n%s",
			waitErr, lastBlock(out), out, logs)
	}
	return out
}

// killGroup ends every process left in the group pgid: SIGTERM (the
// binaries drain and exit), then SIGKILL after a few seconds.
func killGroup(t *testing.T, pgid int) {
	t.Helper()
	if syscall.Kill(-pgid, syscall.SIGTERM) != nil {
		return // nothing left
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if syscall.Kill(-pgid, 0) != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("processes of the quick start still running 5 s after SIGTERM; killing them")
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// splitOutput cuts the script's stdout into each block's output.
func splitOutput(out []byte) []string {
	var blocks []string
	for _, part := range bytes.Split(out, []byte(marker))[1:] {
		blocks = append(blocks, string(part))
	}
	return blocks
}

// lastBlock names the block the script was in when it stopped.
func lastBlock(out []byte) string {
	i := bytes.LastIndex(out, []byte(marker))
	if i < 0 {
		return "none"
	}
	line, _, _ := bytes.Cut(out[i+len(marker):], []byte("\n"))
	return "block " + string(line)
}
