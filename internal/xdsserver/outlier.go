package xdsserver

import (
	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/batchmesh/batchmesh/internal/config"
)

// outlierDetection maps the file's outlier_detection (the zero value: its
// defaults) to a cluster's, every field set so that no client falls back
// on its own defaults:
//
//   - consecutive_failures → consecutive_5xx, with enforcing_consecutive_5xx
//     100, or 0 when consecutive_failures is 0 (off); Envoy counts
//     connection failures and timeouts as 5xx, as the sidecar does;
//   - the ejection times, max_ejection_percent and interval as they are;
//   - the failure_percentage_* keys and enforcing_failure_percentage as
//     they are: grpc-go proxyless clients honour them (gRFC A50);
//   - enforcing_success_rate 0: the sidecar has no success-rate ejection,
//     and without the 0 a gRPC client would apply Envoy's default (100).
func outlierDetection(o config.OutlierDetection) *cluster.OutlierDetection {
	if o == (config.OutlierDetection{}) {
		o = config.DefaultOutlierDetection()
	}
	u32 := func(n int) *wrapperspb.UInt32Value { return wrapperspb.UInt32(uint32(max(n, 0))) }
	od := &cluster.OutlierDetection{
		EnforcingConsecutive_5Xx:       u32(100),
		Interval:                       durationpb.New(o.Interval),
		BaseEjectionTime:               durationpb.New(o.BaseEjectionTime),
		MaxEjectionTime:                durationpb.New(o.MaxEjectionTime),
		MaxEjectionPercent:             u32(o.MaxEjectionPercent),
		EnforcingSuccessRate:           u32(0),
		FailurePercentageThreshold:     u32(o.FailurePercentageThreshold),
		EnforcingFailurePercentage:     u32(o.EnforcingFailurePercentage),
		FailurePercentageMinimumHosts:  u32(o.FailurePercentageMinimumHosts),
		FailurePercentageRequestVolume: u32(o.FailurePercentageRequestVolume),
	}
	if o.ConsecutiveFailures > 0 {
		od.Consecutive_5Xx = u32(o.ConsecutiveFailures)
	} else {
		od.EnforcingConsecutive_5Xx = u32(0)
	}
	return od
}
