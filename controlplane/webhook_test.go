package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
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

func TestWebhookFlagErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, goodYAML, time.Now())
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-webhook-cert-dir", t.TempDir()}, "-webhook-cert-dir"},
		{[]string{"-webhook-hosts", " , "}, "-webhook-hosts: want at least one"},
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
