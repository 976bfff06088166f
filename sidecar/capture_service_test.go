package main

import (
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/batchmesh/batchmesh/internal/modelrt"
	"github.com/batchmesh/batchmesh/internal/netnstest"
	"github.com/batchmesh/batchmesh/internal/runtimetest"
)

// TestCaptureServiceAddress: in a fresh network namespace, a call to a
// version's service address (service_addresses, which Kubernetes
// discovery fills with a Service's ClusterIP; here 127.0.0.9:8000, where
// nothing listens, as nothing listens on a ClusterIP) is captured and
// batched to the version's endpoint, 127.0.0.2:8000, as a call to the
// endpoint itself is.
func TestCaptureServiceAddress(t *testing.T) {
	if !netnstest.Enter(t) {
		return
	}
	runtimetest.Start(t, modelrt.Config{Models: runtimetest.Models(t, "m=sim:linear/5ms+20us")},
		runtimetest.Listen("127.0.0.2:8000"))
	cfg := filepath.Join(sharedDir(t), "sidecar.yaml")
	yaml := "models:\n  - name: m\n    batching: {max_batch_size: 64, max_queue_delay: 5ms, timeout: 10s}\n" +
		"    versions: [{version: \"1\", endpoints: [{address: \"127.0.0.2:8000\"}], service_addresses: [\"127.0.0.9:8000\"]}]\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	_, direct := post(t, "http://127.0.0.2:8000/v2/models/m/infer", inferBody)
	if c, err := net.DialTimeout("tcp", "127.0.0.9:8000", 5*time.Second); err == nil {
		c.Close()
		t.Fatal("something listens on 127.0.0.9:8000; the test needs the service address to have no listener")
	}
	startSidecarAs(t, 1337, "127.0.0.1:15000", "-config", cfg, "-capture")
	redirectCmd(t, "-ports", "8000")

	var upstreams sync.Map
	loadThroughSidecar(t, "http://127.0.0.9:8000/v2/models/m/infer", direct, &upstreams)
	if _, ok := upstreams.Load("127.0.0.2:8000"); !ok {
		t.Error("no answer came from the endpoint 127.0.0.2:8000 (X-Batchmesh-Upstream)")
	}
	redirectCmd(t, "-clean")
}
