package xdsserver

import (
	"fmt"
	"net"
	"strconv"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	router "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/batchmesh/batchmesh/internal/config"
)

// Names of the resources that do not depend on a model.
const (
	// OutboundListener is the address-bound Listener the sidecar (or Envoy)
	// serves applications on.
	OutboundListener = "batchmesh-outbound"
	// OutboundPort is OutboundListener's port.
	OutboundPort = 15001
	// RouteName is the RouteConfiguration OutboundListener uses over RDS.
	RouteName = "batchmesh"
	// MetadataKey is the filter_metadata key under which clusters carry
	// their batching and cache settings, and endpoints their slots.
	MetadataKey = "batchmesh"
	// ModelHeader routes the body-routed protocols (OpenAI embeddings): the
	// sidecar sets it from the body's "model" before routing. It is a
	// proposal of this package, not yet in docs/http.md.
	ModelHeader = "x-batchmesh-model"
)

// ClusterName returns the name of the Cluster (and of its
// ClusterLoadAssignment) of one version of a model: config.ClusterName.
func ClusterName(model, version string) string { return config.ClusterName(model, version) }

// Resources translates a validated config into xDS resources, keyed by type
// URL:
//
//   - per model version, an EDS Cluster ClusterName(model, version) with
//     LEAST_REQUEST and the batching and cache settings in
//     metadata.filter_metadata["batchmesh"], the file's outlier_detection
//     in outlier_detection (outlier.go), and its ClusterLoadAssignment
//     with one locality per zone;
//   - the RouteConfiguration RouteName with one virtual host and, per model,
//     routes to weighted_clusters over its versions;
//   - the Listener OutboundListener (0.0.0.0:15001) using RouteName over
//     RDS on ADS;
//   - per model, for gRPC clients that dial xds:///{model}, an
//     api_listener named after the model that uses the RouteConfiguration
//     ProxylessRouteName(model) over RDS on ADS: any domain, prefix "/",
//     weighted_clusters over the model's versions.
//
// Versions of weight 0 are left out of weighted_clusters (their clusters
// stay), and endpoints of weight 0 out of lb_endpoints: Envoy's validation
// and gRPC both reject explicit zero weights.
//
// Every resource has passed its Validate. The result is new on every call;
// the caller owns it.
func Resources(cfg *config.Config) (map[resource.Type][]types.Resource, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("xdsserver: %w", err)
	}
	var (
		listeners = []types.Resource{outboundListener()}
		routes    []types.Resource
		clusters  []types.Resource
		loads     []types.Resource
		vhost     = &route.VirtualHost{Name: RouteName, Domains: []string{"*"}}
	)
	for i := range cfg.Models {
		m := &cfg.Models[i]
		if m.Name == OutboundListener {
			return nil, fmt.Errorf("xdsserver: model %q: the name is taken by the outbound listener", m.Name)
		}
		wc := weightedClusters(m)
		vhost.Routes = append(vhost.Routes, modelRoutes(m, wc)...)
		api, err := apiListener(m)
		if err != nil {
			return nil, err
		}
		listeners = append(listeners, api)
		routes = append(routes, proxylessRoute(m, wc))
		for j := range m.Versions {
			v := &m.Versions[j]
			c, err := modelCluster(cfg, m, v)
			if err != nil {
				return nil, err
			}
			c.OutlierDetection = outlierDetection(cfg.OutlierDetection)
			clusters = append(clusters, c)
			loads = append(loads, loadAssignment(m, v))
		}
	}
	routes = append(routes, &route.RouteConfiguration{Name: RouteName, VirtualHosts: []*route.VirtualHost{vhost}})
	out := map[resource.Type][]types.Resource{
		resource.ListenerType: listeners,
		resource.RouteType:    routes,
		resource.ClusterType:  clusters,
		resource.EndpointType: loads,
	}
	for typ, rs := range out {
		for _, r := range rs {
			if err := validate(r); err != nil {
				return nil, fmt.Errorf("xdsserver: %s: %w", typ, err)
			}
		}
	}
	return out, nil
}

// validate calls the resource's generated Validate.
func validate(r types.Resource) error {
	v, ok := r.(interface{ Validate() error })
	if !ok {
		return fmt.Errorf("%T has no Validate", r)
	}
	return v.Validate()
}

// adsSource is the config source of every RDS and EDS reference: gRPC
// rejects anything but ads or self.
func adsSource() *core.ConfigSource {
	return &core.ConfigSource{
		ResourceApiVersion:    core.ApiVersion_V3,
		ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}},
	}
}

// routerFilter is the terminal HTTP filter; it must come last.
func routerFilter() *hcm.HttpFilter {
	return &hcm.HttpFilter{
		Name:       wellknown.Router,
		ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(&router.Router{})},
	}
}

