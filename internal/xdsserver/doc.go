// Package xdsserver turns a batchmesh config into xDS resources
// and serves them over ADS with go-control-plane v0.14: one snapshot
// per node group (node.cluster), versions that only move forward, and NACK
// detection that keeps a rejected version from being re-sent in a loop
// (go-control-plane#962).
//
// gRPC proxyless clients (xds:///{model}) that set the node metadata field
// ModelMetadataKey get a group of their own per model (ProxylessGroupPrefix
// + model), whose snapshot holds only that model's Listener (api_listener
// using RDS over ADS), RouteConfiguration (weighted_clusters over its
// versions), Clusters and ClusterLoadAssignments: exactly the names such a
// client subscribes to, which go-control-plane's ADS snapshot cache needs
// to answer it.
//
// Metrics (through the metric.Meter in Config), each labelled {type}:
// listeners, routes, clusters or endpoints:
//
//	batchmesh_xds_updates_total        xDS responses sent, SotW and delta
//	batchmesh_xds_nacks_total          NACKs received (error_detail set)
//	batchmesh_xds_push_ack_seconds     histogram: from a response to the request
//	                                   that ACKs its nonce (and, SotW, version)
package xdsserver
