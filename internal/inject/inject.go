// Package inject is batchmesh's injection template: given a pod (or a
// workload's pod template) and Settings, it returns the pod with the
// `sidecar redirect` init container, the sidecar as a native sidecar and the
// status annotation added, and the JSON patch from one to the other.
//
// The admission webhook (Webhook) and `controlplane inject` share it, so a
// pod injected offline is the pod the webhook would have stored.
//
// Whether a pod is injected (Decide): a pod labelled batchmesh.io/inject:
// "false" never is, nor a host-network pod (redirect would rewrite the
// node's rules), nor a pod already injected (the status annotation or the
// sidecar container is present), which makes injection idempotent. A pod
// labelled "true" is; any other pod is when its namespace is labelled
// batchmesh.io/inject=enabled.
//
// The beside-Istio mode of docs/capture.md (`-beside-istio` on both
// containers, user 1338, admin port 15200) is chosen when the pod has an
// istio-proxy container, is labelled or annotated sidecar.istio.io/inject:
// "true" or istio.io/rev, or its namespace has Istio injection on
// (Scope.NamespaceIstio), unless the pod opts out of Istio with
// sidecar.istio.io/inject: "false".
//
// The package starts no goroutines and holds no state.
package inject

import (
	"errors"
	"fmt"
	"maps"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Labels and annotations read or written on pods and namespaces.
const (
	// LabelInject opts a namespace in ("enabled") or a pod in ("true") or
	// out ("false").
	LabelInject = "batchmesh.io/inject"
	// NamespaceEnabled is LabelInject's value on an opted-in namespace.
	NamespaceEnabled = "enabled"
	// AnnotationPorts lists the ports `sidecar redirect` captures, in its
	// -ports syntax (8000,8080, 9000-9100 or *); default Settings.Ports.
	AnnotationPorts = "batchmesh.io/ports"
	// AnnotationStatus records what was injected (Status, as JSON).
	AnnotationStatus = "batchmesh.io/status"
	// AnnotationCPURequest and the three below set the sidecar's resources
	// (Kubernetes quantities); defaults DefaultCPURequest and so on.
	AnnotationCPURequest    = "batchmesh.io/proxy-cpu"
	AnnotationMemoryRequest = "batchmesh.io/proxy-memory"
	AnnotationCPULimit      = "batchmesh.io/proxy-cpu-limit"
	AnnotationMemoryLimit   = "batchmesh.io/proxy-memory-limit"

	// LabelZone is the well-known zone label; a pod carrying it (as
	// Kubernetes ≥ 1.33 can copy it from the node) gives the sidecar -zone.
	LabelZone = "topology.kubernetes.io/zone"

	labelIstioInject = "sidecar.istio.io/inject"
	labelIstioRev    = "istio.io/rev"
	// labelIstioInjection on a namespace turns Istio's injection on
	// ("enabled") or off (any other value), whatever istio.io/rev says.
	labelIstioInjection = "istio-injection"
	istioProxyName      = "istio-proxy"
	istioInitName       = "istio-init"
)

// Names of the injected containers and volume.
const (
	RedirectName = "batchmesh-redirect"
	SidecarName  = "batchmesh-sidecar"
	TmpVolume    = "batchmesh-tmp"
)

// Defaults of the sidecar's resources.
const (
	DefaultCPURequest    = "100m"
	DefaultMemoryRequest = "128Mi"
	DefaultCPULimit      = "2"
	DefaultMemoryLimit   = "1Gi"
)

// Settings are what the template needs beyond the pod.
type Settings struct {
	// Image is the batchmesh image (sidecar and redirect). Required.
	Image string
	// Version is recorded in the status annotation.
	Version string
	// XDS is the control plane's ADS address host:port, normally its
	// Service's DNS name. Required.
	XDS string
	// Ports are the captured ports when the pod has no AnnotationPorts:
	// the model ports of the control plane's config, in -ports syntax.
	Ports string
	// LegacySidecar, for clusters without native sidecars (Kubernetes
	// before 1.29), makes the sidecar a regular container, first in the
	// list, whose postStart hook (`sidecar wait`) holds the application
	// containers back until it is ready.
	LegacySidecar bool
}

// Validate reports the first setting that cannot make a pod.
func (s Settings) Validate() error {
	if s.Image == "" {
		return errors.New("inject: image is required")
	}
	if s.XDS == "" {
		return errors.New("inject: the control plane's xds address is required")
	}
	if s.Ports != "" {
		if _, err := parsePorts(s.Ports); err != nil {
			return fmt.Errorf("inject: default ports: %w", err)
		}
	}
	return nil
}

// Scope is what a pod's namespace says, as far as the caller knows it.
type Scope struct {
	// NamespaceEnabled: the namespace is labelled batchmesh.io/inject=enabled
	// (or the caller, like `controlplane inject`, injects regardless).
	NamespaceEnabled bool
	// NamespaceIstio: the namespace has Istio injection on
	// (istio-injection=enabled, or istio.io/rev without istio-injection).
	NamespaceIstio bool
}

// ScopeOf returns the Scope of a namespace with the given labels: Istio
// injection is on with istio-injection=enabled, or, without an
// istio-injection label, with istio.io/rev (a revision's injector, as
// Istio decides; what the install's webhook selectors test).
func ScopeOf(nsLabels map[string]string) Scope {
	injection, set := nsLabels[labelIstioInjection]
	_, rev := nsLabels[labelIstioRev]
	return Scope{
		NamespaceEnabled: nsLabels[LabelInject] == NamespaceEnabled,
		NamespaceIstio:   injection == "enabled" || (!set && rev),
	}
}

// Decide reports whether the pod described by meta and spec is to be
// injected, and why (or why not) in a few words.
func Decide(meta *metav1.ObjectMeta, spec *corev1.PodSpec, scope Scope) (bool, string) {
	switch {
	case spec.HostNetwork:
		return false, "host network"
	case Injected(meta, spec):
		return false, "already injected"
	case meta.Labels[LabelInject] == "false":
		return false, "pod label " + LabelInject + "=false"
	case meta.Labels[LabelInject] == "true":
		return true, "pod label " + LabelInject + "=true"
	case scope.NamespaceEnabled:
		return true, "namespace label " + LabelInject + "=" + NamespaceEnabled
	}
	return false, "not opted in"
}

// Injected reports whether the pod already has batchmesh's sidecar or status
// annotation.
func Injected(meta *metav1.ObjectMeta, spec *corev1.PodSpec) bool {
	if _, ok := meta.Annotations[AnnotationStatus]; ok {
		return true
	}
	return hasContainer(spec.InitContainers, SidecarName) || hasContainer(spec.Containers, SidecarName) ||
		hasContainer(spec.InitContainers, RedirectName)
}

// BesideIstio reports whether the pod has, or will get, Istio's proxy.
func BesideIstio(meta *metav1.ObjectMeta, spec *corev1.PodSpec, scope Scope) bool {
	if hasContainer(spec.Containers, istioProxyName) || hasContainer(spec.InitContainers, istioProxyName) {
		return true
	}
	label, ok := meta.Labels[labelIstioInject]
	if !ok {
		label, ok = meta.Annotations[labelIstioInject]
	}
	if ok {
		return strings.EqualFold(label, "true")
	}
	if _, ok := meta.Labels[labelIstioRev]; ok {
		return true
	}
	return scope.NamespaceIstio
}

func hasContainer(cs []corev1.Container, name string) bool {
	for i := range cs {
		if cs[i].Name == name {
			return true
		}
	}
	return false
}

// Template injects a pod template in place (meta and spec), whatever Decide
// says; callers ask Decide first. It fails, changing nothing, when an
// annotation cannot be read or s is invalid.
func Template(meta *metav1.ObjectMeta, spec *corev1.PodSpec, s Settings, scope Scope) error {
	if err := s.Validate(); err != nil {
		return err
	}
	a, err := readAnnotations(meta.Annotations, s)
	if err != nil {
		return err
	}
	a.besideIstio = BesideIstio(meta, spec, scope)
	a.zone = meta.Labels[LabelZone]

	st := Status{Version: s.Version, Image: s.Image, Ports: a.ports, BesideIstio: a.besideIstio,
		InitContainers: []string{RedirectName, SidecarName}, Volumes: []string{TmpVolume}}
	inits := []corev1.Container{redirectContainer(s, a), sidecarContainer(s, a)}
	if s.LegacySidecar {
		st.InitContainers, st.Containers = st.InitContainers[:1], []string{SidecarName}
		spec.Containers = append([]corev1.Container{legacy(inits[1], a)}, spec.Containers...)
		inits = inits[:1]
	}
	status, err := st.encode()
	if err != nil {
		return err
	}

	at := 0
	for i := range spec.InitContainers {
		if spec.InitContainers[i].Name == istioInitName {
			at = i + 1
		}
	}
	spec.InitContainers = append(spec.InitContainers[:at:at], append(inits, spec.InitContainers[at:]...)...)
	spec.Volumes = append(spec.Volumes, corev1.Volume{
		Name:         TmpVolume,
		VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}},
	})
	ann := maps.Clone(meta.Annotations)
	if ann == nil {
		ann = map[string]string{}
	}
	ann[AnnotationStatus] = status
	meta.Annotations = ann
	return nil
}

// Pod returns a copy of pod, injected when Decide says so; injected reports
// whether it was, and reason says why (or why not).
func Pod(pod *corev1.Pod, s Settings, scope Scope) (out *corev1.Pod, injected bool, reason string, err error) {
	out = pod.DeepCopy()
	ok, reason := Decide(&out.ObjectMeta, &out.Spec, scope)
	if !ok {
		return out, false, reason, nil
	}
	if err := Template(&out.ObjectMeta, &out.Spec, s, scope); err != nil {
		return pod.DeepCopy(), false, reason, err
	}
	return out, true, reason, nil
}