func outboundListener() *listener.Listener {
	manager := &hcm.HttpConnectionManager{
		StatPrefix: "batchmesh_outbound",
		RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{
			ConfigSource:    adsSource(),
			RouteConfigName: RouteName,
		}},
		HttpFilters: []*hcm.HttpFilter{routerFilter()},
	}
	return &listener.Listener{
		Name: OutboundListener,
		Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
			Address:       "0.0.0.0",
			PortSpecifier: &core.SocketAddress_PortValue{PortValue: OutboundPort},
		}}},
		TrafficDirection: core.TrafficDirection_OUTBOUND,
		FilterChains: []*listener.FilterChain{{
			Filters: []*listener.Filter{{
				Name:       wellknown.HTTPConnectionManager,
				ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(manager)},
			}},
		}},
	}
}

// apiListener is the Listener a gRPC client dialing xds:///{model} asks
// for: an api_listener that takes its routes over RDS on ADS from
// ProxylessRouteName(model), the shape of grpc-go's own test resources.
func apiListener(m *config.Model) (*listener.Listener, error) {
	manager := &hcm.HttpConnectionManager{
		StatPrefix: "batchmesh_grpc",
		RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{
			ConfigSource:    adsSource(),
			RouteConfigName: ProxylessRouteName(m.Name),
		}},
		HttpFilters: []*hcm.HttpFilter{routerFilter()},
	}
	a, err := anypb.New(manager)
	if err != nil {
		return nil, fmt.Errorf("xdsserver: model %q: %w", m.Name, err)
	}
	return &listener.Listener{Name: m.Name, ApiListener: &listener.ApiListener{ApiListener: a}}, nil
}

// proxylessRoute is the RouteConfiguration of a model's api_listener: any
// domain, prefix "/", weighted_clusters over the model's versions.
func proxylessRoute(m *config.Model, wc *route.WeightedCluster) *route.RouteConfiguration {
	return &route.RouteConfiguration{
		Name: ProxylessRouteName(m.Name),
		VirtualHosts: []*route.VirtualHost{{
			Name:    m.Name,
			Domains: []string{"*"},
			Routes: []*route.Route{{
				Name:   m.Name + "|grpc",
				Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
				Action: routeTo(wc),
			}},
		}},
	}
}

// weightedClusters splits a model's traffic over its versions of non-zero
// weight. Config.Validate guarantees the weights sum to more than 0 and at
// most MaxWeightSum.
func weightedClusters(m *config.Model) *route.WeightedCluster {
	wc := &route.WeightedCluster{}
	for _, v := range m.Versions {
		if v.Weight <= 0 {
			continue
		}
		wc.Clusters = append(wc.Clusters, &route.WeightedCluster_ClusterWeight{
			Name:   ClusterName(m.Name, v.Version),
			Weight: wrapperspb.UInt32(uint32(v.Weight)),
		})
	}
	return wc
}

func routeTo(wc *route.WeightedCluster) *route.Route_Route {
	return &route.Route_Route{Route: &route.RouteAction{
		ClusterSpecifier: &route.RouteAction_WeightedClusters{WeightedClusters: proto.Clone(wc).(*route.WeightedCluster)},
	}}
}

// modelRoutes returns the routes of RouteName for one model: every model
// answers on /v2/models/{model}/ (infer, metadata, ready); TF Serving models
// on /v1/models/{model}:predict and below /v1/models/{model}/; OpenAI
// models on /v1/embeddings with ModelHeader set to the model.
func modelRoutes(m *config.Model, wc *route.WeightedCluster) []*route.Route {
	prefix := func(p string) *route.RouteMatch {
		return &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: p}}
	}
	rs := []*route.Route{{Name: m.Name + "|v2", Match: prefix("/v2/models/" + m.Name + "/"), Action: routeTo(wc)}}
	switch m.Protocol {
	case config.ProtocolTFServing:
		rs = append(rs,
			&route.Route{
				Name:   m.Name + "|tfserving",
				Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_Path{Path: "/v1/models/" + m.Name + ":predict"}},
				Action: routeTo(wc),
			},
			&route.Route{Name: m.Name + "|tfserving-versions", Match: prefix("/v1/models/" + m.Name + "/"), Action: routeTo(wc)},
		)
	case config.ProtocolOpenAI:
		match := &route.RouteMatch{
			PathSpecifier: &route.RouteMatch_Path{Path: "/v1/embeddings"},
			Headers: []*route.HeaderMatcher{{
				Name: ModelHeader,
				HeaderMatchSpecifier: &route.HeaderMatcher_StringMatch{StringMatch: &matcher.StringMatcher{
					MatchPattern: &matcher.StringMatcher_Exact{Exact: m.Name},
				}},
			}},
		}
		rs = append(rs, &route.Route{Name: m.Name + "|openai", Match: match, Action: routeTo(wc)})
	}
	return rs
}

