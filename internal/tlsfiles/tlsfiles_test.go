package tlsfiles

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/batchmesh/batchmesh/internal/certtest"
)

// serve accepts TLS connections with cfg on loopback; each is answered
// with the common name of the client's verified certificate ("-" if none)
// and closed.
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := c.(*tls.Conn)
				if tc.Handshake() != nil {
					return
				}
				name := "-"
				if ch := tc.ConnectionState().VerifiedChains; len(ch) > 0 {
					name = ch[0][0].Subject.CommonName
				}
				_, _ = io.WriteString(c, name)
			}()
		}
	}()
	return lis.Addr().String()
}

// call connects with cfg and returns the server's certificate's common
// name and the server's answer.
func call(addr string, cfg *tls.Config) (server, answer string, err error) {
	cfg.ServerName = "localhost"
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	b, err := io.ReadAll(c)
	if err != nil {
		return "", "", err
	}
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName, string(b), nil
}

func files(dir string) Files {
	return Files{
		Cert: File{Flag: "-tls-cert", Path: filepath.Join(dir, "server.crt")},
		Key:  File{Flag: "-tls-key", Path: filepath.Join(dir, "server.key")},
		CA:   File{Flag: "-client-ca", Path: filepath.Join(dir, "clients.pem")},
	}
}

