package config

import "strings"

// ClusterPrefix starts the name of every batchmesh cluster.
const ClusterPrefix = "batchmesh|"

// ClusterName is the one name of a model version everywhere a cluster is
// named: the control plane's xDS Cluster and ClusterLoadAssignment, the
// sidecar's load reports, /clusters and traces: batchmesh|{model}|{version}.
// Model names cannot hold "|" (Validate), so the name parses back.
func ClusterName(model, version string) string {
	return ClusterPrefix + model + "|" + version
}

// ParseClusterName returns the model and version of a name ClusterName
// built; ok is false for any other name.
func ParseClusterName(name string) (model, version string, ok bool) {
	rest, ok := strings.CutPrefix(name, ClusterPrefix)
	if !ok {
		return "", "", false
	}
	model, version, ok = strings.Cut(rest, "|")
	return model, version, ok && model != "" && version != ""
}
