package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	lrsv3 "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/batchmesh/batchmesh/internal/certtest"
	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/tlsfiles"
	"github.com/batchmesh/batchmesh/internal/xdsclient"
)

// startTLS runs the control plane with args added to its listeners and
// -config, and returns the ADS address and its log.
func startTLS(t *testing.T, args ...string) (string, *syncBuffer) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, goodYAML, time.Now())
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	errc := make(chan error, 1)
	logs := &syncBuffer{}
	go func() {
		errc <- run(ctx, append([]string{"-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0", "-config", path}, args...), logs,
			func(ads, _, _ net.Addr) { ready <- ads.String() })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	select {
	case a := <-ready:
		return a, logs
	case err := <-errc:
		errc <- nil
		t.Fatal(err)
	}
	return "", nil
}

// adsClusters opens an ADS stream with creds and returns the number of
// clusters of the first response.
func adsClusters(addr string, creds credentials.TransportCredentials) (int, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return 0, err
	}
	if err := st.Send(&discovery.DiscoveryRequest{Node: &core.Node{Id: "node-1"}, TypeUrl: resource.ClusterType}); err != nil {
		return 0, err
	}
	r, err := st.Recv()
	return len(r.GetResources()), err
}

// lrsFirst opens an LRS stream with creds as node and returns the error of
// the server's first answer.
func lrsFirst(addr, node string, creds credentials.TransportCredentials) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := lrsv3.NewLoadReportingServiceClient(conn).StreamLoadStats(ctx)
	if err != nil {
		return err
	}
	if err := st.Send(&lrsv3.LoadStatsRequest{Node: &core.Node{Id: node}}); err != nil {
		return err
	}
	_, err = st.Recv()
	return err
}

// signalHandler sends each log record's message and attributes on c.
type signalHandler struct{ c chan string }

func (h signalHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h signalHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h signalHandler) WithGroup(string) slog.Handler            { return h }
func (h signalHandler) Handle(_ context.Context, r slog.Record) error {
	s := r.Message
	r.Attrs(func(a slog.Attr) bool { s += " " + a.String(); return true })
	select {
	case h.c <- s:
	default:
	}
	return nil
}

