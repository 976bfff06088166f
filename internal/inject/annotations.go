package inject

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/batchmesh/batchmesh/internal/redirect"
)

// readAnnotations reads a pod's injection annotations over s's defaults.
func readAnnotations(ann map[string]string, s Settings) (settings, error) {
	a := settings{ports: s.Ports}
	if v, ok := ann[AnnotationPorts]; ok {
		p, err := parsePorts(v)
		if err != nil {
			return settings{}, fmt.Errorf("inject: annotation %s: %w", AnnotationPorts, err)
		}
		a.ports = p
	}
	if a.ports == "" {
		return settings{}, fmt.Errorf("inject: no ports to capture: annotate the pod with %s (e.g. \"8000\") or give the control plane a config with model endpoints", AnnotationPorts)
	}
	res, err := ParseResources(ann)
	if err != nil {
		return settings{}, err
	}
	a.resources = res
	return a, nil
}

// parsePorts checks a `sidecar redirect -ports` value and returns it
// normalized (spaces removed).
func parsePorts(v string) (string, error) {
	ranges, all, err := redirect.ParsePorts(v)
	if err != nil {
		return "", err
	}
	if all {
		return "*", nil
	}
	if len(ranges) == 0 {
		return "", fmt.Errorf("%q: want ports like 8000,8080, ranges like 9000-9100, or *", v)
	}
	items := make([]string, len(ranges))
	for i, r := range ranges {
		items[i] = r.String()
	}
	return strings.Join(items, ","), nil
}

// ParseResources returns the sidecar's resource requests and limits: the
// annotations AnnotationCPURequest, AnnotationMemoryRequest,
// AnnotationCPULimit and AnnotationMemoryLimit over the defaults. A request
// above its limit is an error.
func ParseResources(ann map[string]string) (corev1.ResourceRequirements, error) {
	fields := []struct {
		key, def string
		name     corev1.ResourceName
		limit    bool
	}{
		{AnnotationCPURequest, DefaultCPURequest, corev1.ResourceCPU, false},
		{AnnotationMemoryRequest, DefaultMemoryRequest, corev1.ResourceMemory, false},
		{AnnotationCPULimit, DefaultCPULimit, corev1.ResourceCPU, true},
		{AnnotationMemoryLimit, DefaultMemoryLimit, corev1.ResourceMemory, true},
	}
	r := corev1.ResourceRequirements{Requests: corev1.ResourceList{}, Limits: corev1.ResourceList{}}
	for _, f := range fields {
		v, ok := ann[f.key]
		if !ok {
			v = f.def
		}
		q, err := resource.ParseQuantity(strings.TrimSpace(v))
		if err != nil || q.Sign() <= 0 {
			return corev1.ResourceRequirements{}, fmt.Errorf("inject: annotation %s: %q: want a positive quantity like %s", f.key, v, f.def)
		}
		if f.limit {
			r.Limits[f.name] = q
		} else {
			r.Requests[f.name] = q
		}
	}
	for name, req := range r.Requests {
		if limit := r.Limits[name]; req.Cmp(limit) > 0 {
			return corev1.ResourceRequirements{}, fmt.Errorf("inject: the sidecar's %s request %s is above its limit %s (annotations batchmesh.io/proxy-%s and batchmesh.io/proxy-%s-limit)",
				name, req.String(), limit.String(), name, name)
		}
	}
	return r, nil
}
