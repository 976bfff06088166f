package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// serviceAccountDir is where Kubernetes mounts a pod's API credentials.
const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// kubeAPI is the little of the Kubernetes API the control plane calls
// without client-go: get and patch a MutatingWebhookConfiguration.
type kubeAPI struct {
	base   string // https://host:port
	token  string
	client *http.Client
}

// inClusterAPI reads the pod's service account credentials (dir) and the
// KUBERNETES_SERVICE_HOST and _PORT variables, as client-go's in-cluster
// config does.
func inClusterAPI(dir string, getenv func(string) string) (*kubeAPI, error) {
	host, port := getenv("KUBERNETES_SERVICE_HOST"), getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, errors.New("not in a cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are unset")
	}
	token, err := os.ReadFile(filepath.Join(dir, "token"))
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s: no certificate", filepath.Join(dir, "ca.crt"))
	}
	return &kubeAPI{
		base:  "https://" + net.JoinHostPort(host, port),
		token: strings.TrimSpace(string(token)),
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		}},
	}, nil
}

func (k *kubeAPI) do(ctx context.Context, method, path, contentType string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, k.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+k.token)
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		var st struct{ Message string }
		_ = json.Unmarshal(b, &st) // a Status, or not: the HTTP status says enough
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, st.Message)
	}
	return b, nil
}

// fillCABundle sets the caBundle of every webhook of the
// MutatingWebhookConfiguration name to caPEM, with one JSON patch.
func (k *kubeAPI) fillCABundle(ctx context.Context, name string, caPEM []byte) (int, error) {
	path := "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/" + name
	b, err := k.do(ctx, http.MethodGet, path, "", nil)
	if err != nil {
		return 0, err
	}
	var cfg struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
		Webhooks []json.RawMessage `json:"webhooks"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return 0, fmt.Errorf("GET %s: %w", path, err)
	}
	if len(cfg.Webhooks) == 0 {
		return 0, fmt.Errorf("mutatingwebhookconfiguration %s has no webhooks", name)
	}
	type op struct {
		Op    string `json:"op"`
		Path  string `json:"path"`
		Value any    `json:"value"`
	}
	// The test fails the patch if the configuration changed since the GET.
	ops := []op{{Op: "test", Path: "/metadata/resourceVersion", Value: cfg.Metadata.ResourceVersion}}
	for i := range cfg.Webhooks {
		// A []byte encodes as base64, as caBundle is.
		ops = append(ops, op{Op: "add", Path: fmt.Sprintf("/webhooks/%d/clientConfig/caBundle", i), Value: caPEM})
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		return 0, err
	}
	if _, err := k.do(ctx, http.MethodPatch, path, "application/json-patch+json", patch); err != nil {
		return 0, err
	}
	return len(cfg.Webhooks), nil
}
