package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/batchmesh/batchmesh/internal/certtest"
	"github.com/batchmesh/batchmesh/internal/tlsfiles"
	"github.com/batchmesh/batchmesh/internal/xdsserver"
)

// tlsControlPlane serves an xdsserver and its LRS (client certificates
// required for reports) over mutual TLS on addr, with the certificate
// files of dir (server.crt, server.key, clients.pem) re-read on change;
// stop ends it.
func tlsControlPlane(t *testing.T, addr, dir string, epoch int64) (*xdsserver.Server, string, func()) {
	t.Helper()
	cfg, err := tlsfiles.ServerConfig(tlsfiles.Files{
		Cert: tlsfiles.File{Path: filepath.Join(dir, "server.crt")},
		Key:  tlsfiles.File{Path: filepath.Join(dir, "server.key")},
		CA:   tlsfiles.File{Path: filepath.Join(dir, "clients.pem")},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := xdsserver.New(xdsserver.Config{Epoch: epoch})
	ctx, cancel := context.WithCancel(context.Background())
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
	srv.Register(ctx, g)
	xdsserver.NewLRS(srv, xdsserver.LRSConfig{RequireClientCert: true}).Register(g)
	done := make(chan struct{})
	go func() { defer close(done); _ = g.Serve(lis) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); g.Stop(); <-done }) }
	t.Cleanup(stop)
	return srv, lis.Addr().String(), stop
}

// lineWriter sends every write containing want on c, without blocking.
type lineWriter struct {
	want string
	c    chan string
}

func (w lineWriter) Write(p []byte) (int, error) {
	if s := string(p); strings.Contains(s, w.want) {
		select {
		case w.c <- s:
		default:
		}
	}
	return len(p), nil
}

// startSidecar runs the sidecar main with args and returns its listener
// and admin addresses; it stops at the test's end.
func startSidecar(t *testing.T, stderr io.Writer, args ...string) (listen, admin string) {
	t.Helper()
	listen, admin = freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runCtx(ctx, append([]string{"-listen", listen, "-admin", admin}, args...), stderr)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	return listen, admin
}

func readyz(admin string) int {
	resp, err := http.Get("http://" + admin + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestSidecarMutualTLS runs the real sidecar main with -xds over mutual
// TLS against a control plane that requires client certificates: without
// -xds-cert it is refused at the handshake and never ready; with one it
// gets its config and serves; after both the control plane's client CA and
// the sidecar's certificate are rotated (files rewritten, no restart), the
// control plane restarts on the same address, refusing the old
// certificate, and the sidecar reconnects with the new one and follows the
// new config.
func TestSidecarMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := certtest.NewCA(t, "ca-1")
	ca.Server(t, "controlplane").Write(t, dir, "server")
	certtest.WriteFile(t, filepath.Join(dir, "clients.pem"), ca.PEM)
	certtest.WriteFile(t, filepath.Join(dir, "server-ca.pem"), ca.PEM)
	ccert, ckey := ca.Client(t, "t1").Write(t, dir, "client")
	v1, v2 := startRuntime(t, "1"), startRuntime(t, "2")
	cp, cpAddr, stopCP := tlsControlPlane(t, "127.0.0.1:0", dir, 1)
	if _, err := cp.Update(context.Background(), splitConfig(t, v1, v2, 100, 0)); err != nil {
		t.Fatal(err)
	}
	serverCA := filepath.Join(dir, "server-ca.pem")

	refused := make(chan string, 1)
	_, noCertAdmin := startSidecar(t, lineWriter{"xds stream failed", refused}, "-xds", cpAddr, "-node-id", "t1", "-xds-ca", serverCA)
	// A failed stream ("certificate required", or a broken connection
	// when TLS 1.3 lets the client write before the alert arrives).
	t.Logf("sidecar without a client certificate: %s", <-refused)
	if code := readyz(noCertAdmin); code != http.StatusServiceUnavailable {
		t.Errorf("sidecar without a client certificate: /readyz %d, want 503", code)
	}

	listen, admin := startSidecar(t, io.Discard, "-xds", cpAddr, "-node-id", "t1", "-xds-ca", serverCA, "-xds-cert", ccert, "-xds-key", ckey, "-log-level", "error")
	waitFor(t, func() bool { return readyz(admin) == http.StatusOK })
	url := "http://" + listen + "/v2/models/m/infer"
	if c := countVersions(t, url, 100); c["1"] != 100 {
		t.Fatalf("with a client certificate: %v of 100 requests, want all on version 1", c)
	}

	ca2 := certtest.NewCA(t, "ca-2")
	certtest.WriteFile(t, filepath.Join(dir, "clients.pem"), ca2.PEM)
	ca2.Client(t, "t1").Write(t, dir, "client")
	stopCP()
	cp2, _, _ := tlsControlPlane(t, cpAddr, dir, 2)
	if _, err := cp2.Update(context.Background(), splitConfig(t, v1, v2, 0, 100)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		c := countVersions(t, url, 20)
		return c["2"] == 20
	})
}
