package xdsserver

import (
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// pushAckBuckets spans a local ACK (well under a millisecond) to a slow
// client far away; the target is p99 under 1 s at 1,000 streams.
var pushAckBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// instruments are the Server's metrics (see the package doc).
type instruments struct {
	updates metric.Int64Counter
	nacks   metric.Int64Counter
	pushAck metric.Float64Histogram
	byType  map[string]metric.MeasurementOption // type URL → {type} attribute
}

func newInstruments(m metric.Meter) (*instruments, error) {
	in := &instruments{byType: map[string]metric.MeasurementOption{}}
	var errs [3]error
	in.updates, errs[0] = m.Int64Counter("batchmesh_xds_updates",
		metric.WithDescription("xDS responses sent (SotW and delta), by resource type."))
	in.nacks, errs[1] = m.Int64Counter("batchmesh_xds_nacks",
		metric.WithDescription("xDS NACKs received (requests with error_detail), by resource type."))
	in.pushAck, errs[2] = m.Float64Histogram("batchmesh_xds_push_ack_seconds",
		metric.WithDescription("Time from sending an xDS response to the request that ACKs its nonce, by resource type."),
		metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(pushAckBuckets...))
	if err := errors.Join(errs[:]...); err != nil {
		return nil, fmt.Errorf("xdsserver: metrics: %w", err)
	}
	for _, typ := range shortTypes {
		in.byType[typ] = metric.WithAttributeSet(attribute.NewSet(attribute.String("type", typeLabel(typ))))
	}
	return in, nil
}

// attrs returns the {type} attribute of a type URL.
func (in *instruments) attrs(typeURL string) metric.MeasurementOption {
	if o, ok := in.byType[typeURL]; ok {
		return o
	}
	return metric.WithAttributeSet(attribute.NewSet(attribute.String("type", typeLabel(typeURL))))
}

// typeLabel is the {type} label of a type URL: the short names of
// GroupState.Resources for the four types served, the URL otherwise.
func typeLabel(typeURL string) string {
	switch typeURL {
	case resource.ListenerType:
		return "listeners"
	case resource.RouteType:
		return "routes"
	case resource.ClusterType:
		return "clusters"
	case resource.EndpointType:
		return "endpoints"
	}
	return typeURL
}

// sentResponse is the last response of one type sent on one stream.
type sentResponse struct {
	version string // SotW only
	nonce   string
	at      time.Time
	acked   bool // the ACK (or NACK) of nonce has been seen
}

// ackOf reports whether a request is the first ACK of the response r: it
// names r's nonce, carries no error and, for SotW, r's version.
func (r *sentResponse) ackOf(nonce, version string, sotw bool) bool {
	return r != nil && !r.acked && nonce != "" && nonce == r.nonce && (!sotw || version == r.version)
}
