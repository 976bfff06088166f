// Package sidecar runs batchmesh's data plane from start to drain: it owns
// the inference and admin listeners, the endpoint health prober, the xDS
// client that applies the control plane's configuration, the LRS client
// that reports load, and the ordered shutdown.
//
// Build a Sidecar with New (it starts nothing) and call Run once; Run
// returns when its context ends and everything queued and in flight has
// been answered, or when a listener fails. The order of a drain is fixed:
//
//  1. /readyz fails, so that the pod leaves its Service's endpoints;
//  2. the inference listener stops accepting and waits for the requests in
//     progress, HTTP and gRPC (bounded by DrainTimeout);
//  3. the prober, xDS and LRS stop, so that no configuration changes;
//  4. every lane answers its queued and in-flight rows;
//  5. the admin listener closes and the upstream connections are released.
//
// The sidecar binary (sidecar/main.go) is flags → Config → Run; the demo
// and the tests use the same path.
//
// This package exports no metrics of its own; see the proxy package.
package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/batchmesh/batchmesh/internal/capture"
	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/loadreport"
	"github.com/batchmesh/batchmesh/internal/proxy"
	"github.com/batchmesh/batchmesh/internal/rawconn"
	"github.com/batchmesh/batchmesh/internal/xdsclient"
)

// Default listener addresses. With capture on, the inference listener
// takes every address, IPv4 and IPv6 (DefaultCaptureListen): the redirect
// rules send captured connections to 127.0.0.1 and ::1.
const (
	DefaultListen        = "127.0.0.1:15001"
	DefaultCaptureListen = ":15001"
	DefaultAdmin         = "127.0.0.1:15000"
)

// Config configures a Sidecar. Zero values are the defaults noted.
type Config struct {
	// Listen and Admin are the inference and admin listener addresses;
	// default DefaultListen and DefaultAdmin. Listener and AdminListener,
	// when set, are served instead (and closed by Run).
	Listen, Admin           string
	Listener, AdminListener net.Listener

	// Models is the static configuration (sidecar -config) and Source names
	// it for /config_dump. Required unless XDS.Server is set; with both,
	// the control plane's configuration replaces it when it arrives.
	Models *config.Config
	Source string

	// XDS, when XDS.Server is set, connects to the control plane: its
	// configuration is applied as it changes (weights: adaptive allowed)
	// and this sidecar's load is reported over LRS.
	XDS xdsclient.Config

	// Capture, when Enabled, makes the inference listener the transparent
	// listener of `sidecar redirect`'s rules (internal/capture).
	Capture CaptureConfig

	// DrainTimeout bounds the drain after Run's context ends; default 30s.
	DrainTimeout time.Duration

	// Proxy holds the data plane's settings: body limit, probe interval,
	// balancer, zone, upstream client and telemetry. Its Models, Source,
	// XDS, Load, AllowAdaptive and Logger are set from the fields above.
	Proxy proxy.Config

	// Logger receives start, drain and xDS lines; nil discards.
	Logger *slog.Logger
}

// CaptureConfig configures the transparent listener.
type CaptureConfig struct {
	Enabled bool
	// SniffTimeout and DialTimeout: see capture.Config.
	SniffTimeout, DialTimeout time.Duration
}

// Sidecar is one running data plane. Run it once.
type Sidecar struct {
	cfg   Config
	proxy *proxy.Proxy
	xds   *xdsclient.Client      // nil without a control plane
	load  *loadreport.Aggregator // nil without a control plane
}

