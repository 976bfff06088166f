package xdsclient

import (
	"fmt"
	"maps"
	"slices"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/batchmesh/batchmesh/internal/config"
)

// outlierOfClusters reads the outlier detection settings of the batchmesh
// clusters (models holds their metadata by name): all must agree, as one
// control plane writes the file's one outlier_detection into each. A
// cluster without outlier_detection stands for the file's defaults.
func outlierOfClusters(clusters map[string]*cluster.Cluster, models map[string]*clusterMD) (config.OutlierDetection, error) {
	var (
		out  config.OutlierDetection
		from string // the cluster that set out
	)
	for _, name := range slices.Sorted(maps.Keys(models)) {
		o := outlierOfCluster(clusters[name].GetOutlierDetection())
		if from == "" {
			out, from = o, name
		} else if o != out {
			return config.OutlierDetection{}, fmt.Errorf("xdsclient: cluster %q has outlier_detection %+v but cluster %q has %+v: the sidecar applies one to every endpoint", name, o, from, out)
		}
	}
	if from == "" {
		return config.DefaultOutlierDetection(), nil
	}
	return out, nil
}

// outlierOfCluster maps a cluster's outlier_detection to the file's keys,
// the inverse of the control plane's mapping. A field not set takes
// Envoy's default, which differs from the file's for
// enforcing_failure_percentage (0, off). consecutive_5xx is
// consecutive_failures unless enforcing_consecutive_5xx is 0 (off); the
// sidecar enforces any other value as 100. The success-rate fields are
// ignored: the sidecar has no success-rate ejection. Out of range values
// are left for config.Validate to refuse (a NACK).
func outlierOfCluster(od *cluster.OutlierDetection) config.OutlierDetection {
	o := config.DefaultOutlierDetection()
	if od == nil {
		return o
	}
	o.EnforcingFailurePercentage = 0
	o.ConsecutiveFailures = u32(od.GetConsecutive_5Xx(), o.ConsecutiveFailures)
	if u32(od.GetEnforcingConsecutive_5Xx(), 100) == 0 {
		o.ConsecutiveFailures = 0
	}
	o.Interval = dur(od.GetInterval(), o.Interval)
	o.BaseEjectionTime = dur(od.GetBaseEjectionTime(), o.BaseEjectionTime)
	o.MaxEjectionTime = dur(od.GetMaxEjectionTime(), max(o.MaxEjectionTime, o.BaseEjectionTime))
	o.MaxEjectionPercent = u32(od.GetMaxEjectionPercent(), o.MaxEjectionPercent)
	o.FailurePercentageThreshold = u32(od.GetFailurePercentageThreshold(), o.FailurePercentageThreshold)
	o.EnforcingFailurePercentage = u32(od.GetEnforcingFailurePercentage(), o.EnforcingFailurePercentage)
	o.FailurePercentageMinimumHosts = u32(od.GetFailurePercentageMinimumHosts(), o.FailurePercentageMinimumHosts)
	o.FailurePercentageRequestVolume = u32(od.GetFailurePercentageRequestVolume(), o.FailurePercentageRequestVolume)
	return o
}

// u32 returns v's value as an int, or def when v is not set.
func u32(v *wrapperspb.UInt32Value, def int) int {
	if v == nil {
		return def
	}
	return int(min(v.GetValue(), 1<<31-1))
}

// dur returns d as a duration, or def when d is not set.
func dur(d *durationpb.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.AsDuration()
}
