package discovery

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/batchmesh/batchmesh/internal/config"
)

func service(ns, name, model, version string, annotations map[string]string) *corev1.Service {
	labels := map[string]string{LabelModel: model}
	if version != "" {
		labels[LabelVersion] = version
	}
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels, Annotations: annotations}}
}

type cond struct{ ready, serving, terminating *bool }

var (
	yes, no  = ptr(true), ptr(false)
	ready    = cond{ready: yes, serving: yes, terminating: no}
	draining = cond{ready: no, serving: yes, terminating: yes}
	gone     = cond{ready: no, serving: no, terminating: yes}
	starts   = cond{ready: no, serving: no, terminating: no}
	unknown  = cond{} // every condition nil: taken as ready
)

func ptr[T any](v T) *T { return &v }

func endpoint(ip, zone string, c cond) discoveryv1.Endpoint {
	e := discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: c.ready, Serving: c.serving, Terminating: c.terminating}}
	if zone != "" {
		e.Zone = &zone
	}
	return e
}

type port struct {
	name  string
	port  int32
	proto corev1.Protocol
}

func epSlice(ns, name, svc string, typ discoveryv1.AddressType, ports []port, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{LabelServiceName: svc}},
		AddressType: typ,
		Endpoints:   eps,
	}
	for _, p := range ports {
		ep := discoveryv1.EndpointPort{Port: ptr(p.port)}
		if p.name != "" {
			ep.Name = ptr(p.name)
		}
		if p.proto != "" {
			ep.Protocol = ptr(p.proto)
		}
		s.Ports = append(s.Ports, ep)
	}
	return s
}

var http8000 = []port{{name: "http", port: 8000}}

func e(addr, zone string) config.Endpoint {
	return config.Endpoint{Address: addr, Weight: 1, Slots: 1, Zone: zone}
}

