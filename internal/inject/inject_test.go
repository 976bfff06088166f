package inject

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	jsonpatch5 "github.com/evanphx/json-patch/v5"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var testSettings = Settings{
	Image:   "batchmesh:test",
	Version: "v-test",
	XDS:     "batchmesh-controlplane.batchmesh-system.svc:18000",
	Ports:   "8000,8500",
}

func appPod() *corev1.Pod {
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "ml", Labels: map[string]string{"app": "client"}},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "app", Image: "client:1"}},
		},
	}
}

func TestDecide(t *testing.T) {
	on := Scope{NamespaceEnabled: true}
	tests := []struct {
		name  string
		edit  func(*corev1.Pod)
		scope Scope
		want  bool
	}{
		{"namespace enabled", func(*corev1.Pod) {}, on, true},
		{"namespace not enabled", func(*corev1.Pod) {}, Scope{}, false},
		{"pod opts in", func(p *corev1.Pod) { p.Labels[LabelInject] = "true" }, Scope{}, true},
		{"pod opts out", func(p *corev1.Pod) { p.Labels[LabelInject] = "false" }, on, false},
		{"host network", func(p *corev1.Pod) { p.Spec.HostNetwork = true; p.Labels[LabelInject] = "true" }, on, false},
		{"status annotation", func(p *corev1.Pod) { p.Annotations = map[string]string{AnnotationStatus: "{}"} }, on, false},
		{"sidecar present", func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: SidecarName}}
		}, on, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := appPod()
			tt.edit(p)
			got, why := Decide(&p.ObjectMeta, &p.Spec, tt.scope)
			if got != tt.want || why == "" {
				t.Fatalf("Decide = %v, %q; want %v and a reason", got, why, tt.want)
			}
		})
	}
}

func TestScopeOf(t *testing.T) {
	if s := ScopeOf(map[string]string{LabelInject: "enabled", "istio-injection": "enabled"}); !s.NamespaceEnabled || !s.NamespaceIstio {
		t.Fatalf("ScopeOf = %+v; want both", s)
	}
	if s := ScopeOf(map[string]string{LabelInject: "true"}); s.NamespaceEnabled || s.NamespaceIstio {
		t.Fatalf("ScopeOf(inject=true) = %+v; want neither (namespaces say enabled)", s)
	}
	// Istio by revision, as Istio decides: istio.io/rev turns injection on
	// unless istio-injection is set, which wins either way.
	for _, tt := range []struct {
		labels map[string]string
		istio  bool
	}{
		{map[string]string{"istio.io/rev": "canary"}, true},
		{map[string]string{"istio.io/rev": "canary", "istio-injection": "enabled"}, true},
		{map[string]string{"istio.io/rev": "canary", "istio-injection": "disabled"}, false},
		{map[string]string{"istio-injection": "disabled"}, false},
		{map[string]string{}, false},
	} {
		if s := ScopeOf(tt.labels); s.NamespaceIstio != tt.istio {
			t.Errorf("ScopeOf(%v).NamespaceIstio = %v, want %v", tt.labels, s.NamespaceIstio, tt.istio)
		}
	}
}

func TestPodInjects(t *testing.T) {
	in := appPod()
	in.Annotations = map[string]string{AnnotationPorts: "9000, 9100-9110"}
	out, ok, _, err := Pod(in, testSettings, Scope{NamespaceEnabled: true})
	if err != nil || !ok {
		t.Fatalf("Pod: %v, injected %v", err, ok)
	}
	if in.Spec.InitContainers != nil || len(in.Annotations) != 1 {
		t.Fatalf("Pod changed its argument: %+v", in)
	}
	names := containerNames(out.Spec.InitContainers)
	if !slices.Equal(names, []string{RedirectName, SidecarName}) {
		t.Fatalf("init containers %v", names)
	}
	r, s := out.Spec.InitContainers[0], out.Spec.InitContainers[1]
	if want := []string{"redirect", "-ports", "9000,9100-9110"}; !slices.Equal(r.Args, want) {
		t.Errorf("redirect args %q; want %q", r.Args, want)
	}
	caps := r.SecurityContext.Capabilities
	if !slices.Equal(caps.Add, []corev1.Capability{"NET_ADMIN", "NET_RAW"}) || !slices.Equal(caps.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("redirect capabilities %+v", caps)
	}
	if r.RestartPolicy != nil {
		t.Errorf("redirect has a restart policy: it must be a plain init container")
	}
	if s.RestartPolicy == nil || *s.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("sidecar restart policy %v; want Always (native sidecar)", s.RestartPolicy)
	}
	sc := s.SecurityContext
	if *sc.RunAsUser != ProxyUID || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation || !*sc.RunAsNonRoot {
		t.Errorf("sidecar security context %+v", sc)
	}
	if p := s.StartupProbe; p == nil || p.HTTPGet.Path != "/readyz" || p.HTTPGet.Port.IntValue() != AdminPort {
		t.Errorf("startup probe %+v", p)
	}
	args := strings.Join(s.Args, " ")
	for _, want := range []string{"-capture", "-xds " + testSettings.XDS, "-node-id $(POD_NAME).$(POD_NAMESPACE)", "-admin :15000"} {
		if !strings.Contains(args, want) {
			t.Errorf("sidecar args %q lack %q", args, want)
		}
	}
	if strings.Contains(args, "-beside-istio") || strings.Contains(args, "-zone") {
		t.Errorf("sidecar args %q: no Istio, no zone expected", args)
	}
	if got := s.Resources.Requests.Cpu().String(); got != DefaultCPURequest {
		t.Errorf("cpu request %s; want the default %s", got, DefaultCPURequest)
	}
	var st Status
	if err := json.Unmarshal([]byte(out.Annotations[AnnotationStatus]), &st); err != nil {
		t.Fatalf("status annotation: %v", err)
	}
	if st.Image != testSettings.Image || st.Version != testSettings.Version || st.Ports != "9000,9100-9110" || st.BesideIstio {
		t.Errorf("status %+v", st)
	}
	if got := containerNames(out.Spec.Containers); !slices.Equal(got, []string{"app"}) {
		t.Errorf("containers %v; the app's are unchanged", got)
	}
}

