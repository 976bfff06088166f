// Package grpc_test runs Node's gRPC client (npm "@grpc/grpc-js" with
// "@grpc/proto-loader" loading internal/grpcapi/grpc_predict_v2.proto,
// pinned by package-lock.json) against a real sidecar in front of the
// reference runtime: an independent implementation of the wire.
package grpc_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/batchmesh/batchmesh/internal/codec"
	"github.com/batchmesh/batchmesh/internal/modelrt"
	"github.com/batchmesh/batchmesh/internal/nodetest"
	"github.com/batchmesh/batchmesh/internal/runtimetest"
	"github.com/batchmesh/batchmesh/internal/sidecar"
	"github.com/batchmesh/batchmesh/internal/sidecartest"
)

// restAnswer is the runtime's own REST answer for row i, as binary output
// bytes.
func restAnswer(t *testing.T, url string, i int) []byte {
	t.Helper()
	vals, _ := json.Marshal([]float32{float32(i), float32(i) + 0.5, -float32(i), float32(i) * 1.25})
	body := fmt.Sprintf(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":%s}],"parameters":{"binary_data_output":true}}`, vals)
	resp, err := http.Post(url+"/v2/models/m/infer", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	hl, err := strconv.Atoi(resp.Header.Get(codec.HeaderContentLength))
	if err != nil {
		t.Fatalf("REST answer of row %d: status %d, %s", i, resp.StatusCode, b)
	}
	dec, err := codec.DecodeResponse(b, hl)
	if err != nil {
		t.Fatal(err)
	}
	return dec.Outputs[0].Data
}

// TestNodeGRPCClient calls ModelInfer through the sidecar from Node, raw
// and typed: every answer is byte for byte the runtime's direct REST answer
// for the row, in the form the call used, and a malformed tensor is
// INVALID_ARGUMENT (3) naming the input.
func TestNodeGRPCClient(t *testing.T) {
	dir := nodetest.Install(t, "Node's gRPC client (@grpc/grpc-js)", "infer.mjs")
	proto, err := filepath.Abs("../../internal/grpcapi/grpc_predict_v2.proto")
	if err != nil {
		t.Fatal(err)
	}
	rt := runtimetest.Start(t, modelrt.Config{Models: runtimetest.Models(t, "m=sim:linear/1ms+10us")})
	sc := sidecartest.Start(t, sidecar.Config{Models: sidecartest.Models(t, "grpc.yaml", fmt.Sprintf(`models:
  - name: m
    batching: {max_batch_size: 16, timeout: 10s}
    versions: [{version: "1", endpoints: [{address: %s}]}]
`, rt.Addr))})
	const rows = 4
	cmd := exec.Command("node", "infer.mjs", "check")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PROTO="+proto, "ADDR="+strings.TrimPrefix(sc.URL, "http://"), "MODEL=m", "ROWS="+strconv.Itoa(rows))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node infer.mjs check: %v\n%s%s", err, stderr.String(), stdout.String())
	}
	var out struct {
		Raw, Typed, RawForm, TypedForm []string
		Malformed                      struct {
			Code    int
			Details string
		}
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("node output %q: %v", stdout.String(), err)
	}
	if len(out.Raw) != rows || len(out.Typed) != rows {
		t.Fatalf("node answered %d raw and %d typed calls, want %d each", len(out.Raw), len(out.Typed), rows)
	}
	for i := range rows {
		want := restAnswer(t, rt.URL, i)
		for form, got := range map[string]string{"raw": out.Raw[i], "typed": out.Typed[i]} {
			b, err := base64.StdEncoding.DecodeString(got)
			if err != nil || !bytes.Equal(b, want) {
				t.Errorf("row %d, %s call: answer %x, want the runtime's REST answer %x", i, form, b, want)
			}
		}
		if out.RawForm[i] != "raw" || out.TypedForm[i] != "typed" {
			t.Errorf("row %d: answers came %s and %s, want raw for the raw call and typed for the typed one", i, out.RawForm[i], out.TypedForm[i])
		}
	}
	if out.Malformed.Code != 3 || !strings.Contains(out.Malformed.Details, `input "x"`) {
		t.Errorf("malformed call: code %d %q, want 3 (INVALID_ARGUMENT) naming input \"x\"", out.Malformed.Code, out.Malformed.Details)
	}
}
