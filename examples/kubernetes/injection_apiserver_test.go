package kubernetes_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/batchmesh/batchmesh/internal/apiservertest"
	"github.com/batchmesh/batchmesh/internal/inject"
)

var apiTestSettings = inject.Settings{Image: "batchmesh:test", Version: "test", XDS: "batchmesh-controlplane.batchmesh-system.svc:18000", Ports: "8000"}

// startInjector serves inject.Webhook over TLS on 127.0.0.1 and returns
// its base URL and CA.
func startInjector(t *testing.T) (string, []byte) {
	t.Helper()
	cert, err := inject.NewServingCert([]string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wh := &inject.Webhook{Settings: apiTestSettings, Logger: slog.New(slog.DiscardHandler)}
	srv := &http.Server{Handler: wh.Handler(), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(tls.NewListener(lis, &tls.Config{Certificates: []tls.Certificate{cert.Cert}, MinVersion: tls.VersionTLS12}))
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return "https://" + lis.Addr().String(), cert.CAPEM
}

func podJSON(t *testing.T, ns, name string, edit func(*corev1.Pod)) []byte {
	t.Helper()
	p := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
	}
	if edit != nil {
		edit(p)
	}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func initNames(t *testing.T, body []byte) ([]string, *corev1.Pod) {
	t.Helper()
	var p corev1.Pod
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range p.Spec.InitContainers {
		names = append(names, c.Name)
	}
	return names, &p
}

// TestAPIServerInjection installs the real MutatingWebhookConfiguration,
// pointed at a webhook of this test, in a real API server, and creates pods.
func TestAPIServerInjection(t *testing.T) {
	a := apiservertest.Start(t)
	base, ca := startInjector(t)

	mwc := readManifests(t, "install").webhook.DeepCopy()
	for i := range mwc.Webhooks {
		url := base + *mwc.Webhooks[i].ClientConfig.Service.Path
		mwc.Webhooks[i].ClientConfig.Service = nil
		mwc.Webhooks[i].ClientConfig.URL = &url
		mwc.Webhooks[i].ClientConfig.CABundle = ca
	}
	mwc.TypeMeta = metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "MutatingWebhookConfiguration"}
	b, _ := json.Marshal(mwc)
	a.Create(t, apiservertest.RESTPath(t, "MutatingWebhookConfiguration", ""), b)
	a.Create(t, "/api/v1/namespaces", []byte(`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"ml","labels":{"batchmesh.io/inject":"enabled"}}}`))
	a.Create(t, "/api/v1/namespaces", []byte(`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"plain"}}`))

	// The API server loads webhook configurations asynchronously: create
	// probe pods until one comes back injected.
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		name := fmt.Sprintf("probe-%d", i)
		names, _ := initNames(t, a.Create(t, apiservertest.RESTPath(t, "Pod", "ml"), podJSON(t, "ml", name, nil)))
		if len(names) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the webhook configuration did not take effect within 30s")
		}
		time.Sleep(100 * time.Millisecond)
	}

	already, _, _, err := inject.Pod(&corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "already", Namespace: "ml"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
	}, apiTestSettings, inject.Scope{NamespaceEnabled: true})
	if err != nil {
		t.Fatal(err)
	}
	alreadyJSON, _ := json.Marshal(already)

	injected := []string{inject.RedirectName, inject.SidecarName}
	for _, tt := range []struct {
		name, ns string
		body     []byte
		want     []string
	}{
		{"labelled namespace", "ml", podJSON(t, "ml", "app", nil), injected},
		{"opted out", "ml", podJSON(t, "ml", "optout", func(p *corev1.Pod) { p.Labels[inject.LabelInject] = "false" }), nil},
		{"host network", "ml", podJSON(t, "ml", "hostnet", func(p *corev1.Pod) { p.Spec.HostNetwork = true }), nil},
		{"unlabelled namespace", "plain", podJSON(t, "plain", "app", nil), nil},
		{"pod opted in", "plain", podJSON(t, "plain", "optin", func(p *corev1.Pod) { p.Labels[inject.LabelInject] = "true" }), injected},
		{"already injected", "ml", alreadyJSON, injected},
	} {
		names, pod := initNames(t, a.Create(t, apiservertest.RESTPath(t, "Pod", tt.ns), tt.body))
		if !slices.Equal(names, tt.want) {
			t.Errorf("%s: stored init containers %v; want %v", tt.name, names, tt.want)
			continue
		}
		_, annotated := pod.Annotations[inject.AnnotationStatus]
		if annotated != (tt.want != nil) {
			t.Errorf("%s: status annotation present: %v", tt.name, annotated)
		}
		if tt.want != nil {
			sc := pod.Spec.InitContainers[1]
			if sc.RestartPolicy == nil || *sc.RestartPolicy != corev1.ContainerRestartPolicyAlways || sc.StartupProbe == nil {
				t.Errorf("%s: the sidecar is stored without restartPolicy Always and its startup probe: %+v", tt.name, sc)
			}
		}
	}
}

// TestAPIServerAcceptsManifests creates every install and example document
// as a server-side dry run (the namespaces for real), and the example's
// Deployments injected offline, with native and with legacy sidecars.
func TestAPIServerAcceptsManifests(t *testing.T) {
	a := apiservertest.Start(t)
	for _, file := range []string{"install/namespace.yaml", "install/rbac.yaml", "install/controlplane.yaml", "install/webhook.yaml", "example/app.yaml"} {
		data, err := os.ReadFile(filepath.FromSlash(file))
		if err != nil {
			t.Fatal(err)
		}
		if file == "example/app.yaml" {
			injected, _, err := inject.Documents(data, apiTestSettings, inject.Scope{})
			if err != nil {
				t.Fatal(err)
			}
			legacySettings := apiTestSettings
			legacySettings.LegacySidecar = true
			legacy, _, err := inject.Documents(data, legacySettings, inject.Scope{})
			if err != nil {
				t.Fatal(err)
			}
			data = slices.Concat(data, []byte("\n---\n"), injected, []byte("\n---\n"), legacy)
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			obj, err := sigsyaml.YAMLToJSON(doc)
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			kind, ns := apiservertest.ObjectMeta(t, obj)
			if kind == "" {
				continue
			}
			path := apiservertest.RESTPath(t, kind, ns)
			if kind == "Namespace" {
				// Namespaced documents need theirs to exist; a second copy
				// of the same namespace (the injected stream) is a 409.
				if code, body, err := a.Do(http.MethodPost, path, obj); err != nil || (code != http.StatusCreated && code != http.StatusConflict) {
					t.Fatalf("%s: namespace: %d %s %v", file, code, body, err)
				}
				continue
			}
			a.Create(t, path+"?dryRun=All", obj)
		}
	}
}
