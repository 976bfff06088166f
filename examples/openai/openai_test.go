// Package openai_test runs the official OpenAI client library (npm "openai",
// pinned by package-lock.json) against a real sidecar in front of the
// reference runtime's embedding model.
package openai_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/batchmesh/batchmesh/internal/modelrt"
	"github.com/batchmesh/batchmesh/internal/nodetest"
	"github.com/batchmesh/batchmesh/internal/runtimetest"
	"github.com/batchmesh/batchmesh/internal/sidecar"
	"github.com/batchmesh/batchmesh/internal/sidecartest"
)

func runNode(t *testing.T, dir string, env []string, args ...string) map[string]any {
	t.Helper()
	cmd := exec.Command("node", append([]string{"embeddings.mjs"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node embeddings.mjs %v: %v\n%s%s", args, err, stderr.String(), stdout.String())
	}
	var out map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("node output %q: %v", stdout.String(), err)
	}
	return out
}

// batchRows reads model_batch_rows_sum and _count from the runtime.
func batchRows(t *testing.T, url string) (sum, count float64) {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || !strings.HasPrefix(line, "model_batch_rows_") {
			continue
		}
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		switch {
		case strings.HasPrefix(line, "model_batch_rows_sum"):
			sum += v
		case strings.HasPrefix(line, "model_batch_rows_count"):
			count += v
		}
	}
	return sum, count
}

func TestOfficialOpenAIClient(t *testing.T) {
	dir := nodetest.Install(t, "the official OpenAI client", "embeddings.mjs")
	rt := runtimetest.Start(t, modelrt.Config{Models: runtimetest.Models(t, "e=embed:h200/minilm-l6"), Slots: 1}, runtimetest.WithMetrics())
	sc := sidecartest.Start(t, sidecar.Config{Source: "openai.yaml", Models: sidecartest.Models(t, "openai.yaml", fmt.Sprintf(`models:
  - name: e
    protocol: openai
    batching: {max_batch_size: 32, max_queue_delay: 2ms, timeout: 10s}
    versions:
      - version: "1"
        endpoints:
          - {address: %s}
`, rt.Addr))})
	env := []string{"SIDECAR_URL=" + sc.URL + "/v1", "DIRECT_URL=" + rt.URL + "/v1", "MODEL=e"}

	res := runNode(t, dir, env, "check")
	one := res["one"].(map[string]any)
	if one["dims"] != float64(384) {
		t.Errorf("minilm-l6 vectors have %v values, want 384", one["dims"])
	}
	if got := res["hundred"].(map[string]any)["vectors"]; got != float64(100) {
		t.Errorf("100 inputs gave %v vectors", got)
	}
	inv := res["invalid"].(map[string]any)
	if inv["status"] != float64(400) || inv["param"] != "dimensions" || !strings.Contains(inv["message"].(string), "dimensions 0 is not allowed") {
		t.Errorf("invalid request: %v", inv)
	}

	sum0, count0 := batchRows(t, rt.URL)
	res = runNode(t, dir, env, "concurrent", "64")
	if res["answers"] != float64(64) {
		t.Fatalf("concurrent: %v", res)
	}
	sum1, count1 := batchRows(t, rt.URL)
	mean := (sum1 - sum0) / (count1 - count0)
	t.Logf("64 concurrent one-string calls: %v runtime batches, mean %.1f inputs", count1-count0, mean)
	if sum1-sum0 != 64 || mean <= 8 {
		t.Errorf("64 concurrent calls: %v rows in %v runtime batches (mean %.1f); want 64 rows, mean above 8", sum1-sum0, count1-count0, mean)
	}
}