// TestMutualTLS is the acceptance test of mutual TLS between a sidecar's
// xDS client and the control plane, both real, over loopback: a sidecar
// without a client certificate is refused, one with a certificate gets its
// config, and a rotated client certificate of a new CA (the control
// plane's -client-ca rotated with it) is picked up by both sides without a
// restart. LRS reports are accepted only from the node id the certificate
// names.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := certtest.NewCA(t, "ca-1")
	scert, skey := ca.Server(t, "controlplane").Write(t, dir, "server")
	clientCA := filepath.Join(dir, "clients.pem")
	certtest.WriteFile(t, clientCA, ca.PEM)
	serverCA := filepath.Join(dir, "server-ca.pem")
	certtest.WriteFile(t, serverCA, ca.PEM)
	ccert, ckey := ca.Client(t, "node-1").Write(t, dir, "client")
	addr, logs := startTLS(t, "-tls-cert", scert, "-tls-key", skey, "-client-ca", clientCA)
	if strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("mutual TLS on loopback logged a warning:\n%s", logs)
	}

	// Plain text and TLS without a client certificate are refused at the
	// handshake, by a raw stream and by the sidecar's client alike.
	if _, err := adsClusters(addr, insecure.NewCredentials()); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext ADS: %v; want Unavailable", err)
	}
	noCert, err := tlsfiles.NewClient(tlsfiles.Files{CA: tlsfiles.File{Path: serverCA}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := adsClusters(addr, credentials.NewTLS(noCert.Config())); status.Code(err) != codes.Unavailable {
		t.Errorf("ADS without a client certificate: %v; want Unavailable", err)
	}
	// The client sees the refusal as "certificate required", or, when
	// TLS 1.3 lets it write before the server's alert arrives, as a broken
	// connection: either way a failed stream before any config.
	if err := runSidecarClient(t, addr, noCert.Config); err == nil {
		t.Error("sidecar without a client certificate got a config")
	} else {
		t.Logf("sidecar without a client certificate: %v", err)
	}

	withCert, err := tlsfiles.NewClient(tlsfiles.Files{Cert: tlsfiles.File{Path: ccert}, Key: tlsfiles.File{Path: ckey}, CA: tlsfiles.File{Path: serverCA}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := runSidecarClient(t, addr, withCert.Config); err != nil {
		t.Fatalf("sidecar with a client certificate: %v", err)
	}
	if err := lrsFirst(addr, "node-1", credentials.NewTLS(withCert.Config())); err != nil {
		t.Errorf("LRS as the certificate's node: %v", err)
	}
	if err := lrsFirst(addr, "node-2", credentials.NewTLS(withCert.Config())); status.Code(err) != codes.PermissionDenied {
		t.Errorf("LRS as another node: %v; want PermissionDenied", err)
	}

	// Rotation: a new CA for the clients, and the sidecar's certificate
	// from it. A copy of the old certificate is now refused; the sidecar's
	// rotated files work without a restart.
	oldDir := t.TempDir()
	ocert, okey := ca.Client(t, "node-1").Write(t, oldDir, "client")
	old, err := tlsfiles.NewClient(tlsfiles.Files{Cert: tlsfiles.File{Path: ocert}, Key: tlsfiles.File{Path: okey}, CA: tlsfiles.File{Path: serverCA}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ca2 := certtest.NewCA(t, "ca-2")
	certtest.WriteFile(t, clientCA, ca2.PEM)
	ca2.Client(t, "node-1").Write(t, dir, "client")
	if _, err := adsClusters(addr, credentials.NewTLS(old.Config())); status.Code(err) != codes.Unavailable {
		t.Errorf("ADS with a certificate of the replaced client CA: %v; want Unavailable", err)
	}
	if err := runSidecarClient(t, addr, withCert.Config); err != nil {
		t.Fatalf("sidecar after rotation: %v", err)
	}
	if !strings.Contains(logs.String(), "tls files reloaded") {
		t.Errorf("the control plane did not log the reload:\n%s", logs)
	}
}

// runSidecarClient runs the sidecar's xDS client against addr until it
// applies a config (nil) or logs its first stream failure (the error).
func runSidecarClient(t *testing.T, addr string, tlsConfig func() *tls.Config) error {
	t.Helper()
	events := make(chan string, 1)
	c, err := xdsclient.New(xdsclient.Config{Server: addr, NodeID: "node-1", TLS: tlsConfig, Logger: slog.New(signalHandler{events})})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	applied := make(chan *config.Config, 1)
	go func() {
		defer close(done)
		_ = c.Run(ctx, func(cfg *config.Config, _ xdsclient.Versions) error {
			select {
			case applied <- cfg:
			default:
			}
			return nil
		})
	}()
	defer func() { cancel(); <-done }()
	for {
		select {
		case cfg := <-applied:
			if len(cfg.Models) != 1 || cfg.Models[0].Name != "bert" {
				return fmt.Errorf("applied %+v, want model bert", cfg.Models)
			}
			return nil
		case e := <-events:
			if strings.HasPrefix(e, "xds stream failed") {
				return fmt.Errorf("%s", e)
			}
		}
	}
}

// TestTLSWarnings: server-only TLS beyond loopback logs no warning but
// says, at info, that clients are unauthenticated; -client-ca alone is
// refused.
func TestTLSWarnings(t *testing.T) {
	var buf syncBuffer
	warnIfExposed(slog.New(slog.NewTextHandler(&buf, nil)), "ADS and LRS", &net.TCPAddr{IP: net.IPv4zero, Port: 18000}, serverTLS)
	if got := buf.String(); strings.Contains(got, "level=WARN") || !strings.Contains(got, "unauthenticated") {
		t.Errorf("server-only TLS logged %q; want an info line saying LRS is unauthenticated", got)
	}
	var quiet syncBuffer
	warnIfExposed(slog.New(slog.NewTextHandler(&quiet, nil)), "ADS and LRS", &net.TCPAddr{IP: net.IPv4zero, Port: 18000}, mutualTLS)
	if quiet.String() != "" {
		t.Errorf("mutual TLS logged %q", quiet.String())
	}
	if _, err := parseFlags([]string{"-config", "x.yaml", "-client-ca", "ca.pem"}, new(syncBuffer)); err == nil || !strings.Contains(err.Error(), "-tls-cert") {
		t.Errorf("-client-ca alone: %v; want an error naming -tls-cert", err)
	}
	dir := t.TempDir()
	err := run(context.Background(), []string{"-config", "x.yaml", "-tls-cert", filepath.Join(dir, "absent.crt"), "-tls-key", filepath.Join(dir, "absent.key")}, new(syncBuffer), nil)
	if err == nil || !strings.Contains(err.Error(), "-tls-cert") || !strings.Contains(err.Error(), "absent.crt") {
		t.Errorf("missing certificate: %v; want an error naming -tls-cert and the file", err)
	}
}

// TestServerOnlyTLS: with -tls-cert and -tls-key alone, a sidecar that
// verifies the control plane with -xds-ca and shows no certificate gets
// its config and its load reports are taken; plaintext is refused; the
// start logs that clients are unauthenticated.
func TestServerOnlyTLS(t *testing.T) {
	dir := t.TempDir()
	ca := certtest.NewCA(t, "ca")
	scert, skey := ca.Server(t, "controlplane").Write(t, dir, "server")
	serverCA := filepath.Join(dir, "server-ca.pem")
	certtest.WriteFile(t, serverCA, ca.PEM)
	addr, logs := startTLS(t, "-tls-cert", scert, "-tls-key", skey)
	if got := logs.String(); !strings.Contains(got, "unauthenticated") || strings.Contains(got, "level=WARN") {
		t.Errorf("server-only TLS start log lacks the unauthenticated notice, or warns:\n%s", got)
	}
	cl, err := tlsfiles.NewClient(tlsfiles.Files{CA: tlsfiles.File{Path: serverCA}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := runSidecarClient(t, addr, cl.Config); err != nil {
		t.Errorf("sidecar over server-only TLS: %v", err)
	}
	if err := lrsFirst(addr, "any-node", credentials.NewTLS(cl.Config())); err != nil {
		t.Errorf("LRS over server-only TLS: %v", err)
	}
	if _, err := adsClusters(addr, insecure.NewCredentials()); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext ADS to a TLS listener: %v; want Unavailable", err)
	}
	other, err := tlsfiles.NewClient(tlsfiles.Files{CA: tlsfiles.File{Path: writeCA(t, certtest.NewCA(t, "other"))}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := adsClusters(addr, credentials.NewTLS(other.Config())); status.Code(err) != codes.Unavailable {
		t.Errorf("ADS verifying the server with another CA: %v; want Unavailable", err)
	}
}

func writeCA(t *testing.T, ca *certtest.CA) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.pem")
	certtest.WriteFile(t, p, ca.PEM)
	return p
}