func TestPodDefaultPortsZoneResources(t *testing.T) {
	in := appPod()
	in.Labels[LabelZone] = "eu-1a"
	in.Annotations = map[string]string{AnnotationCPURequest: "250m", AnnotationMemoryLimit: "2Gi"}
	out, ok, _, err := Pod(in, testSettings, Scope{NamespaceEnabled: true})
	if err != nil || !ok {
		t.Fatalf("Pod: %v, injected %v", err, ok)
	}
	r, s := out.Spec.InitContainers[0], out.Spec.InitContainers[1]
	if r.Args[2] != testSettings.Ports {
		t.Errorf("redirect ports %q; want the default %q", r.Args[2], testSettings.Ports)
	}
	if !strings.Contains(strings.Join(s.Args, " "), "-zone eu-1a") {
		t.Errorf("sidecar args %q lack -zone eu-1a", s.Args)
	}
	if got := s.Resources.Requests.Cpu().String(); got != "250m" {
		t.Errorf("cpu request %s; want 250m", got)
	}
	if got := s.Resources.Limits.Memory().String(); got != "2Gi" {
		t.Errorf("memory limit %s; want 2Gi", got)
	}
}

func TestPodLegacySidecar(t *testing.T) {
	s := testSettings
	s.LegacySidecar = true
	out, ok, _, err := Pod(appPod(), s, Scope{NamespaceEnabled: true})
	if err != nil || !ok {
		t.Fatalf("Pod: %v, injected %v", err, ok)
	}
	if got := containerNames(out.Spec.InitContainers); !slices.Equal(got, []string{RedirectName}) {
		t.Fatalf("init containers %v; want the redirect only", got)
	}
	if got := containerNames(out.Spec.Containers); !slices.Equal(got, []string{SidecarName, "app"}) {
		t.Fatalf("containers %v; want the sidecar first", got)
	}
	sc := out.Spec.Containers[0]
	if sc.RestartPolicy != nil || sc.Lifecycle == nil || sc.Lifecycle.PostStart == nil ||
		!slices.Equal(sc.Lifecycle.PostStart.Exec.Command, []string{"/usr/local/bin/sidecar", "wait", "-admin", "127.0.0.1:15000", "-timeout", "2m"}) {
		t.Fatalf("legacy sidecar %+v", sc)
	}
	if !strings.Contains(out.Annotations[AnnotationStatus], `"containers":["batchmesh-sidecar"]`) {
		t.Errorf("status %s", out.Annotations[AnnotationStatus])
	}
	if ok, why := Decide(&out.ObjectMeta, &out.Spec, Scope{NamespaceEnabled: true}); ok {
		t.Errorf("a legacy-injected pod is injected again (%s)", why)
	}
}

