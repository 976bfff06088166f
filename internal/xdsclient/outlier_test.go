package xdsclient

import (
	"strings"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/batchmesh/batchmesh/internal/config"
)

// TestOutlierRoundTrip: the file's outlier_detection, written into every
// cluster by the control plane, comes back whole to the sidecar: set
// values, the defaults (a zero value), and each ejection turned off.
func TestOutlierRoundTrip(t *testing.T) {
	custom := config.OutlierDetection{
		ConsecutiveFailures: 3, BaseEjectionTime: 10 * time.Second, MaxEjectionTime: time.Minute, MaxEjectionPercent: 50,
		Interval: 5 * time.Second, FailurePercentageThreshold: 90, FailurePercentageMinimumHosts: 3,
		FailurePercentageRequestVolume: 20, EnforcingFailurePercentage: 40,
	}
	off := config.DefaultOutlierDetection()
	off.ConsecutiveFailures, off.EnforcingFailurePercentage = 0, 0
	for _, tt := range []struct {
		name string
		file config.OutlierDetection
		want config.OutlierDetection
	}{
		{"set", custom, custom},
		{"defaults", config.OutlierDetection{}, config.DefaultOutlierDetection()},
		{"both off", off, off},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(90, 10, 3)
			cfg.OutlierDetection = tt.file
			got, err := translate(served(t, cfg))
			if err != nil {
				t.Fatal(err)
			}
			if got.OutlierDetection != tt.want {
				t.Errorf("got %+v\nwant %+v", got.OutlierDetection, tt.want)
			}
			if err := got.Validate(); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestOutlierOfForeignClusters: fields a control plane leaves unset take
// Envoy's defaults (failure percentage off); clusters that disagree are
// refused; no outlier_detection is the file's defaults.
func TestOutlierOfForeignClusters(t *testing.T) {
	got := outlierOfCluster(&cluster.OutlierDetection{Consecutive_5Xx: wrapperspb.UInt32(7), BaseEjectionTime: durationpb.New(time.Minute)})
	want := config.DefaultOutlierDetection()
	want.ConsecutiveFailures, want.BaseEjectionTime, want.EnforcingFailurePercentage = 7, time.Minute, 0
	if got != want {
		t.Errorf("sparse outlier_detection: got %+v\nwant %+v", got, want)
	}
	if got := outlierOfCluster(nil); got != config.DefaultOutlierDetection() {
		t.Errorf("none: got %+v, want the defaults", got)
	}

	v := served(t, testConfig(90, 10, 3))
	name := config.ClusterName("bert", "2")
	v.clusters[name].OutlierDetection.MaxEjectionPercent = wrapperspb.UInt32(30)
	_, err := translate(v)
	if err == nil || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "outlier_detection") {
		t.Errorf("disagreeing clusters: %v; want an error naming %q and outlier_detection", err, name)
	}
}
