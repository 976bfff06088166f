package kubernetes_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/inject"
)

// manifests holds the typed objects of the install and example files.
type manifests struct {
	deployments map[string]*appsv1.Deployment // by name
	services    map[string]*corev1.Service
	configMaps  map[string]*corev1.ConfigMap
	roles       []*rbacv1.ClusterRole
	webhook     *admissionregistrationv1.MutatingWebhookConfiguration
	kinds       []string
}

// readManifests decodes every document of the YAML files under dirs
// strictly into its typed object: a misspelt field fails the test.
func readManifests(t *testing.T, dirs ...string) *manifests {
	t.Helper()
	m := &manifests{deployments: map[string]*appsv1.Deployment{}, services: map[string]*corev1.Service{}, configMaps: map[string]*corev1.ConfigMap{}}
	for _, dir := range dirs {
		files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
		if err != nil || len(files) == 0 {
			t.Fatalf("no YAML in %s: %v", dir, err)
		}
		for _, file := range files {
			if filepath.Base(file) == "kustomization.yaml" {
				continue
			}
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
			for {
				doc, err := r.Read()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("%s: %v", file, err)
				}
				m.add(t, file, doc)
			}
		}
	}
	return m
}

func (m *manifests) add(t *testing.T, file string, doc []byte) {
	t.Helper()
	var tm metav1.TypeMeta
	if err := sigsyaml.Unmarshal(doc, &tm); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	var obj any
	switch tm.Kind {
	case "Namespace":
		obj = &corev1.Namespace{}
	case "ServiceAccount":
		obj = &corev1.ServiceAccount{}
	case "ConfigMap":
		cm := &corev1.ConfigMap{}
		obj = cm
		defer func() { m.configMaps[cm.Name] = cm }()
	case "Service":
		svc := &corev1.Service{}
		obj = svc
		defer func() { m.services[svc.Name] = svc }()
	case "Deployment":
		d := &appsv1.Deployment{}
		obj = d
		defer func() { m.deployments[d.Name] = d }()
	case "ClusterRole":
		r := &rbacv1.ClusterRole{}
		obj = r
		defer func() { m.roles = append(m.roles, r) }()
	case "ClusterRoleBinding":
		obj = &rbacv1.ClusterRoleBinding{}
	case "PodDisruptionBudget":
		obj = &policyv1.PodDisruptionBudget{}
	case "MutatingWebhookConfiguration":
		m.webhook = &admissionregistrationv1.MutatingWebhookConfiguration{}
		obj = m.webhook
	default:
		t.Fatalf("%s: kind %q is not checked by this test", file, tm.Kind)
	}
	if err := sigsyaml.UnmarshalStrict(doc, obj); err != nil {
		t.Fatalf("%s: %s: %v", file, tm.Kind, err)
	}
	m.kinds = append(m.kinds, tm.Kind)
}

func controlPlaneArgs(t *testing.T, m *manifests) map[string]string {
	t.Helper()
	d := m.deployments["batchmesh-controlplane"]
	if d == nil {
		t.Fatal("no Deployment batchmesh-controlplane")
	}
	args := map[string]string{}
	for _, a := range d.Spec.Template.Spec.Containers[0].Args {
		k, v, _ := strings.Cut(strings.TrimPrefix(a, "-"), "=")
		args[k] = v
	}
	return args
}

// TestInstallManifests checks that the install files agree with each other
// and with the code: names, ports, paths and the config.
func TestInstallManifests(t *testing.T) {
	m := readManifests(t, "install")
	for _, k := range []string{"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "PodDisruptionBudget", "MutatingWebhookConfiguration", "ConfigMap"} {
		if !slices.Contains(m.kinds, k) {
			t.Errorf("no %s in install/", k)
		}
	}
	args := controlPlaneArgs(t, m)
	cm := m.configMaps["batchmesh-config"]
	if cm == nil {
		t.Fatal("no ConfigMap batchmesh-config")
	}
	if _, err := config.LoadPartial(writeTemp(t, cm.Data["config.yaml"])); err != nil {
		t.Errorf("the control plane's config: %v", err)
	}
	if args["webhook-config"] != m.webhook.Name {
		t.Errorf("-webhook-config %q; the configuration is %q", args["webhook-config"], m.webhook.Name)
	}
	svc := m.services["batchmesh-controlplane"]
	host := svc.Name + "." + svc.Namespace + ".svc"
	if args["webhook-hosts"] != host || !strings.HasPrefix(args["inject-xds"], host+":18000") {
		t.Errorf("-webhook-hosts %q, -inject-xds %q; want the Service %s", args["webhook-hosts"], args["inject-xds"], host)
	}
	// Least privilege: get and patch of the webhook configuration; get,
	// list and watch of Services and EndpointSlices (discovery).
	read := []string{"get", "list", "watch"}
	for _, r := range m.roles {
		for _, rule := range r.Rules {
			switch {
			case slices.Equal(rule.ResourceNames, []string{m.webhook.Name}) && slices.Equal(rule.Verbs, []string{"get", "patch"}):
			case slices.Equal(rule.APIGroups, []string{""}) && slices.Equal(rule.Resources, []string{"services"}) && slices.Equal(rule.Verbs, read):
			case slices.Equal(rule.APIGroups, []string{"discovery.k8s.io"}) && slices.Equal(rule.Resources, []string{"endpointslices"}) && slices.Equal(rule.Verbs, read):
			default:
				t.Errorf("ClusterRole %s grants %v on %v %v beyond the webhook configuration and discovery", r.Name, rule.Verbs, rule.APIGroups, rule.Resources)
			}
		}
	}
	if _, ok := args["kubernetes"]; !ok {
		t.Error("the control plane runs without -kubernetes: it would not discover the runtimes")
	}
	for _, w := range m.webhook.Webhooks {
		s := w.ClientConfig.Service
		if s == nil || s.Name != svc.Name || s.Namespace != svc.Namespace || s.Path == nil ||
			(*s.Path != inject.Path && *s.Path != inject.PathIstio) {
			t.Errorf("webhook %s: client config %+v", w.Name, w.ClientConfig)
			continue
		}
		var target string
		for _, p := range svc.Spec.Ports {
			if s.Port != nil && p.Port == *s.Port {
				target = p.TargetPort.String()
			}
		}
		if !strings.HasSuffix(args["webhook"], ":15017") || target != "https-webhook" {
			t.Errorf("webhook %s: Service port %v goes to %q; -webhook %q", w.Name, s.Port, target, args["webhook"])
		}
	}
}