// New checks cfg and builds the sidecar. It starts nothing and opens no
// socket.
func New(cfg Config) (*Sidecar, error) {
	if cfg.Models == nil && cfg.XDS.Server == "" {
		return nil, errors.New("sidecar: no configuration: give a config file (-config) or a control plane (-xds)")
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
		if cfg.Capture.Enabled {
			cfg.Listen = DefaultCaptureListen
		}
	}
	if cfg.Admin == "" {
		cfg.Admin = DefaultAdmin
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Sidecar{cfg: cfg}
	pc := cfg.Proxy
	pc.Models, pc.Source, pc.Logger = cfg.Models, cfg.Source, cfg.Logger
	if cfg.XDS.Server != "" {
		if cfg.XDS.Logger == nil {
			cfg.XDS.Logger = cfg.Logger
		}
		var err error
		if s.xds, err = xdsclient.New(cfg.XDS); err != nil {
			return nil, err
		}
		// The control plane sets the weights from the load this sidecar
		// reports over LRS, so weights: adaptive is allowed.
		s.load = loadreport.New()
		pc.Source = "xds " + cfg.XDS.Server
		pc.XDS = func() any { return s.xds.Versions() }
		pc.Load, pc.AllowAdaptive = s.load, true
	}
	var err error
	if s.proxy, err = proxy.New(pc); err != nil {
		return nil, err
	}
	return s, nil
}

// Run serves until ctx ends, then drains in order (see the package
// comment) and returns nil, or the drain's error. It returns early with an
// error when a listener cannot be opened or fails.
func (s *Sidecar) Run(ctx context.Context) error {
	defer s.proxy.Close()
	ln, aln, err := s.listen()
	if err != nil {
		return err
	}
	s.proxy.Probe(ctx)
	s.setMemoryLimit(s.cfg.Models) // memory.go
	srv, admin := s.proxy.NewServer(), s.proxy.NewAdminServer()
	s.limitConns(srv)
	cl, router, err := s.capture(ln, srv)
	if err != nil {
		closeAll(ln, aln)
		return err
	}
	if cl != nil {
		ln = cl // it makes its HTTP connections rawconn's itself
		defer router.Close()
	} else {
		ln = rawconn.Listener{Listener: ln}
	}
	g := s.splitGRPC(ln)
	served := make(chan error, 3)
	fast := s.proxy.FastPath(g.split.HTTP1(), srv)
	if router != nil { // a captured request not for a model is the router's
		fast.Serves = router.ServesConn
	}
	go func() { served <- srv.Serve(fast) }()
	g.serve(served)
	go func() { served <- admin.Serve(aln) }()

	// The background work stops before the lanes drain, so that no
	// configuration change races the drain.
	bg, stopBG := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	stop := func() { stopBG(); wg.Wait() }
	wg.Go(func() { s.proxy.RunProbes(bg) })
	if s.xds != nil {
		wg.Go(func() { _ = s.xds.RunLRS(bg, s.load) })
		wg.Go(func() {
			if err := s.xds.Run(bg, s.apply(bg)); err != nil {
				s.cfg.Logger.Error("xds client stopped", "err", err)
			}
		})
	}
	s.cfg.Logger.Info("sidecar serving", "listen", ln.Addr().String(), "admin", aln.Addr().String(), "config", s.source())

	select {
	case err := <-served:
		stop()
		g.stop()
		_ = srv.Shutdown()
		_ = admin.Shutdown()
		return fmt.Errorf("sidecar: listener failed: %w", err)
	case <-ctx.Done():
	}
	return s.drain(srv, admin, cl, fast, g, stop)
}

// drain is steps 1-5 of the package comment.
func (s *Sidecar) drain(srv, admin *fasthttp.Server, cl *capture.Listener, fast *proxy.FastListener, g *grpcListener, stopBackground func()) error {
	s.cfg.Logger.Info("draining", "timeout", s.cfg.DrainTimeout)
	s.proxy.StartDrain()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
	defer cancel()
	var errs []error
	errs = append(errs, g.drain(ctx), srv.ShutdownWithContext(ctx))
	errs = append(errs, fast.Wait(ctx))
	if cl != nil {
		errs = append(errs, cl.Shutdown(ctx))
	}
	stopBackground()
	errs = append(errs, s.proxy.Drain(ctx))
	errs = append(errs, admin.ShutdownWithContext(ctx))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sidecar: drain: %w", err)
	}
	s.cfg.Logger.Info("stopped")
	return nil
}

// apply is the xDS client's ApplyFunc: swap the configuration in, then
// probe its endpoints so that new ones are known before they matter.
func (s *Sidecar) apply(ctx context.Context) xdsclient.ApplyFunc {
	return func(c *config.Config, _ xdsclient.Versions) error {
		if err := s.proxy.Apply(c); err != nil {
			return err
		}
		s.setMemoryLimit(c)
		s.proxy.Probe(ctx)
		return nil
	}
}

// limitConns raises the file-descriptor limit to its hard limit and, unless
// Proxy.MaxConns is set, keeps the inference listener's connections below
// it (proxy.ConnLimit).
func (s *Sidecar) limitConns(srv *fasthttp.Server) {
	nofile, err := raiseNoFile()
	if err != nil {
		s.cfg.Logger.Warn("file-descriptor limit", "err", err)
	}
	if s.cfg.Proxy.MaxConns == 0 && nofile > 0 {
		srv.Concurrency = proxy.ConnLimit(nofile)
	}
	s.cfg.Logger.Debug("connection limit", "max_conns", srv.Concurrency, "nofile", nofile)
}

// listen opens the listeners Config does not provide.
func (s *Sidecar) listen() (ln, aln net.Listener, err error) {
	ln, aln = s.cfg.Listener, s.cfg.AdminListener
	if ln == nil {
		if ln, err = net.Listen("tcp", s.cfg.Listen); err != nil {
			closeAll(aln)
			return nil, nil, fmt.Errorf("sidecar: inference listener: %w", err)
		}
	}
	if aln == nil {
		if aln, err = net.Listen("tcp", s.cfg.Admin); err != nil {
			closeAll(ln)
			return nil, nil, fmt.Errorf("sidecar: admin listener: %w", err)
		}
	}
	return ln, aln, nil
}

func (s *Sidecar) source() string {
	if s.xds != nil {
		return "xds " + s.cfg.XDS.Server
	}
	return s.cfg.Source
}

func closeAll(ls ...net.Listener) {
	for _, l := range ls {
		if l != nil {
			_ = l.Close()
		}
	}
}
