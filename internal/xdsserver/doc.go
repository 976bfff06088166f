// Package xdsserver turns a batchmesh config into xDS resources and serves
// them over ADS (SotW and delta) with go-control-plane v0.14: one
// LinearCache per resource type behind a MuxCache, so that any client is
// answered with exactly the resources it names, whatever its node says.
// Versions only move forward, and NACK handling keeps a rejected version
// from being re-sent in a loop (go-control-plane#962).
//
// Sidecars and Envoy subscribe to every listener and cluster (wildcard),
// the route "batchmesh" and the load assignments of their clusters. A gRPC
// proxyless client (xds:///{model}, any bootstrap) names the Listener
// {model}, whose api_listener takes the RouteConfiguration
// ProxylessRouteName(model) over RDS, and then the Clusters and
// ClusterLoadAssignments of the model's weighted versions. One client can
// follow several models on one stream. A name that does not exist is left
// out of the response (for listeners and clusters, whose SotW responses
// carry the full state, a response is sent at once, so that gRPC reports
// "resource does not exist"), and logged at debug with the node id.
//
// An Update sends only what changed: the resources of a type that differ
// from the last Update (SotW: all the subscribed listeners or clusters if
// one of them changed), in the order clusters, endpoints, listeners,
// routes.
//
// Metrics (through the metric.Meter in Config), each labelled {type}:
// listeners, routes, clusters or endpoints:
//
//	batchmesh_xds_updates_total        xDS responses sent, SotW and delta
//	batchmesh_xds_nacks_total          NACKs received (error_detail set)
//	batchmesh_xds_push_ack_seconds     histogram: from a response to the request
//	                                   that ACKs its nonce (and, SotW, version)
package xdsserver
