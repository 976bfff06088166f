package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/batchmesh/batchmesh/internal/inject"
)

// startControlPlane runs the control plane with the webhook on 127.0.0.1
// and extra args until the test ends; it returns the admin and webhook
// addresses.
func startControlPlane(t *testing.T, extra ...string) (admin, webhook string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, goodYAML, time.Now())
	ctx, cancel := context.WithCancel(context.Background())
	type addrs struct{ admin, webhook net.Addr }
	ready := make(chan addrs, 1)
	errc := make(chan error, 1)
	args := append([]string{"-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0", "-config", path,
		"-webhook", "127.0.0.1:0", "-image", "batchmesh:test"}, extra...)
	go func() {
		errc <- run(ctx, args, io.Discard, func(_, admin, webhook net.Addr) { ready <- addrs{admin, webhook} })
	}()
	var a addrs
	select {
	case a = <-ready:
	case err := <-errc:
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	return a.admin.String(), a.webhook.String()
}

func tlsClient(t *testing.T, caPEM []byte) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("CA does not parse:\n%s", caPEM)
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// admit sends a pod to the webhook and returns its answer.
func admit(t *testing.T, client *http.Client, url string, pod *corev1.Pod) *admissionv1.AdmissionResponse {
	t.Helper()
	raw, _ := json.Marshal(pod)
	body, _ := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{UID: "u1", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Namespace: "ml", Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw}},
	})
	resp, err := client.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var review admissionv1.AdmissionReview
	if err := json.NewDecoder(resp.Body).Decode(&review); err != nil || review.Response == nil {
		t.Fatalf("answer %s: %v", resp.Status, err)
	}
	return review.Response
}

func clientPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "client", Namespace: "ml"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
	}
}

func TestWebhookSelfGenerated(t *testing.T) {
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	admin, webhook := startControlPlane(t, "-webhook-hosts", "127.0.0.1", "-webhook-ca-out", caFile)
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + admin + "/webhook/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(served, caPEM) {
		t.Fatalf("/webhook/ca.pem: %s, the same as -webhook-ca-out: %v", resp.Status, bytes.Equal(served, caPEM))
	}

	answer := admit(t, tlsClient(t, caPEM), "https://"+webhook+inject.Path, clientPod())
	if !answer.Allowed || answer.UID != "u1" {
		t.Fatalf("answer %+v", answer)
	}
	// The default captured ports are the config's model ports.
	if p := string(answer.Patch); !strings.Contains(p, `"8000,8001"`) || !strings.Contains(p, inject.SidecarName) {
		t.Fatalf("patch %s lacks the sidecar or the config's ports 8000,8001", p)
	}
}

func TestWebhookCertDir(t *testing.T) {
	dir := t.TempDir()
	cert, err := inject.NewServingCert([]string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(cert.Cert.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	crt := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Cert.Certificate[0]})
	key := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), crt, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	admin, webhook := startControlPlane(t, "-webhook-cert-dir", dir, "-inject-ports", "9000")
	resp, err := http.Get("http://" + admin + "/webhook/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("/webhook/ca.pem with -webhook-cert-dir: %s; want 404", resp.Status)
	}
	answer := admit(t, tlsClient(t, cert.CAPEM), "https://"+webhook+inject.Path, clientPod())
	if p := string(answer.Patch); !answer.Allowed || !strings.Contains(p, `"9000"`) {
		t.Fatalf("answer %+v, patch %s: want the -inject-ports 9000", answer, p)
	}
}

func TestKubernetesFlags(t *testing.T) {
	// -kubernetes makes -config optional; outside a pod the in-cluster
	// credentials are missing, and the error says so.
	err := run(context.Background(), []string{"-kubernetes", "-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0"}, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "kubernetes:") || strings.Contains(err.Error(), "-config is required") {
		t.Fatalf("-kubernetes outside a cluster: %v; want the missing in-cluster credentials", err)
	}
	err = run(context.Background(), []string{"-kubeconfig", filepath.Join(t.TempDir(), "absent"), "-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0"}, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "absent") {
		t.Fatalf("-kubeconfig of a missing file: %v; want an error naming it", err)
	}
}

func TestWebhookFlagErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, goodYAML, time.Now())
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-webhook-cert-dir", t.TempDir()}, "-webhook-cert-dir"},
		{[]string{"-webhook-hosts", " , "}, "-webhook-hosts: want at least one"},
		{[]string{"-webhook-cert-dir", t.TempDir(), "-webhook-config", "x"}, "with -webhook-cert-dir let cert-manager"},
		{[]string{"-inject-ports", "x"}, `-inject-ports "x"`},
		{[]string{"-webhook-ca-out", filepath.Join(t.TempDir(), "no", "such", "dir")}, "-webhook-ca-out"},
	} {
		args := append([]string{"-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0", "-config", path, "-webhook", "127.0.0.1:0"}, tt.args...)
		err := run(context.Background(), args, io.Discard, nil)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v; want %q", tt.args, err, tt.want)
		}
	}
}

// fakeAPIServer stands in for the API server's mutatingwebhookconfigurations
// endpoint over TLS on 127.0.0.1: it serves a configuration with two
// webhooks and records the patch it receives.
func fakeAPIServer(t *testing.T) (*kubeAPI, <-chan []byte) {
	t.Helper()
	patches := make(chan []byte, 1)
	const path = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/batchmesh-sidecar-injector"
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer t0ken" {
			http.Error(w, `{"message":"no token"}`, http.StatusUnauthorized)
			return
		}
		switch {
		case r.Method == http.MethodGet && r.URL.Path == path:
			_, _ = w.Write([]byte(`{"metadata":{"resourceVersion":"42"},"webhooks":[{"name":"a"},{"name":"b"}]}`))
		case r.Method == http.MethodPatch && r.URL.Path == path && r.Header.Get("Content-Type") == "application/json-patch+json":
			b, _ := io.ReadAll(r.Body)
			patches <- b
			_, _ = w.Write([]byte(`{}`))
		default:
			http.Error(w, `{"message":"not found"}`, http.StatusNotFound)
		}
	}))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = lis
	srv.StartTLS()
	t.Cleanup(srv.Close)

	dir := t.TempDir()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("t0ken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(lis.Addr().String())
	env := map[string]string{"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
	api, err := inClusterAPI(dir, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(api.client.CloseIdleConnections)
	return api, patches
}

func TestWebhookFillsCABundle(t *testing.T) {
	api, patches := fakeAPIServer(t)
	f := &webhookFlags{addr: "127.0.0.1:0", hosts: "127.0.0.1", config: "batchmesh-sidecar-injector",
		settings: func() (inject.Settings, error) {
			return inject.Settings{Image: "i", XDS: "x:1"}, nil
		}}
	wh, err := newWebhook(context.Background(), f, func() string { return "" }, api, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	wh.lis.Close()
	var ops []struct {
		Op, Path string
		Value    any
	}
	if err := json.Unmarshal(<-patches, &ops); err != nil {
		t.Fatal(err)
	}
	want := base64.StdEncoding.EncodeToString(wh.caPEM)
	if len(ops) != 3 || ops[0].Op != "test" || ops[0].Value != "42" ||
		ops[1].Path != "/webhooks/0/clientConfig/caBundle" || ops[2].Path != "/webhooks/1/clientConfig/caBundle" ||
		ops[1].Value != want || ops[2].Value != want {
		t.Fatalf("patch %+v; want the resourceVersion tested and both webhooks' caBundle set to the CA", ops)
	}

	// A configuration the API server does not have: the start fails, naming it.
	f.config = "absent"
	if _, err := newWebhook(context.Background(), f, nil, api, slog.New(slog.DiscardHandler)); err == nil ||
		!strings.Contains(err.Error(), "-webhook-config absent") || !strings.Contains(err.Error(), "404") {
		t.Fatalf("error %v; want -webhook-config absent ... 404", err)
	}
	if _, err := inClusterAPI(t.TempDir(), func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), "not in a cluster") {
		t.Fatalf("outside a cluster: %v", err)
	}
}