func modelCluster(cfg *config.Config, m *config.Model, v *config.Version) (*cluster.Cluster, error) {
	name := ClusterName(m.Name, v.Version)
	fields := map[string]any{
		"model":    m.Name,
		"version":  v.Version,
		"protocol": m.Protocol,
		// weights tells the sidecar whether the endpoint weights are
		// measured (adaptive: it also adapts its concurrency per endpoint
		// to the runtime's reported queue) or the file's.
		"weights": cfg.Weights,
		"batching": map[string]any{
			"max_batch_size":  m.Batching.MaxBatchSize,
			"max_queue_size":  m.Batching.MaxQueueSize,
			"max_queue_delay": m.Batching.MaxQueueDelay.String(),
			"batch_policy":    m.Batching.Policy,
			"timeout":         m.Batching.Timeout.String(),
		},
		"cache": map[string]any{
			"enabled":     m.Cache.Enabled,
			"ttl":         m.Cache.TTL.String(),
			"granularity": m.Cache.Granularity,
			"scope":       m.Cache.Scope,
		},
	}
	for k, v := range resilienceMetadata(m) {
		fields[k] = v
	}
	if len(v.ServiceAddresses) > 0 {
		// service_addresses are the version's Service addresses (ip:port),
		// which the sidecar's transparent listener takes as this model.
		addrs := make([]any, len(v.ServiceAddresses))
		for i, a := range v.ServiceAddresses {
			addrs[i] = a
		}
		fields["service_addresses"] = addrs
	}
	md, err := structpb.NewStruct(fields)
	if err != nil {
		return nil, fmt.Errorf("xdsserver: cluster %q metadata: %w", name, err)
	}
	return &cluster.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_EDS},
		EdsClusterConfig:     &cluster.Cluster_EdsClusterConfig{EdsConfig: adsSource(), ServiceName: name},
		LbPolicy:             cluster.Cluster_LEAST_REQUEST,
		CircuitBreakers:      circuitBreakers(m),
		Metadata:             &core.Metadata{FilterMetadata: map[string]*structpb.Struct{MetadataKey: md}},
	}, nil
}

// loadAssignment groups a version's endpoints into one locality per zone,
// in order of first appearance; endpoints without a zone share the locality
// of empty zone. A locality's weight is the sum of its endpoints' weights;
// endpoints and localities of weight 0 are left out. A draining endpoint
// (config.Endpoint.Draining) has health DRAINING: clients send it nothing
// new.
func loadAssignment(m *config.Model, v *config.Version) *endpoint.ClusterLoadAssignment {
	name := ClusterName(m.Name, v.Version)
	cla := &endpoint.ClusterLoadAssignment{ClusterName: name}
	byZone := map[string]*endpoint.LocalityLbEndpoints{}
	sums := map[string]uint64{}
	for _, e := range v.Endpoints {
		if e.Weight <= 0 {
			continue
		}
		loc, ok := byZone[e.Zone]
		if !ok {
			loc = &endpoint.LocalityLbEndpoints{Locality: &core.Locality{Zone: e.Zone}}
			byZone[e.Zone] = loc
			cla.Endpoints = append(cla.Endpoints, loc)
		}
		sums[e.Zone] += uint64(e.Weight)
		loc.LbEndpoints = append(loc.LbEndpoints, lbEndpoint(e))
	}
	for zone, loc := range byZone {
		loc.LoadBalancingWeight = wrapperspb.UInt32(uint32(min(sums[zone], config.MaxWeightSum)))
	}
	return cla
}

func lbEndpoint(e config.Endpoint) *endpoint.LbEndpoint {
	// Config.Validate has checked the address; a bad one gets port 0, which
	// the endpoint's Validate rejects.
	host, portStr, _ := net.SplitHostPort(e.Address)
	port, _ := strconv.ParseUint(portStr, 10, 16)
	md := &structpb.Struct{Fields: map[string]*structpb.Value{"slots": structpb.NewNumberValue(float64(e.Slots))}}
	if e.Protocol == config.EndpointGRPC {
		md.Fields["protocol"] = structpb.NewStringValue(e.Protocol) // absent: http
	}
	health := core.HealthStatus_HEALTHY
	if e.Draining {
		health = core.HealthStatus_DRAINING
	}
	return &endpoint.LbEndpoint{
		HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{
			Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
				Address:       host,
				PortSpecifier: &core.SocketAddress_PortValue{PortValue: uint32(port)},
			}}},
		}},
		HealthStatus:        health,
		LoadBalancingWeight: wrapperspb.UInt32(uint32(e.Weight)),
		Metadata:            &core.Metadata{FilterMetadata: map[string]*structpb.Struct{MetadataKey: md}},
	}
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err) // only for messages of this package, which always marshal
	}
	return a
}

// ProxylessRouteName returns the name of the RouteConfiguration that the
// api_listener of a model refers to over RDS: batchmesh|{model}.
func ProxylessRouteName(model string) string { return "batchmesh|" + model }
