// Package netnstest runs a test inside a fresh network namespace of its
// own, so that it can program real NAT rules and bind any loopback address
// without touching the machine's network.
//
// It is for tests only: import it from _test.go files, never from code that
// ships in a binary.
package netnstest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// envChild names the test a re-executed test binary runs in its namespace.
const envChild = "BATCHMESH_NETNS_TEST"

// Enter returns true when the calling test runs inside its fresh network
// namespace, with the loopback interface up: the test goes on. Otherwise
// it re-runs this one test in a child process in a new network namespace,
// reports the child's output and result as the test's own, and returns
// false: the test returns at once.
//
// It skips the test, with a message saying so, when the process is not
// root (a new network namespace needs CAP_SYS_ADMIN; CI runs as root).
// Only top-level tests can Enter.
func Enter(t *testing.T) bool {
	t.Helper()
	if os.Getenv(envChild) == t.Name() {
		Run(t, "ip", "link", "set", "lo", "up")
		return true
	}
	if os.Geteuid() != 0 {
		t.Skipf("netnstest: %s needs root to create a network namespace (CI runs it as root)", t.Name())
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("netnstest: %v", err)
	}
	timeout := 5 * time.Minute
	if d, ok := t.Deadline(); ok {
		timeout = time.Until(d) - 10*time.Second
	}
	cmd := exec.Command(exe, "-test.run=^"+regexp.QuoteMeta(t.Name())+"$", "-test.v", "-test.count=1",
		fmt.Sprintf("-test.timeout=%s", timeout))
	cmd.Env = append(os.Environ(), envChild+"="+t.Name())
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	t.Logf("netnstest: %s in a new network namespace:\n%s", t.Name(), out.Bytes())
	switch {
	case err != nil:
		t.Fatalf("netnstest: %s failed in its network namespace: %v", t.Name(), err)
	case strings.Contains(out.String(), "--- SKIP: "+t.Name()):
		t.Skipf("netnstest: %s skipped in its network namespace", t.Name())
	case !strings.Contains(out.String(), "--- PASS: "+t.Name()):
		t.Fatalf("netnstest: %s did not run in its network namespace", t.Name())
	}
	return false
}

// Run runs a command (ip, nft, ...) and returns its standard output; it
// fails t with the command's output when it fails.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := Output(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Output runs a command and returns its standard output, or an error that
// carries its standard error.
func Output(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, stderr.Bytes())
	}
	return string(out), nil
}
