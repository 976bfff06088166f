package main

import (
	"context"
	"log/slog"
	"net"

	"google.golang.org/grpc"

	"github.com/batchmesh/batchmesh/internal/modelrt"
)

// grpcServer is the runtime's gRPC listener; the zero value (-grpc-listen
// off) does nothing.
type grpcServer struct {
	srv *grpc.Server
}

// serveGRPC serves srv's gRPC service on addr unless addr is "off".
func serveGRPC(srv *modelrt.Server, addr string, logger *slog.Logger) (grpcServer, error) {
	if addr == "off" || addr == "" {
		return grpcServer{}, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return grpcServer{}, err
	}
	g := grpcServer{srv: srv.NewGRPCServer()}
	logger.Info("listening (gRPC)", "addr", ln.Addr().String())
	go func() {
		if err := g.srv.Serve(ln); err != nil {
			logger.Error("gRPC listener failed", "err", err)
		}
	}()
	return g, nil
}

// drain lets the calls in flight end until ctx does, then ends them.
func (g grpcServer) drain(ctx context.Context) {
	if g.srv == nil {
		return
	}
	done := make(chan struct{})
	go func() { g.srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		g.srv.Stop()
		<-done
	}
}

func (g grpcServer) stop() {
	if g.srv != nil {
		g.srv.Stop()
	}
}