func TestBuild(t *testing.T) {
	v4 := discoveryv1.AddressTypeIPv4
	tests := []struct {
		name     string
		services []*corev1.Service
		slices   []*discoveryv1.EndpointSlice
		want     map[string][]config.Version
		skipped  []string // substrings, one per skipped line
	}{{
		name:     "states: ready healthy, serving+terminating draining, others absent; zones kept",
		services: []*corev1.Service{service("ns", "m-v1", "m", "1", nil)},
		slices: []*discoveryv1.EndpointSlice{epSlice("ns", "a", "m-v1", v4, http8000,
			endpoint("10.0.0.1", "za", ready), endpoint("10.0.0.2", "zb", draining), endpoint("10.0.0.3", "", gone),
			endpoint("10.0.0.4", "", starts), endpoint("10.0.0.5", "zc", unknown))},
		want: map[string][]config.Version{"m": {{Version: "1", Weight: 1, Endpoints: []config.Endpoint{
			e("10.0.0.1:8000", "za"), {Address: "10.0.0.2:8000", Weight: 1, Slots: 1, Zone: "zb", Draining: true}, e("10.0.0.5:8000", "zc"),
		}}}},
	}, {
		name:     "an address in two slices counts once, ready wins over draining",
		services: []*corev1.Service{service("ns", "m-v1", "m", "1", nil)},
		slices: []*discoveryv1.EndpointSlice{
			epSlice("ns", "a", "m-v1", v4, http8000, endpoint("10.0.0.1", "za", draining), endpoint("10.0.0.2", "za", ready)),
			epSlice("ns", "b", "m-v1", v4, http8000, endpoint("10.0.0.1", "za", ready), endpoint("10.0.0.2", "za", ready)),
		},
		want: map[string][]config.Version{"m": {{Version: "1", Weight: 1, Endpoints: []config.Endpoint{e("10.0.0.1:8000", "za"), e("10.0.0.2:8000", "za")}}}},
	}, {
		name:     "FQDN slices skipped; IPv6 joined with brackets",
		services: []*corev1.Service{service("ns", "m-v1", "m", "1", nil)},
		slices: []*discoveryv1.EndpointSlice{
			epSlice("ns", "f", "m-v1", discoveryv1.AddressTypeFQDN, http8000, endpoint("runtime.example.com", "", ready)),
			epSlice("ns", "six", "m-v1", discoveryv1.AddressTypeIPv6, http8000, endpoint("2001:db8::1", "", ready)),
		},
		want:    map[string][]config.Version{"m": {{Version: "1", Weight: 1, Endpoints: []config.Endpoint{e("[2001:db8::1]:8000", "")}}}},
		skipped: []string{"endpointslice ns/f of service ns/m-v1: address type FQDN"},
	}, {
		name:     "an address that is not an IP address is left out, and said; ports outside 1-65535 are unusable",
		services: []*corev1.Service{service("ns", "m-v1", "m", "1", nil)},
		slices: []*discoveryv1.EndpointSlice{
			epSlice("ns", "a", "m-v1", v4, http8000, endpoint("10.0.0.1", "", ready), endpoint("10.0.0.x", "", ready)),
			epSlice("ns", "b", "m-v1", v4, []port{{name: "http", port: 0}}, endpoint("10.0.0.2", "", ready)),
		},
		want: map[string][]config.Version{"m": {{Version: "1", Weight: 1, Endpoints: []config.Endpoint{e("10.0.0.1:8000", "")}}}},
		skipped: []string{
			`endpointslice ns/a of service ns/m-v1: endpoints with addresses "10.0.0.x" left out: not IP addresses`,
			`endpointslice ns/b of service ns/m-v1: 0 TCP ports`,
		},
	}, {
		name: "versions, weights and slots from labels and annotations; version defaults to the Service name",
		services: []*corev1.Service{
			service("ns", "m-v1", "m", "1", map[string]string{AnnotationWeight: "90", AnnotationSlots: "2"}),
			service("ns", "m-canary", "m", "", map[string]string{AnnotationWeight: "10"}),
		},
		slices: []*discoveryv1.EndpointSlice{
			epSlice("ns", "a", "m-v1", v4, http8000, endpoint("10.0.0.1", "", ready)),
			epSlice("ns", "b", "m-canary", v4, http8000, endpoint("10.0.0.2", "", ready)),
		},
		want: map[string][]config.Version{"m": {
			{Version: "1", Weight: 90, Endpoints: []config.Endpoint{{Address: "10.0.0.1:8000", Weight: 1, Slots: 2}}},
			{Version: "m-canary", Weight: 10, Endpoints: []config.Endpoint{e("10.0.0.2:8000", "")}},
		}},
	}, {
		name: "port: named after the protocol, else http, else the only TCP one",
		services: []*corev1.Service{
			service("ns", "t", "t", "1", nil), service("ns", "h", "h", "1", nil), service("ns", "o", "o", "1", nil), service("ns", "x", "x", "1", nil),
		},
		slices: []*discoveryv1.EndpointSlice{
			epSlice("ns", "t", "t", v4, []port{{name: "http", port: 1}, {name: "tfserving", port: 2}}, endpoint("10.0.0.1", "", ready)),
			epSlice("ns", "h", "h", v4, []port{{name: "grpc", port: 1}, {name: "http", port: 2}}, endpoint("10.0.0.2", "", ready)),
			epSlice("ns", "o", "o", v4, []port{{name: "metrics", port: 1, proto: corev1.ProtocolUDP}, {name: "api", port: 3}}, endpoint("10.0.0.3", "", ready)),
			epSlice("ns", "x", "x", v4, []port{{name: "a", port: 1}, {name: "b", port: 2}}, endpoint("10.0.0.4", "", ready)),
		},
		want: map[string][]config.Version{
			"t": {{Version: "1", Weight: 1, Endpoints: []config.Endpoint{e("10.0.0.1:2", "")}}},
			"h": {{Version: "1", Weight: 1, Endpoints: []config.Endpoint{e("10.0.0.2:2", "")}}},
			"o": {{Version: "1", Weight: 1, Endpoints: []config.Endpoint{e("10.0.0.3:3", "")}}},
		},
		skipped: []string{`endpointslice ns/x of service ns/x: 2 TCP ports and none named "v2" or "http"`},
	}, {
		name: "bad labels and annotations skip the Service, naming what is wrong",
		services: []*corev1.Service{
			service("ns", "w", "m", "1", map[string]string{AnnotationWeight: "-1"}),
			service("ns", "s", "m", "2", map[string]string{AnnotationSlots: "0"}),
			service("ns", "v", "m", "a|b", nil),
		},
		slices: []*discoveryv1.EndpointSlice{
			epSlice("ns", "w", "w", v4, http8000, endpoint("10.0.0.1", "", ready)),
			epSlice("ns", "s", "s", v4, http8000, endpoint("10.0.0.2", "", ready)),
			epSlice("ns", "v", "v", v4, http8000, endpoint("10.0.0.3", "", ready)),
		},
		want: map[string][]config.Version{},
		skipped: []string{
			`service ns/s: annotation batchmesh.io/slots: "0" is not an integer from 1`,
			`service ns/v: label batchmesh.io/model="m" or batchmesh.io/version="a|b"`,
			`service ns/w: annotation batchmesh.io/weight: "-1" is not an integer from 0`,
		},
	}, {
		name:     "a version with no ready endpoint is left out; slices of other namespaces and Services are not its own",
		services: []*corev1.Service{service("ns", "m-v1", "m", "1", nil), service("ns", "m-v2", "m", "2", nil)},
		slices: []*discoveryv1.EndpointSlice{
			epSlice("ns", "a", "m-v1", v4, http8000, endpoint("10.0.0.1", "", draining)),
			epSlice("other", "b", "m-v2", v4, http8000, endpoint("10.0.0.2", "", ready)),
			epSlice("ns", "c", "m-v2", v4, http8000, endpoint("10.0.0.3", "", ready)),
		},
		want: map[string][]config.Version{"m": {{Version: "2", Weight: 1, Endpoints: []config.Endpoint{e("10.0.0.3:8000", "")}}}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Build(tt.services, tt.slices, Protocols(&config.Config{Models: []config.Model{{Name: "t", Protocol: config.ProtocolTFServing}}}))
			if diff := cmp.Diff(tt.want, got.Models); diff != "" {
				t.Errorf("models (-want +got):\n%s", diff)
			}
			if len(got.Skipped) != len(tt.skipped) {
				t.Fatalf("skipped %q, want %d lines like %q", got.Skipped, len(tt.skipped), tt.skipped)
			}
			for i, want := range tt.skipped {
				if !strings.Contains(got.Skipped[i], want) {
					t.Errorf("skipped[%d] = %q, want it to contain %q", i, got.Skipped[i], want)
				}
			}
		})
	}
}

