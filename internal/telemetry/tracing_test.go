package telemetry

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// TestOTLPOverHTTP exports a span with OTEL_EXPORTER_OTLP_PROTOCOL left at
// its default (http/protobuf) to a real OTLP/HTTP endpoint on loopback that
// decodes the protobuf body. (The gRPC path is tested end to end in
// internal/proxy.)
func TestOTLPOverHTTP(t *testing.T) {
	var mu sync.Mutex
	var names []string
	var service string
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req collectorpb.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		for _, rs := range req.ResourceSpans {
			for _, a := range rs.Resource.Attributes {
				if a.Key == "service.name" {
					service = a.Value.GetStringValue()
				}
			}
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					names = append(names, s.Name)
				}
			}
		}
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&collectorpb.ExportTraceServiceResponse{})
		_, _ = w.Write(out)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+ln.Addr().String())
	tr, err := NewTracing(context.Background(), "batchmesh-test")
	if err != nil {
		t.Fatal(err)
	}
	if tr.Exporter != "otlp/http" {
		t.Errorf("exporter %q, want otlp/http (the default protocol)", tr.Exporter)
	}
	_, span := tr.Provider.Tracer("t").Start(context.Background(), "hello")
	span.End()
	if err := tr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(names) != 1 || names[0] != "hello" || service != "batchmesh-test" {
		t.Errorf("received spans %q from service %q, want [hello] from batchmesh-test", names, service)
	}
}

func TestTracingOffAndBadSettings(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "")
	tr, err := NewTracing(context.Background(), "x")
	if err != nil || tr.Exporter != "none" {
		t.Fatalf("unset exporter: %v %q, want tracing off", err, tr.Exporter)
	}
	if _, span := tr.Provider.Tracer("t").Start(context.Background(), "s"); span.IsRecording() {
		t.Error("tracing off records spans")
	}
	t.Setenv("OTEL_TRACES_EXPORTER", "zipkin")
	if _, err := NewTracing(context.Background(), "x"); err == nil {
		t.Error("OTEL_TRACES_EXPORTER=zipkin accepted; want a clear not-supported error")
	}
	t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
	if _, err := NewTracing(context.Background(), "x"); err == nil {
		t.Error("protocol http/json accepted; want a clear not-supported error")
	}
}