// TestWebhookSelectors checks that the webhooks' selectors send a pod to
// the webhook exactly when inject.Decide opts it in, on the Istio path
// exactly when its namespace has Istio injection.
func TestWebhookSelectors(t *testing.T) {
	m := readManifests(t, "install")
	namespaces := []map[string]string{
		{}, {inject.LabelInject: "enabled"}, {inject.LabelInject: "disabled"},
		{"istio-injection": "enabled"}, {inject.LabelInject: "enabled", "istio-injection": "enabled"},
		{"kubernetes.io/metadata.name": "kube-system"},
		// Istio by revision: on without istio-injection, off with it set
		// to anything but enabled.
		{"istio.io/rev": "canary"}, {inject.LabelInject: "enabled", "istio.io/rev": "canary"},
		{inject.LabelInject: "enabled", "istio.io/rev": "canary", "istio-injection": "disabled"},
		{inject.LabelInject: "enabled", "istio.io/rev": "canary", "istio-injection": "enabled"},
		{"istio.io/rev": "canary", "istio-injection": "disabled"},
	}
	pods := []map[string]string{{}, {inject.LabelInject: "true"}, {inject.LabelInject: "false"}, {inject.LabelInject: "yes"}}
	for _, ns := range namespaces {
		for _, podLabels := range pods {
			var paths []string
			for _, w := range m.webhook.Webhooks {
				if matches(t, w.NamespaceSelector, ns) && matches(t, w.ObjectSelector, podLabels) {
					paths = append(paths, *w.ClientConfig.Service.Path)
				}
			}
			scope := inject.ScopeOf(ns)
			pod := metav1.ObjectMeta{Labels: podLabels}
			want, _ := inject.Decide(&pod, &corev1.PodSpec{}, scope)
			if ns["kubernetes.io/metadata.name"] == "kube-system" {
				want = false
			}
			switch {
			case !want && len(paths) > 0:
				t.Errorf("namespace %v, pod %v: sent to %v; want no webhook", ns, podLabels, paths)
			case want && len(paths) != 1:
				t.Errorf("namespace %v, pod %v: sent to %v; want exactly one webhook", ns, podLabels, paths)
			case want && (paths[0] == inject.PathIstio) != scope.NamespaceIstio:
				t.Errorf("namespace %v, pod %v: sent to %s; Istio in the namespace: %v", ns, podLabels, paths[0], scope.NamespaceIstio)
			}
		}
	}
}

func matches(t *testing.T, sel *metav1.LabelSelector, set map[string]string) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatal(err)
	}
	return s.Matches(labels.Set(set))
}

// TestExampleInjected injects the example app offline, as `controlplane
// inject` does: the client gets the sidecar, the runtime does not.
func TestExampleInjected(t *testing.T) {
	readManifests(t, "example")
	data, err := os.ReadFile(filepath.Join("example", "app.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s := inject.Settings{Image: "batchmesh:test", XDS: "batchmesh-controlplane.batchmesh-system.svc:18000", Ports: "8000"}
	_, res, err := inject.Documents(data, s, inject.Scope{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, r := range res {
		if r.Kind == "Deployment" {
			got[r.Name] = r.Injected
		}
	}
	if !got["client"] || got["bert-runtime"] || len(got) != 2 {
		t.Fatalf("injected deployments %v; want client only", got)
	}
}

// writeTemp writes data to a file of the test's and returns its path.
func writeTemp(t *testing.T, data string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
