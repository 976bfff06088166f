package xdsclient

import (
	"strings"
	"testing"

	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/xdsserver"
)

// responses returns a DiscoveryResponse per type of rs, at version.
func responses(t *testing.T, rs map[resource.Type][]types.Resource, version string) []*discovery.DiscoveryResponse {
	t.Helper()
	var out []*discovery.DiscoveryResponse
	for _, typ := range []string{typeCluster, typeEndpoint, typeListener, typeRoute} {
		resp := &discovery.DiscoveryResponse{TypeUrl: typ, VersionInfo: version, Nonce: version + "/" + typ}
		for _, r := range rs[typ] {
			a, err := anypb.New(r)
			if err != nil {
				t.Fatal(err)
			}
			resp.Resources = append(resp.Resources, a)
		}
		out = append(out, resp)
	}
	return out
}

// A config that does not pass config.Validate is NACKed, with the reason,
// without calling apply, and the good config stays.
func TestStateInvalidConfigNACKed(t *testing.T) {
	c, err := New(Config{Server: "127.0.0.1:1", NodeID: "n"})
	if err != nil {
		t.Fatal(err)
	}
	var applies int
	s := newState(c, func(*config.Config, Versions) error { applies++; return nil })
	var sent []*discovery.DiscoveryRequest
	s.begin(sotwWire{node: c.node, send: func(r *discovery.DiscoveryRequest) error { sent = append(sent, r); return nil }})

	rs, err := xdsserver.Resources(testConfig(90, 10, 3))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	// The clusters first: the client then asks for their load assignments.
	first := responses(t, rs, "1")
	for _, batch := range [][]*discovery.DiscoveryResponse{first[:1], first[1:]} {
		for _, r := range batch {
			s.receive(r)
		}
		if err := s.sync(); err != nil {
			t.Fatal(err)
		}
	}
	if applies != 1 || !allAt(c.Versions(), "1") {
		t.Fatalf("%d applies, versions %+v; want 1 at version 1", applies, c.Versions())
	}
	for _, r := range sent {
		if r.GetErrorDetail() != nil {
			t.Fatalf("NACK %v", r)
		}
	}

	// Version 2 gives an endpoint 0 slots, which Validate refuses.
	for i, r := range rs[resource.EndpointType] {
		cla := proto.Clone(r.(*endpoint.ClusterLoadAssignment)).(*endpoint.ClusterLoadAssignment)
		if cla.GetClusterName() == "batchmesh|bert|1" {
			md := cla.GetEndpoints()[0].GetLbEndpoints()[0].GetMetadata().GetFilterMetadata()[MetadataKey]
			md.GetFields()["slots"] = structpb.NewNumberValue(0)
		}
		rs[resource.EndpointType][i] = cla
	}
	sent = nil
	for _, r := range responses(t, rs, "2") {
		s.receive(r)
	}
	if err := s.sync(); err != nil {
		t.Fatal(err)
	}
	if applies != 1 {
		t.Fatalf("apply called with the invalid config")
	}
	if len(sent) != 4 {
		t.Fatalf("sent %d requests, want a NACK per type", len(sent))
	}
	for _, r := range sent {
		if r.GetErrorDetail() == nil || r.GetVersionInfo() != "1" || r.GetResponseNonce() != "2/"+r.GetTypeUrl() {
			t.Fatalf("request %v: want a NACK of version 2 keeping 1", r)
		}
		if !strings.Contains(r.GetErrorDetail().GetMessage(), "slots") {
			t.Fatalf("reason %q does not name slots", r.GetErrorDetail().GetMessage())
		}
	}
	v := c.Versions()
	if v.Endpoints.Version != "1" || v.Endpoints.Rejected != "2" {
		t.Fatalf("versions %+v: want endpoints at 1 with 2 rejected", v)
	}
}
