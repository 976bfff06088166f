package inject

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	jsonpatch5 "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
)

// startWebhook serves the webhook over TLS on 127.0.0.1 with a fresh
// self-generated certificate, and returns its URL and a client trusting
// only that certificate's CA.
func startWebhook(t *testing.T) (string, *http.Client) {
	t.Helper()
	cert, err := NewServingCert([]string{"127.0.0.1", "batchmesh-controlplane.batchmesh-system.svc"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &Webhook{Settings: testSettings, Logger: slog.New(slog.DiscardHandler)}
	srv := &http.Server{Handler: w.Handler(), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(tls.NewListener(lis, &tls.Config{Certificates: []tls.Certificate{cert.Cert}, MinVersion: tls.VersionTLS12}))
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(cert.CAPEM) {
		t.Fatalf("CA PEM does not parse:\n%s", cert.CAPEM)
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	t.Cleanup(client.CloseIdleConnections)
	return "https://" + lis.Addr().String(), client
}

func reviewOf(t *testing.T, kind string, obj any) []byte {
	t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       types.UID("uid-" + kind),
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: kind},
			Namespace: "ml",
			Operation: admissionv1.Create,
			Object:    runtime.RawExtension{Raw: raw},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func post(t *testing.T, client *http.Client, url string, body []byte) (int, *admissionv1.AdmissionResponse) {
	t.Helper()
	resp, err := client.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(b, &review); err != nil || review.Response == nil {
		t.Fatalf("answer %s: %v", b, err)
	}
	return resp.StatusCode, review.Response
}

// patched applies resp's patch to pod.
func patched(t *testing.T, pod *corev1.Pod, resp *admissionv1.AdmissionResponse) *corev1.Pod {
	t.Helper()
	if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("patch type %v; want JSONPatch", resp.PatchType)
	}
	p, err := jsonpatch5.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(pod)
	out, err := p.Apply(raw)
	if err != nil {
		t.Fatalf("apply %s: %v", resp.Patch, err)
	}
	var got corev1.Pod
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	return &got
}

func TestWebhookInjects(t *testing.T) {
	url, client := startWebhook(t)
	pod := appPod()
	code, resp := post(t, client, url+Path, reviewOf(t, "Pod", pod))
	if code != http.StatusOK || !resp.Allowed || resp.UID != "uid-Pod" {
		t.Fatalf("answer %d %+v", code, resp)
	}
	got := patched(t, pod, resp)
	if names := containerNames(got.Spec.InitContainers); strings.Join(names, ",") != RedirectName+","+SidecarName {
		t.Fatalf("init containers %v", names)
	}
	if _, ok := got.Annotations[AnnotationStatus]; !ok {
		t.Fatal("no status annotation")
	}
	if strings.Contains(strings.Join(got.Spec.InitContainers[1].Args, " "), "-beside-istio") {
		t.Fatal("beside-istio on the plain path")
	}

	// The Istio path: the namespace has Istio injection.
	_, resp = post(t, client, url+PathIstio, reviewOf(t, "Pod", pod))
	got = patched(t, pod, resp)
	if !strings.Contains(strings.Join(got.Spec.InitContainers[1].Args, " "), "-beside-istio") {
		t.Fatalf("no -beside-istio on %s: %q", PathIstio, got.Spec.InitContainers[1].Args)
	}

	// The injected pod again: allowed, nothing to patch.
	injected := patched(t, pod, resp)
	_, resp = post(t, client, url+Path, reviewOf(t, "Pod", injected))
	if !resp.Allowed || len(resp.Patch) != 0 {
		t.Fatalf("an injected pod got %+v", resp)
	}
}

func TestWebhookLeavesAlone(t *testing.T) {
	url, client := startWebhook(t)
	optOut := appPod()
	optOut.Labels[LabelInject] = "false"
	host := appPod()
	host.Spec.HostNetwork = true
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(reviewOf(t, "Pod", appPod()), &review); err != nil {
		t.Fatal(err)
	}
	review.Request.Operation = admissionv1.Update
	update, _ := json.Marshal(review)
	for name, body := range map[string][]byte{
		"opted out":    reviewOf(t, "Pod", optOut),
		"host network": reviewOf(t, "Pod", host),
		"a ConfigMap":  reviewOf(t, "ConfigMap", map[string]any{"metadata": map[string]any{"name": "c"}}),
		"an update":    update,
	} {
		code, resp := post(t, client, url+Path, body)
		if code != http.StatusOK || !resp.Allowed || resp.Patch != nil || resp.PatchType != nil {
			t.Errorf("%s: answer %d %+v; want allowed without a patch", name, code, resp)
		}
	}
}

func TestWebhookRefuses(t *testing.T) {
	url, client := startWebhook(t)
	bad := appPod()
	bad.Annotations = map[string]string{AnnotationPorts: "http"}
	code, resp := post(t, client, url+Path, reviewOf(t, "Pod", bad))
	if code != http.StatusOK || resp.Allowed || resp.Result == nil || !strings.Contains(resp.Result.Message, AnnotationPorts) {
		t.Fatalf("bad annotation: answer %d %+v; want refused naming %s", code, resp, AnnotationPorts)
	}
	if code, _ := post(t, client, url+Path, []byte("{")); code != http.StatusBadRequest {
		t.Errorf("malformed review: status %d; want 400", code)
	}
	if code, _ := post(t, client, url+Path, []byte(`{"kind":"AdmissionReview"}`)); code != http.StatusBadRequest {
		t.Errorf("review without request: status %d; want 400", code)
	}
	resp2, err := client.Get(url + Path)
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET %s: status %d; want 405", Path, resp2.StatusCode)
	}
	// A client that does not trust the CA fails the handshake.
	plain := &http.Client{Timeout: 5 * time.Second}
	if r, err := plain.Post(url+Path, "application/json", bytes.NewReader(reviewOf(t, "Pod", bad))); err == nil {
		r.Body.Close()
		t.Fatal("a client without the CA got through")
	}
}

func TestNewServingCert(t *testing.T) {
	if _, err := NewServingCert(nil, time.Now()); err == nil || !strings.HasPrefix(err.Error(), "inject: ") {
		t.Fatalf("no hosts: %v", err)
	}
	c, err := NewServingCert([]string{"svc.ns.svc", "127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(c.Cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.CAPEM)
	for _, h := range []string{"svc.ns.svc", "127.0.0.1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: h, Roots: pool}); err != nil {
			t.Errorf("verify for %s: %v", h, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "other.svc", Roots: pool}); err == nil {
		t.Error("the certificate verifies for a host it was not made for")
	}
}