func TestMerge(t *testing.T) {
	batching := config.Batching{MaxBatchSize: 8, MaxQueueSize: 100, MaxQueueDelay: 0, Timeout: 5}
	file := &config.Config{CacheBytes: 1 << 20, Weights: config.WeightsAdaptive, Models: []config.Model{
		{Name: "settings-only", Protocol: config.ProtocolOpenAI, Batching: batching, Cache: config.DefaultCache()},
		{Name: "static", Protocol: config.ProtocolV2, Batching: batching, Cache: config.DefaultCache(),
			Versions: []config.Version{{Version: "file", Weight: 1, Endpoints: []config.Endpoint{e("10.9.9.9:1", "")}}}},
		{Name: "absent", Protocol: config.ProtocolV2, Batching: batching, Cache: config.DefaultCache()},
	}}
	found := map[string][]config.Version{
		"settings-only": {{Version: "1", Weight: 1, Endpoints: []config.Endpoint{e("10.0.0.1:80", "a")}}},
		"cluster-only":  {{Version: "1", Weight: 1, Endpoints: []config.Endpoint{e("10.0.0.2:80", "")}}},
		"zero":          {{Version: "1", Weight: 0, Endpoints: []config.Endpoint{e("10.0.0.3:80", "")}}},
	}
	got := Merge(file, found)
	want := &config.Config{CacheBytes: 1 << 20, Weights: config.WeightsAdaptive, Models: []config.Model{
		{Name: "settings-only", Protocol: config.ProtocolOpenAI, Batching: batching, Cache: config.DefaultCache(), Versions: found["settings-only"]},
		file.Models[1],
		{Name: "cluster-only", Protocol: config.DefaultProtocol, Batching: config.DefaultBatching(), Cache: config.DefaultCache(), Versions: found["cluster-only"]},
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Merge (-want +got):\n%s", diff)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("merged config: %v", err)
	}
	got.Models[0].Versions[0].Endpoints[0].Zone = "changed"
	if found["settings-only"][0].Endpoints[0].Zone != "a" {
		t.Error("Merge shares endpoints with its argument")
	}

	empty := Merge(nil, nil)
	if len(empty.Models) != 0 || empty.CacheBytes != config.DefaultCacheBytes || empty.Weights != config.DefaultWeights {
		t.Errorf("Merge(nil, nil) = %+v, want defaults and no models", empty)
	}
}
