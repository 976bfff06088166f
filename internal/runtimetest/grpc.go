package runtimetest

import (
	"net"
	"testing"
)

// ServeGRPC serves r's gRPC service (modelrt.Server.NewGRPCServer, what the
// model binary serves on -grpc-listen) on a free port of 127.0.0.1 and
// returns its host:port. It is stopped at t's cleanup, or by Stop of the
// returned function, which ends the calls in flight at once (a crashed
// runtime).
func (r *Runtime) ServeGRPC(t testing.TB) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("runtimetest: gRPC listen: %v", err)
	}
	g := r.Server.NewGRPCServer()
	served := make(chan error, 1)
	go func() { served <- g.Serve(ln) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		g.Stop()
		if err := <-served; err != nil {
			t.Errorf("runtimetest: gRPC serve on %s: %v", ln.Addr(), err)
		}
	}
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}
