package discovery

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/batchmesh/batchmesh/internal/config"
)

// withClusterIPs gives svc cluster IPs and ports.
func withClusterIPs(svc *corev1.Service, ips []string, ports ...corev1.ServicePort) *corev1.Service {
	svc.Spec.ClusterIPs = ips
	if len(ips) > 0 {
		svc.Spec.ClusterIP = ips[0]
	}
	svc.Spec.Ports = ports
	return svc
}

// TestBuildServiceAddresses checks that a version records its Services'
// cluster IPs at the runtime's Service port, and none for a headless one.
func TestBuildServiceAddresses(t *testing.T) {
	v4 := discoveryv1.AddressTypeIPv4
	httpPort := corev1.ServicePort{Name: "http", Port: 8000, Protocol: corev1.ProtocolTCP}
	tests := []struct {
		name     string
		services []*corev1.Service
		slices   []*discoveryv1.EndpointSlice
		want     map[string][]string // model/version → its service addresses
		skipped  []string
	}{{
		name:     "cluster IP recorded at the service port",
		services: []*corev1.Service{withClusterIPs(service("ns", "m-v1", "m", "1", nil), []string{"10.96.0.10"}, httpPort)},
		slices:   []*discoveryv1.EndpointSlice{epSlice("ns", "a", "m-v1", v4, http8000, endpoint("10.0.0.1", "", ready))},
		want:     map[string][]string{"m/1": {"10.96.0.10:8000"}},
	}, {
		name:     "headless Service: none",
		services: []*corev1.Service{withClusterIPs(service("ns", "m-v1", "m", "1", nil), []string{corev1.ClusterIPNone}, httpPort)},
		slices:   []*discoveryv1.EndpointSlice{epSlice("ns", "a", "m-v1", v4, http8000, endpoint("10.0.0.1", "", ready))},
		want:     map[string][]string{"m/1": nil},
	}, {
		name: "dual stack, two Services of one version, the port named after the protocol; the Service port, not the target port",
		services: []*corev1.Service{
			withClusterIPs(service("ns", "t-a", "t", "1", nil), []string{"10.96.0.20", "fd00::20"},
				corev1.ServicePort{Name: "http", Port: 80}, corev1.ServicePort{Name: "tfserving", Port: 8501}),
			withClusterIPs(service("ns", "t-b", "t", "1", nil), []string{"10.96.0.21"}, corev1.ServicePort{Name: "api", Port: 9000}),
		},
		slices: []*discoveryv1.EndpointSlice{
			epSlice("ns", "a", "t-a", v4, []port{{name: "tfserving", port: 18501}}, endpoint("10.0.0.1", "", ready)),
			epSlice("ns", "b", "t-b", v4, []port{{name: "api", port: 19000}}, endpoint("10.0.0.2", "", ready)),
		},
		want: map[string][]string{"t/1": {"10.96.0.20:8501", "10.96.0.21:9000", "[fd00::20]:8501"}},
	}, {
		name: "no usable Service port: the endpoints still count, the cluster IP does not, and it is said",
		services: []*corev1.Service{withClusterIPs(service("ns", "m-v1", "m", "1", nil), []string{"10.96.0.10"},
			corev1.ServicePort{Name: "a", Port: 1}, corev1.ServicePort{Name: "b", Port: 2})},
		slices:  []*discoveryv1.EndpointSlice{epSlice("ns", "a", "m-v1", v4, http8000, endpoint("10.0.0.1", "", ready))},
		want:    map[string][]string{"m/1": nil},
		skipped: []string{`service ns/m-v1: its cluster IP is not used: service ports: 2 TCP ports and none named "v2" or "http"`},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Build(tt.services, tt.slices, Protocols(&config.Config{Models: []config.Model{{Name: "t", Protocol: config.ProtocolTFServing}}}))
			addrs := map[string][]string{}
			for model, vs := range got.Models {
				for _, v := range vs {
					if len(v.Endpoints) == 0 {
						t.Errorf("%s/%s has no endpoints", model, v.Version)
					}
					addrs[model+"/"+v.Version] = v.ServiceAddresses
				}
			}
			if diff := cmp.Diff(tt.want, addrs); diff != "" {
				t.Errorf("service addresses (-want +got):\n%s", diff)
			}
			if len(got.Skipped) != len(tt.skipped) {
				t.Fatalf("skipped %q, want %d lines like %q", got.Skipped, len(tt.skipped), tt.skipped)
			}
			for i, want := range tt.skipped {
				if !strings.Contains(got.Skipped[i], want) {
					t.Errorf("skipped[%d] = %q, want it to contain %q", i, got.Skipped[i], want)
				}
			}
			cfg := Merge(nil, got.Models)
			if err := cfg.Validate(); err != nil {
				t.Errorf("the config found: %v", err)
			}
		})
	}
}

// TestMergeServiceAddresses checks that Merge copies the service
// addresses.
func TestMergeServiceAddresses(t *testing.T) {
	found := map[string][]config.Version{"m": {{Version: "1", Weight: 1, Endpoints: []config.Endpoint{e("10.0.0.1:80", "")},
		ServiceAddresses: []string{"10.96.0.1:80"}}}}
	got := Merge(nil, found)
	if diff := cmp.Diff(found["m"], got.Models[0].Versions); diff != "" {
		t.Fatalf("merged versions (-want +got):\n%s", diff)
	}
	got.Models[0].Versions[0].ServiceAddresses[0] = "changed"
	if found["m"][0].ServiceAddresses[0] != "10.96.0.1:80" {
		t.Error("Merge shares service addresses with its argument")
	}
}
