// Package xdsclient is the sidecar's ADS client: it
// subscribes to the control plane over one SotW ADS stream, turns the
// resources into a config.Config and hands each new consistent config to
// the caller.
//
// Subscriptions: every Listener (only batchmesh-outbound is used, and it
// must take its routes from RouteConfiguration "batchmesh" over RDS), the
// RouteConfiguration "batchmesh", every Cluster, and the
// ClusterLoadAssignments of the EDS clusters received. Listeners and
// clusters are asked for by wildcard because go-control-plane's snapshot
// cache in ADS mode answers a request by name only when it names every
// resource of the type.
//
// Translation: clusters batchmesh|{model}|{version} carry the model's
// protocol, batching and cache settings in filter_metadata["batchmesh"];
// the route's weighted_clusters give the versions' weights (a cluster no
// route names has weight 0, a model no route names is left out); the load
// assignments give the endpoints with their weight, slots (endpoint
// metadata) and zone (locality). Endpoints whose health is neither HEALTHY
// nor UNKNOWN are left out. CacheBytes and Weights, which xDS does not
// carry, take their defaults.
//
// Atomic changes: responses are held until the resources received make a
// consistent set (the listener and route exist, every routed cluster
// exists, every cluster has its load assignment). The config is then
// validated and applied, and every held response ACKed; if it does not
// validate or apply refuses it, every held response is NACKed with the
// reason, the last good config stays, and a config equal to a refused one
// is refused again without calling apply. A config equal to the one last
// applied is ACKed without calling apply.
//
// Reconnection: when the stream fails, Run reconnects after an exponential
// backoff with jitter and re-subscribes with the versions it has accepted;
// the last good config stays applied meanwhile.
//
// The package exports no metrics; Client.Versions gives the version and
// nonce per type, and the last rejection, for /config_dump.
package xdsclient
