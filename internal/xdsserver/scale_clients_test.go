package xdsserver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// The raw ADS clients of the scale rig subscribe as a sidecar does: the
// listener OutboundListener and the route config RouteName by name, every
// cluster (wildcard), then the load assignments of the clusters of the
// first clusters response. They ACK every response and report each ACK.

// runSotWClient drives one SotW ADS stream.
func (r *scaleRig) runSotWClient(ctx context.Context, i int, conn *grpc.ClientConn) error {
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	node := &core.Node{Id: fmt.Sprintf("sidecar-%04d", i), Cluster: "sidecars"}
	names := map[string][]string{resource.ListenerType: {OutboundListener}, resource.RouteType: {RouteName}}
	for _, typ := range []string{resource.ClusterType, resource.ListenerType, resource.RouteType} {
		if err := stream.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: typ, ResourceNames: names[typ]}); err != nil {
			return err
		}
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		typ := resp.GetTypeUrl()
		if err := stream.Send(&discovery.DiscoveryRequest{
			Node: node, TypeUrl: typ, ResourceNames: names[typ], VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce(),
		}); err != nil {
			return err
		}
		if typ == resource.ClusterType && names[resource.EndpointType] == nil {
			eds := make([]string, 0, len(resp.GetResources()))
			for _, a := range resp.GetResources() {
				eds = append(eds, clusterName(a.GetValue()))
			}
			if slices.Contains(eds, "") {
				return errors.New("cluster without a name")
			}
			slices.Sort(eds)
			names[resource.EndpointType] = eds
			if err := stream.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: resource.EndpointType, ResourceNames: eds}); err != nil {
				return err
			}
		}
		if !r.report(ctx, scaleAck{client: i, typ: typ, version: resp.GetVersionInfo(), at: time.Now()}) {
			return nil
		}
	}
}

// runDeltaClient drives one delta ADS stream; the node goes on its first
// request only.
func (r *scaleRig) runDeltaClient(ctx context.Context, i int, conn *grpc.ClientConn) error {
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return err
	}
	node := &core.Node{Id: fmt.Sprintf("sidecar-%04d", i), Cluster: "sidecars"}
	first := []*discovery.DeltaDiscoveryRequest{
		{Node: node, TypeUrl: resource.ClusterType, ResourceNamesSubscribe: []string{"*"}},
		{TypeUrl: resource.ListenerType, ResourceNamesSubscribe: []string{OutboundListener}},
		{TypeUrl: resource.RouteType, ResourceNamesSubscribe: []string{RouteName}},
	}
	for _, req := range first {
		if err := stream.Send(req); err != nil {
			return err
		}
	}
	edsSent := false
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		typ := resp.GetTypeUrl()
		if err := stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: typ, ResponseNonce: resp.GetNonce()}); err != nil {
			return err
		}
		if typ == resource.ClusterType && !edsSent {
			eds := make([]string, 0, len(resp.GetResources()))
			for _, res := range resp.GetResources() {
				eds = append(eds, res.GetName())
			}
			if err := stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNamesSubscribe: eds}); err != nil {
				return err
			}
			edsSent = true
		}
		if !r.report(ctx, scaleAck{client: i, typ: typ, version: resp.GetSystemVersionInfo(), at: time.Now()}) {
			return nil
		}
	}
}

// report passes an ACK to the rig; false once ctx has ended.
func (r *scaleRig) report(ctx context.Context, a scaleAck) bool {
	select {
	case r.acks <- a:
		return true
	case <-ctx.Done():
		return false
	}
}

// clusterName decodes the name of a serialized Cluster, or "".
func clusterName(b []byte) string {
	var c cluster.Cluster
	if err := proto.Unmarshal(b, &c); err != nil {
		return ""
	}
	return c.GetName()
}
