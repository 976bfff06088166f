package xdsserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	lrsv3 "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/batchmesh/batchmesh/internal/certtest"
	"github.com/batchmesh/batchmesh/internal/config"
)

// serveLRS serves l over loopback with creds and returns the address.
func serveLRS(t *testing.T, l *LRS, creds credentials.TransportCredentials) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(creds))
	l.Register(g)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return lis.Addr().String()
}

// TestLRSRequiresClientCert: with RequireClientCert, a report over a
// stream without a verified client certificate (plain text, or TLS that
// let the client in without one) is refused Unauthenticated, one whose
// node id the certificate does not name PermissionDenied, and neither is
// counted; the certificate's CN or URI name is accepted.
func TestLRSRequiresClientCert(t *testing.T) {
	ca := certtest.NewCA(t, "ca")
	srvLeaf := ca.Server(t, "cp")
	srvPair, err := tls.X509KeyPair(srvLeaf.CertPEM, srvLeaf.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	l := NewLRS(New(Config{Epoch: 1}), LRSConfig{RequireClientCert: true})
	if _, err := l.Update(context.Background(), adaptiveConfig(t, config.WeightsAdaptive)); err != nil {
		t.Fatal(err)
	}
	// The handshake lets a client without a certificate in, so that the
	// LRS check is what refuses it.
	tlsAddr := serveLRS(t, l, credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{srvPair}, ClientCAs: pool, ClientAuth: tls.VerifyClientCertIfGiven,
	}))
	plainAddr := serveLRS(t, l, insecure.NewCredentials())
	client := func(leaf *certtest.Leaf) credentials.TransportCredentials {
		cfg := &tls.Config{RootCAs: pool, ServerName: "localhost"}
		if leaf != nil {
			pair, err := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
		return credentials.NewTLS(cfg)
	}
	byCN := ca.Client(t, "node-1")
	byURI := ca.Client(t, "", "spiffe://cluster.local/ns/ml/sa/node-2")
	for _, tt := range []struct {
		name, addr, node string
		creds            credentials.TransportCredentials
		want             codes.Code
	}{
		{"plain text", plainAddr, "node-1", insecure.NewCredentials(), codes.Unauthenticated},
		{"TLS without a client certificate", tlsAddr, "node-1", client(nil), codes.Unauthenticated},
		{"another node than the certificate's", tlsAddr, "node-2", client(&byCN), codes.PermissionDenied},
		{"node id is the CN", tlsAddr, "node-1", client(&byCN), codes.OK},
		{"node id is the URI name", tlsAddr, "spiffe://cluster.local/ns/ml/sa/node-2", client(&byURI), codes.OK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l.mu.Lock()
			clear(l.acc)
			l.mu.Unlock()
			err := sendReport(tt.addr, tt.node, tt.creds)
			if got := status.Code(err); got != tt.want {
				t.Fatalf("got %v (%v), want %v", got, err, tt.want)
			}
			l.mu.Lock()
			n := len(l.acc)
			l.mu.Unlock()
			if tt.want != codes.OK && n != 0 {
				t.Errorf("the refused report was counted: %d endpoints", n)
			}
		})
	}
}

// sendReport sends one report with node as the first request and returns
// the error of the server's answer.
func sendReport(addr, node string, creds credentials.TransportCredentials) error {
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
	req := loadRequest(report("10.0.0.1", 80, 150, 0.25, 10))
	req.Node = &core.Node{Id: node}
	if err := st.Send(req); err != nil {
		return err
	}
	_, err = st.Recv()
	return err
}