// TestMutualTLSAndRotation: a client without a certificate is refused; one
// with a certificate is served; a rotated server certificate, client
// certificate and client CA are each used by the next handshake, with no
// new config built.
func TestMutualTLSAndRotation(t *testing.T) {
	dir := t.TempDir()
	ca := certtest.NewCA(t, "ca-1")
	ca.Server(t, "server-1").Write(t, dir, "server")
	certtest.WriteFile(t, filepath.Join(dir, "clients.pem"), ca.PEM)
	srvCfg, err := ServerConfig(files(dir), nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, srvCfg)

	// The client trusts ca-1 for the server, and presents client-1.
	certtest.WriteFile(t, filepath.Join(dir, "server-ca.pem"), ca.PEM)
	ccert, ckey := ca.Client(t, "client-1").Write(t, dir, "client")
	noCert, err := NewClient(Files{CA: File{Path: filepath.Join(dir, "server-ca.pem")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := call(addr, noCert.Config()); err == nil {
		t.Fatal("a client without a certificate was served")
	}
	cl, err := NewClient(Files{Cert: File{Path: ccert}, Key: File{Path: ckey}, CA: File{Path: filepath.Join(dir, "server-ca.pem")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	expect := func(step, server, client string) {
		t.Helper()
		s, a, err := call(addr, cl.Config())
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if s != server || a != client {
			t.Fatalf("%s: server %q saw client %q, want %q and %q", step, s, a, server, client)
		}
	}
	expect("first", "server-1", "client-1")

	ca.Server(t, "server-2").Write(t, dir, "server")
	expect("server certificate rotated", "server-2", "client-1")
	ca.Client(t, "client-2").Write(t, dir, "client")
	expect("client certificate rotated", "server-2", "client-2")

	// A new CA for the clients: the old client certificate is refused,
	// one of the new CA is served.
	ca2 := certtest.NewCA(t, "ca-2")
	certtest.WriteFile(t, filepath.Join(dir, "clients.pem"), ca2.PEM)
	if _, _, err := call(addr, cl.Config()); err == nil {
		t.Fatal("a client certificate of the replaced CA was served")
	}
	ca2.Client(t, "client-3").Write(t, dir, "client")
	expect("client CA rotated", "server-2", "client-3")
	// A new CA for the server, trusted by the client through its CA file.
	certtest.WriteFile(t, filepath.Join(dir, "server-ca.pem"), ca2.PEM)
	ca2.Server(t, "server-3").Write(t, dir, "server")
	expect("server CA rotated", "server-3", "client-3")
}

// TestBadRotationKeepsLastGood: a certificate replaced by one whose key
// has not been written yet, or by garbage, leaves the previous one in use,
// with one warning per bad state, not one per handshake.
func TestBadRotationKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	ca := certtest.NewCA(t, "ca")
	ca.Server(t, "good").Write(t, dir, "server")
	f := files(dir)
	f.CA = File{}
	var logs syncBuffer
	srvCfg, err := ServerConfig(f, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, srvCfg)
	certtest.WriteFile(t, filepath.Join(dir, "ca.pem"), ca.PEM)
	cl, err := NewClient(Files{CA: File{Path: filepath.Join(dir, "ca.pem")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Only the certificate of a new pair is written: it does not match
	// the key on disk.
	certtest.WriteFile(t, f.Cert.Path, ca.Server(t, "half-written").CertPEM)
	for range 2 {
		if s, _, err := call(addr, cl.Config()); err != nil || s != "good" {
			t.Fatalf("during a half-written rotation got server %q, %v; want the last good %q", s, err, "good")
		}
	}
	if n := strings.Count(logs.String(), "do not load"); n != 1 {
		t.Errorf("%d warnings for one half-written rotation over two handshakes, want 1:\n%s", n, logs.String())
	}
	certtest.WriteFile(t, f.Cert.Path, []byte("garbage"))
	if s, _, err := call(addr, cl.Config()); err != nil || s != "good" {
		t.Fatalf("with a garbage certificate got server %q, %v; want the last good %q", s, err, "good")
	}
	ca.Server(t, "next").Write(t, dir, "server")
	if s, _, err := call(addr, cl.Config()); err != nil || s != "next" {
		t.Fatalf("after the rotation completed got server %q, %v; want %q", s, err, "next")
	}
	if n := strings.Count(logs.String(), "do not load"); n != 2 || !strings.Contains(logs.String(), "tls files reloaded") {
		t.Errorf("want two warnings (half-written, garbage) and a reload:\n%s", logs.String())
	}
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestStartErrors: files that cannot be used are refused at start, naming
// the flag, the file and the fault.
func TestStartErrors(t *testing.T) {
	dir := t.TempDir()
	ca := certtest.NewCA(t, "ca")
	ca.Server(t, "s").Write(t, dir, "server")
	other := ca.Server(t, "other")
	certtest.WriteFile(t, filepath.Join(dir, "other.key"), other.KeyPEM)
	certtest.WriteFile(t, filepath.Join(dir, "clients.pem"), []byte("not pem"))
	good := files(dir)
	for _, tt := range []struct {
		name string
		f    func(f *Files)
		want []string
	}{
		{"missing cert", func(f *Files) { f.Cert.Path = filepath.Join(dir, "nope.crt") }, []string{"-tls-cert", "nope.crt", "no such file"}},
		{"key of another cert", func(f *Files) { f.Key.Path = filepath.Join(dir, "other.key") }, []string{"-tls-cert", "-tls-key", "other.key", "private key does not match"}},
		{"key is the cert", func(f *Files) { f.Key.Path = f.Cert.Path }, []string{"-tls-key", "server.crt"}},
		{"cert is the key", func(f *Files) { f.Cert.Path = f.Key.Path }, []string{"-tls-cert", "server.key", "no PEM CERTIFICATE"}},
		{"CA not PEM", func(*Files) {}, []string{"-client-ca", "clients.pem", "no PEM CERTIFICATE"}},
		{"key without cert", func(f *Files) { f.Cert.Path = "" }, []string{"-tls-key", "without -tls-cert"}},
		{"cert without key", func(f *Files) { f.Key.Path = "" }, []string{"-tls-cert", "without -tls-key"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := good
			tt.f(&f)
			_, err := ServerConfig(f, nil)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
	_, err := NewClient(Files{CA: File{Flag: "-xds-ca", Path: filepath.Join(dir, "absent.pem")}}, nil)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "-xds-ca") {
		t.Errorf("client with a missing CA: %v; want a not-exist error naming -xds-ca", err)
	}
}

func FuzzParseCerts(f *testing.F) {
	f.Add(certtest.NewCA(f, "seed").PEM)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		certs, err := parseCerts(b)
		if (err == nil) != (len(certs) > 0) {
			t.Fatalf("%d certificates with error %v", len(certs), err)
		}
	})
}
