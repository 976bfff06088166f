// Package discovery finds model runtimes in Kubernetes for the control
// plane's -kubernetes mode: Services labelled batchmesh.io/model (version
// from batchmesh.io/version, weight from the annotation batchmesh.io/weight)
// and their EndpointSlices become the versions and endpoints of the
// models (Build), which Merge combines with the batching and cache
// settings of the config file. Watcher keeps client-go informers on both
// and says when they change.
//
// Only the control plane imports it: the sidecar binary stays free of the
// Kubernetes client. It records no metrics.
package discovery
