// Package xdsclient is the sidecar's ADS client: it
// subscribes to the control plane over one ADS stream, state of the world
// (SotW, the default) or delta (incremental, Config.Protocol), turns the
// resources into a config.Config and hands each new consistent config to
// the caller.
//
// Subscriptions: the Listener batchmesh-outbound (which must take its
// routes from RouteConfiguration "batchmesh" over RDS), the
// RouteConfiguration "batchmesh", every Cluster (wildcard), and the
// ClusterLoadAssignments of the EDS clusters received. A SotW response of
// routes or load assignments, and every delta response, carries only what
// changed (delta also names what was removed); it is merged into what the
// client has. On reconnection a delta client tells the server the version
// of every resource it has, so that only what changed is sent again.
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
// applied is ACKed without calling apply. Held responses that leave the
// set incomplete when nothing else is on its way are ACKed (the server
// sends a type again only after that) and the config is applied once the
// rest has come.
//
// Reconnection: when the stream fails, Run reconnects after an exponential
// backoff with jitter and re-subscribes with the versions it has accepted;
// the last good config stays applied meanwhile.
//
// The package exports no metrics; Client.Versions gives the version and
// nonce per type, and the last rejection, for /config_dump.
package xdsclient
