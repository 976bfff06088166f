// Command sidecar is batchmesh's data plane: a proxy next to an application
// that gathers its one-row inference calls into dynamic batches for the
// model runtimes.
//
// Usage:
//
//	sidecar -config FILE [-listen 127.0.0.1:15001] [-admin 127.0.0.1:15000]
//
// See the README for every flag.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/loadreport"
	"github.com/batchmesh/batchmesh/internal/proxy"
	"github.com/batchmesh/batchmesh/internal/telemetry"
	"github.com/batchmesh/batchmesh/internal/xdsclient"
)

func main() {
	err := run(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sidecar:", err)
		os.Exit(2)
	}
}

func run(args []string, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return runCtx(ctx, args, stderr)
}

// runCtx runs the sidecar until ctx ends (SIGTERM in main), then drains.
func runCtx(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("sidecar", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:15001", "inference listener the application calls")
	admin := fs.String("admin", "127.0.0.1:15000", "admin listener: /healthz /readyz /metrics /config_dump /clusters POST /drain")
	cfgPath := fs.String("config", "", "YAML file of models, versions, endpoints, batching and cache (required unless -xds)")
	xdsAddr := fs.String("xds", "", "control plane ADS address host:port; its configuration replaces -config's when it arrives")
	nodeID := fs.String("node-id", "", "xDS node id (default: the host name)")
	nodeCluster := fs.String("node-cluster", "batchmesh-sidecars", "xDS node cluster: sidecars of one cluster share the control plane's snapshot")
	zone := fs.String("zone", "", "this sidecar's zone: sent to the control plane, and endpoints of this zone are preferred while they have capacity")
	balancerPolicy := fs.String("balancer", "p2c", "endpoint policy: p2c (weighted least-request), wrr (weighted round robin) or ring_hash (affinity on X-Batchmesh-Tenant, bounded load)")
	maxBody := fs.String("max-body", "64MiB", "largest application request body; more is a 413")
	probe := fs.Duration("probe-interval", time.Second, "how often every endpoint's readiness is probed")
	drain := fs.Duration("drain-timeout", 30*time.Second, "on SIGTERM, how long to wait for queued and in-flight requests")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *cfgPath == "" && *xdsAddr == "" {
		return errors.New("-config FILE or -xds ADDR is required (the YAML schema is in the README)")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	bodyLimit, err := config.ParseSize(*maxBody)
	if err != nil || bodyLimit <= 0 || bodyLimit > 1<<31-1 {
		return fmt.Errorf("-max-body %q: want a positive size below 2GiB, like 64MiB", *maxBody)
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	var cfg *config.Config
	if *cfgPath != "" {
		if cfg, err = config.Load(*cfgPath); err != nil {
			return err
		}
	}
	var xc *xdsclient.Client
	if *xdsAddr != "" {
		id := *nodeID
		if id == "" {
			id, _ = os.Hostname()
		}
		xc, err = xdsclient.New(xdsclient.Config{Server: *xdsAddr, NodeID: id, NodeCluster: *nodeCluster, Zone: *zone, Logger: logger})
		if err != nil {
			return err
		}
	}
	metrics, err := telemetry.NewMetrics()
	if err != nil {
		return err
	}
	defer metrics.Close(context.Background())
	tracing, err := telemetry.NewTracing(context.Background(), "batchmesh-sidecar")
	if err != nil {
		return err
	}
	defer tracing.Close(context.Background())
	pcfg := proxy.Config{
		Models: cfg, Source: *cfgPath, MaxBodyBytes: int(bodyLimit), ProbeInterval: *probe,
		Meter: metrics.Meter("batchmesh/sidecar"), Metrics: metrics.Handler(), Logger: logger,
		Balancer: *balancerPolicy, Zone: *zone,
	}
	var load *loadreport.Aggregator
	if xc != nil {
		pcfg.Source = "xds " + *xdsAddr
		pcfg.XDS = func() any { return xc.Versions() }
		// The control plane sets the weights from the load this sidecar
		// reports over LRS, so weights: adaptive is allowed.
		load = loadreport.New()
		pcfg.Load, pcfg.AllowAdaptive = load, true
	}
	if tracing.Exporter != "none" {
		pcfg.Tracer, pcfg.Propagator = tracing.Provider.Tracer("batchmesh/sidecar"), tracing.Propagator
		logger.Info("tracing on", "exporter", tracing.Exporter)
	}
	p, err := proxy.New(pcfg)
	if err != nil {
		return err
	}
	defer p.Close()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	aln, err := net.Listen("tcp", *admin)
	if err != nil {
		ln.Close()
		return err
	}
	p.Probe(ctx)

	srv, adminSrv := p.NewServer(), p.NewAdminServer()
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	go func() { errc <- adminSrv.Serve(aln) }()
	probeCtx, stopProbe := context.WithCancel(context.Background())
	probed := make(chan struct{})
	go func() { defer close(probed); _ = p.Run(probeCtx) }()
	xdsDone, lrsDone := make(chan struct{}), make(chan struct{})
	if xc != nil {
		go func() {
			defer close(lrsDone)
			_ = xc.RunLRS(probeCtx, load)
		}()
		go func() {
			defer close(xdsDone)
			err := xc.Run(probeCtx, func(c *config.Config, _ xdsclient.Versions) error {
				if err := p.Apply(c); err != nil {
					return err
				}
				p.Probe(probeCtx)
				return nil
			})
			if err != nil {
				logger.Error("xds client stopped", "err", err)
			}
		}()
	} else {
		close(xdsDone)
		close(lrsDone)
	}
	logger.Info("sidecar serving", "listen", ln.Addr().String(), "admin", aln.Addr().String(), "config", pcfg.Source)

	select {
	case err := <-errc:
		stopProbe()
		<-probed
		<-xdsDone
		<-lrsDone
		return err
	case <-ctx.Done():
	}
	// SIGTERM: not ready first, stop accepting, answer everything queued and
	// in flight, then exit 0.
	logger.Info("draining", "timeout", *drain)
	p.StartDrain()
	dctx, cancel := context.WithTimeout(context.Background(), *drain)
	defer cancel()
	var errs []error
	errs = append(errs, srv.ShutdownWithContext(dctx))
	stopProbe() // no configuration change while draining
	<-xdsDone
	<-lrsDone
	errs = append(errs, p.Drain(dctx))
	<-probed
	errs = append(errs, adminSrv.ShutdownWithContext(dctx))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	logger.Info("stopped")
	return nil
}
