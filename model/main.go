// Command model is batchmesh's reference model runtime: it serves the Open
// Inference Protocol v2 (JSON and the binary tensor extension, and its gRPC
// service on -grpc-listen) in front of
// real small models computed in Go (mlp) and simulated accelerators (sim).
//
// Usage:
//
//	model [-listen ADDR] [-grpc-listen ADDR|off] -model NAME=KIND[:ARG] ... [-slots N] [-max-batch N]
//	model gen-weights -o FILE [-seed N] [-sizes 512,1024,512,16]
//
// docs/config.md lists every flag.
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
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/batchmesh/batchmesh/internal/modelrt"
	"github.com/batchmesh/batchmesh/internal/telemetry"
	"github.com/batchmesh/batchmesh/internal/version"
)

func main() {
	if version.Requested(os.Args[1:]) {
		fmt.Println("model", version.String())
		return
	}
	err := run(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "model:", err)
		os.Exit(2)
	}
}

// modelFlags collects repeated -model NAME=KIND[:ARG] values.
type modelFlags map[string]modelrt.Model

func (m modelFlags) String() string { return "" }

func (m modelFlags) Set(v string) error {
	name, model, err := modelrt.ParseModelFlag(v)
	if err != nil {
		return err
	}
	if _, dup := m[name]; dup {
		return fmt.Errorf("model %q given twice", name)
	}
	m[name] = model
	return nil
}

func run(args []string, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "gen-weights" {
		return genWeights(args[1:], stderr)
	}
	fs := flag.NewFlagSet("model", flag.ContinueOnError)
	fs.SetOutput(stderr)
	models := modelFlags{}
	listen := fs.String("listen", "127.0.0.1:8000", "address to serve the v2 protocol and /metrics on")
	grpcListen := fs.String("grpc-listen", modelrt.DefaultGRPCListen, "address to serve the v2 protocol over gRPC (inference.GRPCInferenceService) on; \"off\" serves none")
	fs.Var(models, "model", "a model to serve, NAME=KIND[:ARG] (repeatable): NAME=mlp:WEIGHTS.safetensors, NAME=sim:h200/bert-base, NAME=sim:linear/5ms+200us, NAME=embed:h200/minilm-l6 (OpenAI /v1/embeddings)")
	slots := fs.Int("slots", 1, "batches computed at once (one per simulated GPU stream); more wait in arrival order")
	maxBatch := fs.Int("max-batch", 256, "most rows one request may carry; more is a 400")
	maxBody := fs.Int("max-body", 64<<20, "largest request body in bytes; more is a 413")
	fs.Bool("version", false, "print the version and exit")
	maxQueue := fs.Int("max-queue", 0, "batches that may wait for a slot; one more is a 429 (0: no bound)")
	drain := fs.Duration("drain-timeout", 30*time.Second, "on SIGTERM, how long to wait for requests in flight")
	modelVersion := fs.String("model-version", "1", "the version every model reports and serves (/v2/models/{m}/versions/{v}/...)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if v := *modelVersion; v == "" || v == "." || v == ".." || strings.ContainsAny(v, "/|? #%") {
		return fmt.Errorf("-model-version %q: must be a non-empty URL path segment (no / | ? # %% or space, not . or ..)", v)
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	metrics, err := telemetry.NewMetrics()
	if err != nil {
		return err
	}
	tracing, err := telemetry.NewTracing(context.Background(), "batchmesh-model")
	if err != nil {
		return err
	}
	defer tracing.Close(context.Background())
	mcfg := modelrt.Config{
		Models: models, Slots: *slots, MaxBatch: *maxBatch, MaxBodyBytes: *maxBody, MaxQueue: *maxQueue,
		Version: *modelVersion,
		Meter:   metrics.Meter("batchmesh/model"), Metrics: metrics.Handler(), Logger: logger,
	}
	if tracing.Exporter != "none" {
		mcfg.Tracer, mcfg.Propagator = tracing.Provider.Tracer("batchmesh/model"), tracing.Propagator
		logger.Info("tracing on", "exporter", tracing.Exporter)
	}
	srv, err := modelrt.NewServer(mcfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	logger.Info("listening", "addr", ln.Addr().String())
	gsrv, err := serveGRPC(srv, *grpcListen, logger)
	if err != nil {
		_ = ln.Close()
		return err
	}
	defer gsrv.stop()

	if err := serveUntilSignal(srv, ln, gsrv, *drain, logger); err != nil {
		return err
	}
	_ = metrics.Close(context.Background())
	logger.Info("stopped")
	return nil
}

// serveUntilSignal serves ln until it fails or SIGTERM/SIGINT comes, then
// drains both servers for at most drain.
func serveUntilSignal(srv *modelrt.Server, ln net.Listener, gsrv grpcServer, drain time.Duration, logger *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if err := srv.Warm(ctx); err != nil {
		_ = srv.Shutdown(context.Background())
		return err
	}
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	logger.Info("draining: not ready, finishing requests in flight", "timeout", drain)
	sctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	gsrv.drain(sctx)
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	if err := <-served; err != nil {
		return err
	}
	return nil
}

func genWeights(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("model gen-weights", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "safetensors file to write (required)")
	seed := fs.Int64("seed", 1, "seed of the deterministic weights")
	sizesFlag := fs.String("sizes", joinInts(modelrt.DefaultMLPSizes()), "layer widths, input first, comma-separated; the default is the reference MLP")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("gen-weights: -o FILE is required")
	}
	var sizes []int
	if *sizesFlag != "" {
		for _, f := range strings.Split(*sizesFlag, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= 0 {
				return fmt.Errorf("gen-weights: -sizes: %q is not a positive width", f)
			}
			sizes = append(sizes, n)
		}
	}
	return modelrt.GenerateWeightsFile(*out, *seed, sizes)
}

// joinInts writes v as "1,2,3", the form of -sizes.
func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}
