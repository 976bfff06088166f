// Package telemetry sets up the OpenTelemetry SDK for batchmesh's binaries.
// It is the only internal package that imports the SDK; every other package
// takes a metric.Meter (or trace.Tracer) from the API and is handed one by
// main.
//
// Metrics are exported in the Prometheus text format through the
// OpenTelemetry Prometheus exporter, on a private registry (no global
// state), without the otel_scope_* labels and target_info, so that the
// names and labels are exactly those of docs/http.md.
//
// This package defines no metrics of its own.
package telemetry

import (
	"context"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// Metrics is a meter provider whose instruments are served by Handler.
// Close it when the binary exits.
type Metrics struct {
	provider *sdkmetric.MeterProvider
	handler  http.Handler
}

// NewMetrics builds a meter provider with a Prometheus exporter on a fresh
// registry. It starts no goroutine: the exporter collects when scraped.
func NewMetrics() (*Metrics, error) {
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(
		otelprom.WithRegisterer(reg),
		otelprom.WithoutScopeInfo(),
		otelprom.WithoutTargetInfo(),
	)
	if err != nil {
		return nil, fmt.Errorf("telemetry: prometheus exporter: %w", err)
	}
	return &Metrics{
		provider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp)),
		handler:  promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}),
	}, nil
}

// Meter returns a named meter of the provider.
func (m *Metrics) Meter(name string) metric.Meter { return m.provider.Meter(name) }

// Handler serves the Prometheus text exposition.
func (m *Metrics) Handler() http.Handler { return m.handler }

// Close flushes and shuts the provider down.
func (m *Metrics) Close(ctx context.Context) error { return m.provider.Shutdown(ctx) }