func TestPodBesideIstio(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*corev1.Pod)
		scope Scope
	}{
		{"istio-proxy container", func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "istio-init"}, {Name: "istio-proxy"}}
		}, Scope{}},
		{"pod label", func(p *corev1.Pod) { p.Labels["sidecar.istio.io/inject"] = "true" }, Scope{}},
		{"namespace", func(*corev1.Pod) {}, Scope{NamespaceIstio: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := appPod()
			tt.edit(p)
			tt.scope.NamespaceEnabled = true
			out, ok, _, err := Pod(p, testSettings, tt.scope)
			if err != nil || !ok {
				t.Fatalf("Pod: %v, injected %v", err, ok)
			}
			at := slices.Index(containerNames(out.Spec.InitContainers), RedirectName)
			if len(p.Spec.InitContainers) > 0 && at != 1 {
				t.Errorf("init containers %v: redirect must follow istio-init", containerNames(out.Spec.InitContainers))
			}
			r, s := out.Spec.InitContainers[at], out.Spec.InitContainers[at+1]
			if !slices.Contains(r.Args, "-beside-istio") || !slices.Contains(s.Args, "-beside-istio") {
				t.Errorf("args %q, %q lack -beside-istio", r.Args, s.Args)
			}
			if *s.SecurityContext.RunAsUser != IstioProxyUID || s.StartupProbe.HTTPGet.Port.IntValue() != IstioAdmin {
				t.Errorf("beside Istio the sidecar runs as %d with its probe on %d", IstioProxyUID, IstioAdmin)
			}
		})
	}
	p := appPod()
	p.Labels["sidecar.istio.io/inject"] = "false"
	if BesideIstio(&p.ObjectMeta, &p.Spec, Scope{NamespaceIstio: true}) {
		t.Error("a pod opting out of Istio is not beside Istio")
	}
}

func TestPodIdempotentAndPatch(t *testing.T) {
	in := appPod()
	once, ok, _, err := Pod(in, testSettings, Scope{NamespaceEnabled: true})
	if err != nil || !ok {
		t.Fatalf("Pod: %v, injected %v", err, ok)
	}
	twice, ok, why, err := Pod(once, testSettings, Scope{NamespaceEnabled: true})
	if err != nil || ok || why != "already injected" {
		t.Fatalf("second Pod: %v, injected %v (%s)", err, ok, why)
	}
	p, err := Patch(once, twice)
	if err != nil || string(p) != "[]" {
		t.Fatalf("patch of an injected pod = %s, %v; want []", p, err)
	}

	p, err = Patch(in, once)
	if err != nil {
		t.Fatal(err)
	}
	patch, err := jsonpatch5.DecodePatch(p)
	if err != nil {
		t.Fatalf("decode %s: %v", p, err)
	}
	before, _ := json.Marshal(in)
	applied, err := patch.Apply(before)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	var got corev1.Pod
	if err := json.Unmarshal(applied, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(roundTrip(t, once), roundTrip(t, &got)) {
		t.Fatalf("the patch applied to the pod is not the injected pod:\n%s", applied)
	}
}

func TestPodErrors(t *testing.T) {
	tests := []struct {
		ann  map[string]string
		s    Settings
		want string
	}{
		{map[string]string{AnnotationPorts: "http"}, testSettings, AnnotationPorts},
		{map[string]string{AnnotationPorts: ""}, testSettings, AnnotationPorts},
		{map[string]string{AnnotationCPURequest: "lots"}, testSettings, AnnotationCPURequest},
		{map[string]string{AnnotationMemoryRequest: "4Gi"}, testSettings, "above its limit"},
		{nil, Settings{Image: "i", XDS: "x:1"}, "no ports to capture"},
		{nil, Settings{XDS: "x:1", Ports: "1"}, "image is required"},
	}
	for _, tt := range tests {
		p := appPod()
		p.Annotations = tt.ann
		out, ok, _, err := Pod(p, tt.s, Scope{NamespaceEnabled: true})
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "inject: ") {
			t.Errorf("annotations %v: error %v; want one naming %q", tt.ann, err, tt.want)
			continue
		}
		if ok || out.Spec.InitContainers != nil {
			t.Errorf("annotations %v: a pod that failed is returned unchanged", tt.ann)
		}
	}
}

func containerNames(cs []corev1.Container) []string {
	var names []string
	for _, c := range cs {
		names = append(names, c.Name)
	}
	return names
}

func roundTrip(t *testing.T, p *corev1.Pod) map[string]any {
	t.Helper()
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func FuzzAnnotations(f *testing.F) {
	f.Add("8000,8080", "100m", "2Gi")
	f.Add("*", "1", "1Mi")
	f.Add("9000-9100, 5", "0", "x")
	f.Add("", "-1", "1e3")
	f.Fuzz(func(t *testing.T, ports, cpu, memLimit string) {
		ann := map[string]string{AnnotationPorts: ports, AnnotationCPURequest: cpu, AnnotationMemoryLimit: memLimit}
		a, err := readAnnotations(ann, testSettings)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "inject: ") {
				t.Fatalf("error %q lacks the prefix", err)
			}
			return
		}
		// A value accepted once is accepted again, normalized alike.
		again, err := parsePorts(a.ports)
		if err != nil || again != a.ports {
			t.Fatalf("ports %q normalized to %q, which reads back as %q, %v", ports, a.ports, again, err)
		}
		for name, req := range a.resources.Requests {
			limit := a.resources.Limits[name]
			if req.Sign() <= 0 || req.Cmp(limit) > 0 {
				t.Fatalf("%s request %s with limit %s accepted", name, req.String(), limit.String())
			}
		}
	})
}
