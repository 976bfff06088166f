package sidecar

import (
	"context"
	"net"

	"google.golang.org/grpc"

	"github.com/batchmesh/batchmesh/internal/capture"
)

// grpcListener is the inference listener split in two by each connection's
// first bytes: HTTP/2 with prior knowledge (gRPC) to the proxy's gRPC
// server, the rest to the HTTP server.
type grpcListener struct {
	split *capture.Split
	srv   *grpc.Server
}

// splitGRPC wraps the inference listener ln and builds the gRPC server. A
// connection has the header timeout to send its first bytes, as it would
// without the split: a silent one is closed then, not held for the idle
// timeout.
func (s *Sidecar) splitGRPC(ln net.Listener) *grpcListener {
	return &grpcListener{split: capture.NewSplit(ln, s.cfg.Proxy.HeaderTimeout), srv: s.proxy.NewGRPCServer()}
}

// serve serves gRPC until stop, sending Serve's error to served.
func (g *grpcListener) serve(served chan<- error) {
	go func() { served <- g.srv.Serve(g.split.HTTP2()) }()
}

// stop closes the shared listener and ends the gRPC calls in flight at
// once.
func (g *grpcListener) stop() {
	_ = g.split.Close()
	g.srv.Stop()
}

// drain closes the shared listener and lets the gRPC calls in flight end
// until ctx does; then it ends them.
func (g *grpcListener) drain(ctx context.Context) error {
	_ = g.split.Close()
	stopped := make(chan struct{})
	go func() { g.srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
		return nil
	case <-ctx.Done():
		g.srv.Stop()
		<-stopped
		return ctx.Err()
	}
}
