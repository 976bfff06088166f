package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/batchmesh/batchmesh/internal/apiservertest"
	"github.com/batchmesh/batchmesh/internal/inject"
)

// TestAPIServerCABundle runs the control plane's webhook against a real API
// server: -webhook-config fills the install's MutatingWebhookConfiguration
// with the self-generated CA, and the API server, trusting only that, calls
// the webhook and stores injected pods.
func TestAPIServerCABundle(t *testing.T) {
	a := apiservertest.Start(t)
	data, err := os.ReadFile(filepath.Join("..", "examples", "kubernetes", "install", "webhook.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := sigsyaml.UnmarshalStrict(data, &mwc); err != nil {
		t.Fatal(err)
	}
	paths := make([]string, len(mwc.Webhooks))
	for i := range mwc.Webhooks {
		// The port is known once the webhook listens: a placeholder first.
		paths[i] = *mwc.Webhooks[i].ClientConfig.Service.Path
		url := "https://127.0.0.1:1" + paths[i]
		mwc.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &url}
	}
	b, _ := json.Marshal(mwc)
	a.Create(t, apiservertest.RESTPath(t, "MutatingWebhookConfiguration", ""), b)

	api := &kubeAPI{base: a.URL, token: a.Token, client: a.Client}
	f := &webhookFlags{addr: "127.0.0.1:0", hosts: "127.0.0.1", config: mwc.Name,
		settings: func() (inject.Settings, error) {
			return inject.Settings{Image: "batchmesh:test", XDS: defaultXDS, Ports: "8000"}, nil
		}}
	wh, err := newWebhook(context.Background(), f, func() string { return "" }, api, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = wh.srv.Serve(wh.lis)
	}()
	t.Cleanup(func() {
		wh.srv.Close()
		<-done
	})

	// Every webhook's caBundle is the control plane's CA; point them at it.
	code, body, err := a.Do(http.MethodGet, apiservertest.RESTPath(t, "MutatingWebhookConfiguration", "")+"/"+mwc.Name, nil)
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET: %d %s %v", code, body, err)
	}
	var stored admissionregistrationv1.MutatingWebhookConfiguration
	if err := json.Unmarshal(body, &stored); err != nil {
		t.Fatal(err)
	}
	var ops []map[string]string
	for i, w := range stored.Webhooks {
		if !bytes.Equal(w.ClientConfig.CABundle, wh.caPEM) {
			t.Fatalf("webhook %s: caBundle %q; want the control plane's CA", w.Name, w.ClientConfig.CABundle)
		}
		ops = append(ops, map[string]string{"op": "replace", "path": fmt.Sprintf("/webhooks/%d/clientConfig/url", i),
			"value": "https://" + wh.lis.Addr().String() + paths[i]})
	}
	patch, _ := json.Marshal(ops)
	if code, body, err := a.DoPatch(apiservertest.RESTPath(t, "MutatingWebhookConfiguration", "")+"/"+mwc.Name, patch); err != nil || code != http.StatusOK {
		t.Fatalf("PATCH: %d %s %v", code, body, err)
	}

	a.Create(t, "/api/v1/namespaces", []byte(`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"ml","labels":{"batchmesh.io/inject":"enabled"}}}`))
	// The API server loads webhook configurations asynchronously.
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		pod, _ := json.Marshal(corev1.Pod{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("app-%d", i), Namespace: "ml"},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
		})
		var got corev1.Pod
		if err := json.Unmarshal(a.Create(t, apiservertest.RESTPath(t, "Pod", "ml"), pod), &got); err != nil {
			t.Fatal(err)
		}
		if _, ok := got.Annotations[inject.AnnotationStatus]; ok && len(got.Spec.InitContainers) == 2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pod injected within 30s; the last: %+v", got.Spec)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
