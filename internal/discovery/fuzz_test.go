package discovery

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// FuzzBuild feeds Build labels, annotations, addresses, zones and port
// names as an API server would store them: it never panics, and what it
// finds, merged with no file, is a config the xDS server accepts (or no
// model at all).
func FuzzBuild(f *testing.F) {
	f.Add("m", "1", "3", "2", "10.0.0.1", "a", "http", int32(8000))
	f.Add("m", "", "x", "", "2001:db8::1", "", "v2", int32(1))
	f.Add("a|b", "..", "-1", "0", "not-an-ip", "zone b", "", int32(0))
	f.Add("m", "1", "4294967296", "99999999999", "10.0.0.1", "", "grpc", int32(-5))
	f.Fuzz(func(t *testing.T, model, version, weight, slots, addr, zone, portName string, portNum int32) {
		ann := map[string]string{AnnotationWeight: weight, AnnotationSlots: slots}
		svc := service("ns", "svc", model, version, ann)
		ready := true
		s := epSlice("ns", "s", "svc", discoveryv1.AddressTypeIPv4, []port{{name: portName, port: portNum}},
			discoveryv1.Endpoint{Addresses: []string{addr}, Zone: &zone, Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
		found := Build([]*corev1.Service{svc}, []*discoveryv1.EndpointSlice{s}, Protocols(nil))
		cfg := Merge(nil, found.Models)
		if len(cfg.Models) == 0 {
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Build found %+v, which merges into an invalid config: %v", found.Models, err)
		}
	})
}
