// Package apiservertest starts a real kube-apiserver and its etcd on
// 127.0.0.1 for tests (TEST_ASSET_KUBE_APISERVER, TEST_ASSET_ETCD, the
// names controller-runtime's envtest uses), and talks to it over HTTP with
// an admin token. Without the binaries, Start skips the test, saying how to
// get them. Only test files import it.
package apiservertest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The binaries of the real-API-server tests, named as controller-runtime's
// envtest names them.
const (
	envAPIServer = "TEST_ASSET_KUBE_APISERVER"
	envEtcd      = "TEST_ASSET_ETCD"
)

// Server is a kube-apiserver and its etcd, started for one test.
type Server struct {
	URL    string // https://127.0.0.1:PORT
	Token  string // a bearer token of group system:masters
	Client *http.Client
}

// Start starts etcd and kube-apiserver on 127.0.0.1 until the test ends,
// or skips the test when the binaries are not given.
func Start(t *testing.T) *Server {
	t.Helper()
	kas, etcd := os.Getenv(envAPIServer), os.Getenv(envEtcd)
	if kas == "" || etcd == "" {
		t.Skipf("needs a real API server: set %s to a kube-apiserver v1.37 binary (.ci/run builds one from the Go module proxy; see docs/kubernetes.md, Tests) and %s to etcd (apt-get install etcd-server)", envAPIServer, envEtcd)
	}
	dir := t.TempDir()
	etcdPort, peerPort, kasPort := freePort(t), freePort(t), freePort(t)
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPort)
	startProcess(t, filepath.Join(dir, "etcd.log"), etcd,
		"--data-dir", filepath.Join(dir, "etcd"), "--name", "test",
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", peerPort),
		"--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", peerPort),
		"--initial-cluster", fmt.Sprintf("test=http://127.0.0.1:%d", peerPort))

	token := "test-admin-token"
	tokens := filepath.Join(dir, "tokens.csv")
	writeTestFile(t, tokens, token+",admin,admin-uid,system:masters\n")
	saKey := filepath.Join(dir, "sa.key")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, saKey, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})))
	startProcess(t, filepath.Join(dir, "kube-apiserver.log"), kas,
		"--etcd-servers", etcdURL,
		"--bind-address", "127.0.0.1", "--secure-port", fmt.Sprint(kasPort),
		"--endpoint-reconciler-type", "none",
		"--cert-dir", filepath.Join(dir, "certs"),
		"--token-auth-file", tokens,
		"--authorization-mode", "RBAC",
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", saKey, "--service-account-signing-key-file", saKey,
		"--service-cluster-ip-range", "10.0.0.0/24",
		// No controller manager creates the default service accounts.
		"--disable-admission-plugins", "ServiceAccount")

	a := &Server{
		URL:   fmt.Sprintf("https://127.0.0.1:%d", kasPort),
		Token: token,
		// The API server's certificate is self-signed in --cert-dir; the
		// test talks to the process it started, on loopback.
		Client: &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}, //nolint:gosec // a local API server the test started
		}},
	}
	t.Cleanup(a.Client.CloseIdleConnections)
	deadline := time.Now().Add(90 * time.Second)
	for {
		code, body, err := a.Do(http.MethodGet, "/readyz", nil)
		if err == nil && code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kube-apiserver not ready in 90s: %d %s %v (logs in %s)", code, body, err, dir)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return a
}

// Do sends a request with a JSON body (or none) to the API server with the
// admin token, and returns the status code and body.
func (a *Server) Do(method, path string, body []byte) (int, []byte, error) {
	return a.send(method, path, "application/json", body)
}

// DoPatch sends a JSON patch (RFC 6902) to the object at path.
func (a *Server) DoPatch(path string, patch []byte) (int, []byte, error) {
	return a.send(http.MethodPatch, path, "application/json-patch+json", patch)
}

func (a *Server) send(method, path, contentType string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(context.Background(), method, a.URL+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+a.Token)
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Accept", "application/json")
	resp, err := a.Client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// Create POSTs obj (JSON) to the collection path and fails the test unless
// it is created (201), or accepted as a dry run (200); it returns the
// object stored.
func (a *Server) Create(t *testing.T, path string, obj []byte) []byte {
	t.Helper()
	code, body, err := a.Do(http.MethodPost, path, obj)
	if err != nil {
		t.Fatal(err)
	}
	if code != http.StatusCreated && code != http.StatusOK {
		t.Fatalf("POST %s: %d %s\n%s", path, code, body, obj)
	}
	return body
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func writeTestFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// startProcess runs bin with args, its output in logPath, until the test
// ends; the log is printed if the test failed.
func startProcess(t *testing.T, logPath, bin string, args ...string) {
	t.Helper()
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", bin, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			t.Logf("%s (last lines):\n%s", filepath.Base(logPath), b)
		}
	})
}

// RESTPath returns the collection path of an object of kind in ns.
func RESTPath(t *testing.T, kind, ns string) string {
	t.Helper()
	paths := map[string]string{
		"Namespace":                    "/api/v1/namespaces",
		"ServiceAccount":               "/api/v1/namespaces/%s/serviceaccounts",
		"ConfigMap":                    "/api/v1/namespaces/%s/configmaps",
		"Service":                      "/api/v1/namespaces/%s/services",
		"Pod":                          "/api/v1/namespaces/%s/pods",
		"Deployment":                   "/apis/apps/v1/namespaces/%s/deployments",
		"PodDisruptionBudget":          "/apis/policy/v1/namespaces/%s/poddisruptionbudgets",
		"ClusterRole":                  "/apis/rbac.authorization.k8s.io/v1/clusterroles",
		"ClusterRoleBinding":           "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
		"MutatingWebhookConfiguration": "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
	}
	p, ok := paths[kind]
	if !ok {
		t.Fatalf("no REST path for kind %s", kind)
	}
	if strings.Contains(p, "%s") {
		return fmt.Sprintf(p, ns)
	}
	return p
}

// ObjectMeta reads the kind and namespace of a JSON object.
func ObjectMeta(t *testing.T, obj []byte) (kind, ns string) {
	t.Helper()
	var m struct {
		Kind     string
		Metadata struct{ Namespace string }
	}
	if err := json.Unmarshal(obj, &m); err != nil {
		t.Fatal(err)
	}
	return m.Kind, m.Metadata.Namespace
}
