package inject

import (
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Users and ports of docs/capture.md.
const (
	ProxyUID      = 1337 // the sidecar's user
	IstioProxyUID = 1338 // the sidecar's user beside Istio (Envoy is 1337)
	AdminPort     = 15000
	IstioAdmin    = 15200
)

// Status is the status annotation's value: what was injected.
type Status struct {
	Version        string   `json:"version"`
	Image          string   `json:"image"`
	Ports          string   `json:"ports"`
	BesideIstio    bool     `json:"besideIstio"`
	InitContainers []string `json:"initContainers"`
	Containers     []string `json:"containers,omitempty"` // the sidecar with Settings.LegacySidecar
	Volumes        []string `json:"volumes"`
}

func (s Status) encode() (string, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return "", fmt.Errorf("inject: status: %w", err)
	}
	return string(b), nil
}

// settings are one pod's injection settings: Settings and its annotations.
type settings struct {
	ports       string
	resources   corev1.ResourceRequirements
	besideIstio bool
	zone        string
}

func redirectContainer(s Settings, a settings) corev1.Container {
	args := []string{"redirect", "-ports", a.ports}
	if a.besideIstio {
		args = append(args, "-beside-istio")
	}
	return corev1.Container{
		Name:  RedirectName,
		Image: s.Image,
		Args:  args,
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("10m"),
				corev1.ResourceMemory: resource.MustParse("16Mi"),
			},
			Limits: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("100m"),
				corev1.ResourceMemory: resource.MustParse("64Mi"),
			},
		},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                new(int64(0)),
			RunAsGroup:               new(int64(0)),
			RunAsNonRoot:             new(false),
			AllowPrivilegeEscalation: new(false),
			Privileged:               new(false),
			ReadOnlyRootFilesystem:   new(true),
			Capabilities: &corev1.Capabilities{
				Add:  []corev1.Capability{"NET_ADMIN", "NET_RAW"},
				Drop: []corev1.Capability{"ALL"},
			},
		},
	}
}

func sidecarContainer(s Settings, a settings) corev1.Container {
	uid, admin := int64(ProxyUID), AdminPort
	if a.besideIstio {
		uid, admin = IstioProxyUID, IstioAdmin
	}
	args := []string{
		"-capture",
		// The startup probe comes from the kubelet, on the pod's address.
		"-admin", fmt.Sprintf(":%d", admin),
		"-xds", s.XDS,
		"-node-id", "$(POD_NAME).$(POD_NAMESPACE)",
	}
	if a.zone != "" {
		args = append(args, "-zone", a.zone)
	}
	if a.besideIstio {
		args = append(args, "-beside-istio")
	}
	always := corev1.ContainerRestartPolicyAlways
	return corev1.Container{
		Name:          SidecarName,
		Image:         s.Image,
		Args:          args,
		RestartPolicy: &always,
		Env: []corev1.EnvVar{
			{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
		},
		Ports: []corev1.ContainerPort{{Name: "bm-admin", ContainerPort: int32(admin), Protocol: corev1.ProtocolTCP}},
		StartupProbe: &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: "/readyz", Port: intstr.FromInt32(int32(admin)),
			}},
			PeriodSeconds:    1,
			TimeoutSeconds:   1,
			FailureThreshold: 600,
		},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: "/readyz", Port: intstr.FromInt32(int32(admin)),
			}},
			PeriodSeconds: 5,
		},
		Resources:    a.resources,
		VolumeMounts: []corev1.VolumeMount{{Name: TmpVolume, MountPath: "/tmp"}},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                new(uid),
			RunAsGroup:               new(uid),
			RunAsNonRoot:             new(true),
			AllowPrivilegeEscalation: new(false),
			Privileged:               new(false),
			ReadOnlyRootFilesystem:   new(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
	}
}

// legacy turns the native sidecar c into a regular container whose
// postStart hook waits for its /readyz: the kubelet starts the next
// container only once the hook returns.
func legacy(c corev1.Container, a settings) corev1.Container {
	admin := AdminPort
	if a.besideIstio {
		admin = IstioAdmin
	}
	c.RestartPolicy = nil
	c.Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{
		Command: []string{"/usr/local/bin/sidecar", "wait", "-admin", fmt.Sprintf("127.0.0.1:%d", admin), "-timeout", "2m"},
	}}}
	return c
}
