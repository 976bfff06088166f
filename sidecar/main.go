// Command sidecar is batchmesh's data plane: a proxy next to an application
// that gathers its one-row inference calls into dynamic batches for the
// model runtimes.
//
// Usage:
//
//	sidecar -config FILE [-listen 127.0.0.1:15001] [-admin 127.0.0.1:15000]
//	sidecar -xds HOST:PORT [-node-id ID] [-node-cluster NAME] [-zone ZONE]
//	sidecar -capture -config FILE            (transparent: after sidecar redirect)
//	sidecar redirect -ports 8000,8080 [-proxy-port 15001] [-proxy-uid 1337] [-clean] [-dry-run]
//	sidecar wait [-admin 127.0.0.1:15000] [-timeout 2m]   (until /readyz answers 200)
//	sidecar -version
//
// docs/config.md lists every flag; docs/capture.md describes capture and redirect.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/batchmesh/batchmesh/internal/sidecar"
	"github.com/batchmesh/batchmesh/internal/telemetry"
	"github.com/batchmesh/batchmesh/internal/version"
)

func main() {
	args := os.Args[1:]
	var err error
	switch {
	case len(args) > 0 && args[0] == "redirect":
		err = runRedirect(args[1:], os.Stdout, os.Stderr)
	case len(args) > 0 && args[0] == "wait":
		err = runWait(context.Background(), args[1:], os.Stderr)
	case version.Requested(args):
		fmt.Println("sidecar", version.String())
	default:
		err = run(args, os.Stderr)
	}
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
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
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
	cfg.Proxy.Meter, cfg.Proxy.Metrics = metrics.Meter("batchmesh/sidecar"), metrics.Handler()
	if tracing.Exporter != "none" {
		cfg.Proxy.Tracer, cfg.Proxy.Propagator = tracing.Provider.Tracer("batchmesh/sidecar"), tracing.Propagator
		cfg.Logger.Info("tracing on", "exporter", tracing.Exporter)
	}
	s, err := sidecar.New(cfg)
	if err != nil {
		return err
	}
	return s.Run(ctx)
}
