package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batchmesh/batchmesh/internal/capture"
	"github.com/batchmesh/batchmesh/internal/modelrt"
	"github.com/batchmesh/batchmesh/internal/netnstest"
	"github.com/batchmesh/batchmesh/internal/runtimetest"
)

// envRunForwarder makes the test binary an Envoy stand-in listening on the
// address it names (see TestMain and runForwarder).
const envRunForwarder = "BATCHMESH_TEST_RUN_FORWARDER"

// runForwarder is the Envoy stand-in: it accepts the connections Istio's
// rules redirect to addr, prints "forward ORIGINAL_DST" for each, and
// splices it to its original destination.
func runForwarder(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	out := bufio.NewWriter(os.Stdout)
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		dst, err := capture.OriginalDst(c.(*net.TCPConn))
		if err != nil {
			c.Close()
			continue
		}
		fmt.Fprintf(out, "forward %s\n", dst)
		_ = out.Flush()
		go func() {
			defer c.Close()
			up, err := net.Dial("tcp", dst.String())
			if err != nil {
				return
			}
			defer up.Close()
			go func() { _, _ = io.Copy(up, c); _ = up.(*net.TCPConn).CloseWrite() }()
			_, _ = io.Copy(c, up)
		}()
	}
}

// istioOutputRules are istio-iptables' OUTPUT rules for outbound capture
// (Istio's documented ISTIO_OUTPUT and ISTIO_REDIRECT chains): every TCP
// connection to 15001, except Envoy's user 1337 and 127.0.0.1. Istio's
// rules for the lo interface are left out: in this test every address is
// local, where in a pod the runtime is on another one.
var istioOutputRules = [][]string{
	{"-t", "nat", "-N", "ISTIO_REDIRECT"},
	{"-t", "nat", "-A", "ISTIO_REDIRECT", "-p", "tcp", "-j", "REDIRECT", "--to-ports", "15001"},
	{"-t", "nat", "-N", "ISTIO_OUTPUT"},
	{"-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-j", "ISTIO_OUTPUT"},
	{"-t", "nat", "-A", "ISTIO_OUTPUT", "-m", "owner", "--uid-owner", "1337", "-j", "RETURN"},
	{"-t", "nat", "-A", "ISTIO_OUTPUT", "-d", "127.0.0.1/32", "-j", "RETURN"},
	{"-t", "nat", "-A", "ISTIO_OUTPUT", "-j", "ISTIO_REDIRECT"},
}

// TestBesideIstio: with Istio's rules and an Envoy stand-in (user 1337,
// port 15001) in the namespace, the sidecar in -beside-istio mode (user
// 1338, port 15201) and `sidecar redirect -beside-istio -ports 8000`, an
// application's call goes app → batchmesh → Envoy → runtime, and nothing
// loops.
func TestBesideIstio(t *testing.T) {
	if !netnstest.Enter(t) {
		return
	}
	if _, err := netnstest.Output("iptables", "--version"); err != nil {
		t.Fatalf("this test applies Istio's rules with iptables (Debian package iptables): %v", err)
	}
	for _, r := range istioOutputRules {
		netnstest.Run(t, "iptables", r...)
	}
	runtimetest.Start(t, modelrt.Config{Models: runtimetest.Models(t, "m=sim:linear/2ms+20us")}, runtimetest.Listen("127.0.0.2:8000"))
	envoy := startAs(t, 1337, envRunForwarder+"=:15001")
	cfg := filepath.Join(sharedDir(t), "sidecar.yaml")
	yaml := "models:\n  - name: m\n    batching: {max_batch_size: 8, timeout: 10s}\n    versions: [{version: \"1\", endpoints: [{address: \"127.0.0.2:8000\"}]}]\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	logs := startSidecarAs(t, 1338, "127.0.0.1:15200", "-beside-istio", "-capture", "-config", cfg, "-log-level", "debug")
	redirectCmd(t, "-beside-istio", "-ports", "8000")

	for range 4 {
		resp, body := post(t, "http://127.0.0.2:8000/v2/models/m/infer", inferBody)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Batchmesh-Batch-Size") == "" {
			t.Fatalf("app → 127.0.0.2:8000: %d %q, X-Batchmesh-Batch-Size %q: want batchmesh's batched answer",
				resp.StatusCode, body, resp.Header.Get("X-Batchmesh-Batch-Size"))
		}
	}
	// batchmesh (1338) reached the runtime through Envoy: Istio's rules
	// captured its connections, and Envoy's were captured by neither.
	waitFor(t, func() bool { return strings.Contains(envoy.String(), "forward 127.0.0.2:8000\n") })
	if strings.Contains(logs.String(), "path=/v2/models/m/versions/") {
		t.Error("batchmesh captured traffic back into itself (Envoy's or its own): a loop")
	}
	for line := range strings.Lines(envoy.String()) {
		if line != "forward 127.0.0.2:8000\n" {
			t.Errorf("Envoy stand-in saw %q: want only batchmesh's connections to the runtime", line)
		}
	}
}
