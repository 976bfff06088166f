// Package nodetest installs a Node.js client for a test: the example's
// package.json, package-lock.json and scripts are copied into a temporary
// directory and `npm ci` runs there, so that the repository's tree stays
// clean. Only _test.go files import it.
package nodetest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Install copies package.json, package-lock.json and files from the
// current directory into a temporary one, runs npm ci there and returns
// it. It skips the test, saying what runs under Node (what), when node or
// npm is missing.
func Install(t *testing.T, what string, files ...string) string {
	t.Helper()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed: this test runs %s under Node (install Node.js 18 or later)", tool, what)
		}
	}
	dir := t.TempDir()
	for _, f := range append([]string{"package.json", "package-lock.json"}, files...) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci: %v\n%s", err, out)
	}
	return dir
}
