package envoy_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

const (
	bootstrapFile = "envoy-bootstrap.yaml"
	xdsCluster    = "xds_cluster"
	httpOptions   = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
)

// load converts the YAML bootstrap to JSON and unmarshals it, strictly
// (unknown fields are errors), into a Bootstrap that passes ValidateAll.
// The typed_extension_protocol_options Any resolves because httpv3 is
// linked in and so registered.
func load(raw []byte) (*bootstrapv3.Bootstrap, error) {
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("json: %w", err)
	}
	b := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(js, b); err != nil {
		return nil, fmt.Errorf("protojson: %w", err)
	}
	if err := b.ValidateAll(); err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	return b, nil
}

// check returns why b does not reach batchmesh's control plane as README.md
// says: ADS over gRPC (v3) to xds_cluster, LDS and CDS over ADS, xds_cluster
// at 127.0.0.1:18000 speaking HTTP/2, admin on 127.0.0.1:9901.
func check(b *bootstrapv3.Bootstrap) error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if b.GetNode().GetId() == "" || b.GetNode().GetCluster() == "" {
		fail("node id and cluster must be set, got %q and %q", b.GetNode().GetId(), b.GetNode().GetCluster())
	}

	dr := b.GetDynamicResources()
	ads := dr.GetAdsConfig()
	if ads.GetApiType() != corev3.ApiConfigSource_GRPC {
		fail("ads_config.api_type = %v, want GRPC", ads.GetApiType())
	}
	if ads.GetTransportApiVersion() != corev3.ApiVersion_V3 {
		fail("ads_config.transport_api_version = %v, want V3", ads.GetTransportApiVersion())
	}
	if gs := ads.GetGrpcServices(); len(gs) != 1 || gs[0].GetEnvoyGrpc().GetClusterName() != xdsCluster {
		fail("ads_config.grpc_services = %v, want one envoy_grpc to %s", gs, xdsCluster)
	}
	for name, src := range map[string]*corev3.ConfigSource{"lds_config": dr.GetLdsConfig(), "cds_config": dr.GetCdsConfig()} {
		if src.GetAds() == nil {
			fail("%s is not ads: {}", name)
		}
		if src.GetResourceApiVersion() != corev3.ApiVersion_V3 {
			fail("%s.resource_api_version = %v, want V3", name, src.GetResourceApiVersion())
		}
	}

	var xds *clusterv3.Cluster
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() == xdsCluster {
			xds = c
		}
	}
	if xds == nil {
		fail("static_resources has no cluster %s", xdsCluster)
		return errors.Join(errs...)
	}
	if t := xds.GetType(); t != clusterv3.Cluster_STATIC && t != clusterv3.Cluster_STRICT_DNS {
		fail("%s type = %v, want STATIC or STRICT_DNS", xdsCluster, t)
	}
	var addrs []string
	for _, le := range xds.GetLoadAssignment().GetEndpoints() {
		for _, ep := range le.GetLbEndpoints() {
			sa := ep.GetEndpoint().GetAddress().GetSocketAddress()
			addrs = append(addrs, fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue()))
		}
	}
	if len(addrs) != 1 || addrs[0] != "127.0.0.1:18000" {
		fail("%s endpoints = %v, want [127.0.0.1:18000]", xdsCluster, addrs)
	}
	if opt := xds.GetTypedExtensionProtocolOptions()[httpOptions]; opt == nil {
		fail("%s has no typed_extension_protocol_options %s", xdsCluster, httpOptions)
	} else {
		opts := &httpv3.HttpProtocolOptions{}
		if err := opt.UnmarshalTo(opts); err != nil {
			fail("%s protocol options: %v", xdsCluster, err)
		} else if opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
			fail("%s protocol options are not explicit_http_config.http2_protocol_options", xdsCluster)
		}
	}

	sa := b.GetAdmin().GetAddress().GetSocketAddress()
	if sa.GetAddress() != "127.0.0.1" || sa.GetPortValue() != 9901 {
		fail("admin address = %s:%d, want 127.0.0.1:9901", sa.GetAddress(), sa.GetPortValue())
	}
	return errors.Join(errs...)
}

// TestBootstrap checks envoy-bootstrap.yaml structurally: no Envoy binary
// is available here, so this stands in for `envoy --mode validate`.
func TestBootstrap(t *testing.T) {
	raw, err := os.ReadFile(bootstrapFile)
	if err != nil {
		t.Fatal(err)
	}
	b, err := load(raw)
	if err != nil {
		t.Fatalf("%s: %v", bootstrapFile, err)
	}
	if err := check(b); err != nil {
		t.Fatalf("%s:\n%v", bootstrapFile, err)
	}
}

// TestBootstrapBroken shows the checks catch broken edits of the file.
func TestBootstrapBroken(t *testing.T) {
	raw, err := os.ReadFile(bootstrapFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, old, new string }{
		{"bad yaml", "dynamic_resources:", "dynamic_resources: ["},
		{"unknown field", "connect_timeout: 1s", "connect_timeout: 1s\n      no_such_field: 1"},
		{"invalid enum", "api_type: GRPC", "api_type: GRCP"},
		{"rest api type", "api_type: GRPC", "api_type: REST"},
		{"transport auto", "transport_api_version: V3", "transport_api_version: AUTO"},
		{"wrong ads cluster", "cluster_name: xds_cluster\n  lds", "cluster_name: other\n  lds"},
		{"lds not ads", "lds_config:\n    resource_api_version: V3\n    ads: {}", "lds_config:\n    resource_api_version: V3\n    path_config_source: {path: /tmp/lds.yaml}"},
		{"cds missing", "  cds_config:\n    resource_api_version: V3\n    ads: {}\n", ""},
		{"wrong port", "port_value: 18000", "port_value: 18001"},
		{"port out of range", "port_value: 18000", "port_value: 70000"},
		{"http1", "http2_protocol_options: {}", "http_protocol_options: {}"},
		{"unregistered type", "\"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions", "\"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.NoSuchOptions"},
		{"no xds cluster", "- name: xds_cluster", "- name: xds"},
		{"empty node id", "id: envoy-1", "id: \"\""},
		{"admin elsewhere", "port_value: 9901", "port_value: 9902"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(string(raw), tc.old) {
				t.Fatalf("%s no longer contains %q; update this case", bootstrapFile, tc.old)
			}
			broken := strings.Replace(string(raw), tc.old, tc.new, 1)
			b, err := load([]byte(broken))
			if err == nil {
				err = check(b)
			}
			if err == nil {
				t.Fatalf("broken bootstrap (%s) passed", tc.name)
			}
			t.Logf("caught: %v", err)
		})
	}
}
