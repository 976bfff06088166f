package sidecar

import (
	"context"
	"net"
	"net/netip"

	"github.com/valyala/fasthttp"

	"github.com/batchmesh/batchmesh/internal/capture"
	"github.com/batchmesh/batchmesh/internal/codec"
)

// capture wraps the inference listener and server in the transparent
// listener and its router when capture is on; otherwise it returns nils.
func (s *Sidecar) capture(ln net.Listener, srv *fasthttp.Server) (*capture.Listener, *capture.Router, error) {
	if !s.cfg.Capture.Enabled {
		return nil, nil, nil
	}
	cl, err := capture.New(capture.Config{
		Listener:     ln,
		SniffTimeout: s.cfg.Capture.SniffTimeout,
		DialTimeout:  s.cfg.Capture.DialTimeout,
		Logger:       s.cfg.Logger,
	})
	if err != nil {
		return nil, nil, err
	}
	m := &capture.Matcher{}
	router := &capture.Router{
		Next:   s.proxy.Handler,
		Logger: s.cfg.Logger,
		Serves: func(path, host []byte, dst netip.AddrPort) bool {
			route := codec.ParseRoute(string(path))
			if route.Model == "" {
				return false
			}
			eps := s.proxy.ModelEndpoints(route.Model)
			return len(eps) > 0 && m.Match(context.Background(), eps, host, dst)
		},
	}
	srv.Handler = s.proxy.Guard(router.Handle)
	return cl, router, nil
}
