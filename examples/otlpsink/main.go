// Command otlpsink is a minimal OTLP/gRPC trace receiver that counts the
// spans it is sent, by name, and prints the counts each second. It is for
// checking an OTLP set-up and for measuring tracing overhead without a
// collector; it keeps nothing.
//
// Usage:
//
//	go run ./examples/otlpsink [-listen 127.0.0.1:4317]
//	OTEL_TRACES_EXPORTER=otlp OTEL_EXPORTER_OTLP_PROTOCOL=grpc \
//	  OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 sidecar -config ...
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"sort"
	"sync"
	"syscall"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
)

type sink struct {
	collectorpb.UnimplementedTraceServiceServer
	mu     sync.Mutex
	counts map[string]int
}

func (s *sink) Export(_ context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				s.counts[sp.Name]++
			}
		}
	}
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

func (s *sink) print() {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.counts))
	for n := range s.counts {
		names = append(names, n)
	}
	sort.Strings(names)
	line := time.Now().Format("15:04:05")
	for _, n := range names {
		line += fmt.Sprintf("  %q=%d", n, s.counts[n])
	}
	fmt.Println(line)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:4317", "address of the OTLP/gRPC trace service")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	s := &sink{counts: map[string]int{}}
	srv := grpc.NewServer()
	collectorpb.RegisterTraceServiceServer(srv, s)
	go func() {
		if err := srv.Serve(ln); err != nil {
			log.Fatal(err)
		}
	}()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			srv.GracefulStop()
			s.print()
			return
		case <-t.C:
			s.print()
		}
	}
}
