package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/batchmesh/batchmesh/internal/grpcapi"
	"github.com/batchmesh/batchmesh/internal/loadgen"
)

// ProtocolGRPC is -protocol grpc: ModelInfer calls with raw FP32 inputs to
// a grpc://host:port -target (the sidecar's inference port, or a runtime's
// gRPC port).
const ProtocolGRPC = "grpc"

// clientsPerConn is how many closed-loop gRPC clients share one HTTP/2
// connection (as many real callers share a channel).
const clientsPerConn = 16

// grpcRun is one closed-loop gRPC load.
type grpcRun struct {
	cfg      loadgen.Config
	bodies   []*grpcapi.ModelInferRequest
	deadline time.Time

	mu       sync.Mutex
	lat      []time.Duration
	requests int64
	errors   int64
	byCode   map[int]int64
	first    string
	batch    float64 // sum of x-batchmesh-batch-size
	batched  int64
	cache    map[string]int64
}

// loadGRPC runs cfg's closed-loop load as gRPC ModelInfer calls against
// target, printing progress each second under name, and returns the
// result in loadgen's form (ByStatus counts gRPC codes; 0 is OK).
func loadGRPC(ctx context.Context, cfg loadgen.Config, target, name string, width int, stderr io.Writer) (loadgen.Result, error) {
	addr, err := grpcTarget(target)
	if err != nil {
		return loadgen.Result{}, usageError{err}
	}
	switch {
	case cfg.Model == "":
		return loadgen.Result{}, usageError{errors.New("-protocol grpc needs -model: the model_name of each call")}
	case cfg.Datatype != "FP32":
		return loadgen.Result{}, usageError{fmt.Errorf("-protocol grpc sends FP32 only, not -datatype %s", cfg.Datatype)}
	case cfg.Repeat != 0 || cfg.RowsMax > cfg.Rows || len(cfg.Headers) > 0:
		return loadgen.Result{}, usageError{errors.New("-protocol grpc does not support -repeat, -rows-max or -header")}
	case cfg.Duration <= 0:
		return loadgen.Result{}, usageError{errors.New("-protocol grpc needs -duration")}
	}
	cfg.Clients, cfg.Rows, cfg.Cols = max(cfg.Clients, 1), max(cfg.Rows, 1), max(cfg.Cols, 1)
	conns := make([]grpcapi.GRPCInferenceServiceClient, (cfg.Clients+clientsPerConn-1)/clientsPerConn)
	for i := range conns {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return loadgen.Result{}, err
		}
		defer cc.Close()
		conns[i] = grpcapi.NewGRPCInferenceServiceClient(cc)
	}
	r := &grpcRun{cfg: cfg, bodies: grpcBodies(cfg), byCode: map[int]int64{}, cache: map[string]int64{}}
	if _, err := conns[0].ServerLive(ctx, &grpcapi.ServerLiveRequest{}); err != nil {
		return loadgen.Result{}, fmt.Errorf("%w: %s: %w", loadgen.ErrUnreachable, addr, err)
	}
	start := time.Now()
	r.deadline = start.Add(cfg.Duration)
	var wg sync.WaitGroup
	for i := range cfg.Clients {
		wg.Go(func() { r.loop(ctx, conns[i/clientsPerConn], i) })
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	r.progress(start, done, name, width, stderr)
	return r.result(time.Since(start)), ctx.Err()
}

// grpcTarget accepts grpc://host:port or host:port.
func grpcTarget(target string) (string, error) {
	addr := strings.TrimPrefix(target, "grpc://")
	if strings.Contains(addr, "/") || !strings.Contains(addr, ":") {
		return "", fmt.Errorf("-protocol grpc: target %q: want grpc://host:port", target)
	}
	return addr, nil
}

// grpcBodies makes the distinct requests: pseudo-random FP32 rows.
func grpcBodies(cfg loadgen.Config) []*grpcapi.ModelInferRequest {
	n := cfg.Distinct
	if n <= 0 {
		n = 1024
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 1))
	out := make([]*grpcapi.ModelInferRequest, n)
	for i := range out {
		raw := make([]byte, 0, 4*cfg.Rows*cfg.Cols)
		for range cfg.Rows * cfg.Cols {
			raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(rng.Float32()*2-1))
		}
		out[i] = &grpcapi.ModelInferRequest{
			ModelName:        cfg.Model,
			Inputs:           []*grpcapi.ModelInferRequest_InferInputTensor{{Name: cfg.Input, Datatype: "FP32", Shape: []int64{int64(cfg.Rows), int64(cfg.Cols)}}},
			RawInputContents: [][]byte{raw},
		}
	}
	return out
}

// loop is one closed-loop client: call, wait, call again until the
// deadline.
func (r *grpcRun) loop(ctx context.Context, c grpcapi.GRPCInferenceServiceClient, id int) {
	for seq := id; time.Now().Before(r.deadline) && ctx.Err() == nil; seq += r.cfg.Clients {
		cctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
		var md metadata.MD
		t0 := time.Now()
		_, err := c.ModelInfer(cctx, r.bodies[seq%len(r.bodies)], grpc.Header(&md))
		d := time.Since(t0)
		cancel()
		r.record(d, err, md)
	}
}

func (r *grpcRun) record(d time.Duration, err error, md metadata.MD) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests++
	code := int(status.Code(err))
	r.byCode[code]++
	if err != nil {
		r.errors++
		if r.first == "" {
			r.first = err.Error()
		}
		return
	}
	r.lat = append(r.lat, d)
	if v := md.Get("x-batchmesh-batch-size"); len(v) > 0 {
		if n, perr := strconv.Atoi(v[0]); perr == nil {
			r.batch += float64(n)
			r.batched++
		}
	}
	if v := md.Get("x-batchmesh-cache"); len(v) > 0 {
		r.cache[v[0]]++
	}
}

// progress prints a line each second until done.
func (r *grpcRun) progress(start time.Time, done <-chan struct{}, name string, width int, stderr io.Writer) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last := 0
	for {
		select {
		case <-done:
			return
		case <-tick.C:
		}
		r.mu.Lock()
		n, errs := len(r.lat)-last, r.errors
		last = len(r.lat)
		r.mu.Unlock()
		_, _ = fmt.Fprintf(stderr, "%-*s %4.0fs %10.1f rows/s  %d errors\n", width, name, time.Since(start).Seconds(), float64(n*r.cfg.Rows), errs)
	}
}

func (r *grpcRun) result(elapsed time.Duration) loadgen.Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	slices.Sort(r.lat)
	pct := func(p float64) time.Duration {
		if len(r.lat) == 0 {
			return 0
		}
		return r.lat[min(len(r.lat)-1, int(p*float64(len(r.lat))))]
	}
	ok := int64(len(r.lat))
	res := loadgen.Result{
		Requests: r.requests, Rows: ok * int64(r.cfg.Rows), Errors: r.errors, ByStatus: r.byCode, FirstError: r.first,
		Elapsed: elapsed, RowsPerSec: float64(ok*int64(r.cfg.Rows)) / elapsed.Seconds(), ReqPerSec: float64(ok) / elapsed.Seconds(),
		P50: pct(0.50), P90: pct(0.90), P99: pct(0.99), CacheResults: r.cache,
	}
	if len(r.lat) > 0 {
		res.Max = r.lat[len(r.lat)-1]
	}
	if r.batched > 0 {
		res.MeanBatchRows = r.batch / float64(r.batched)
	}
	return res
}
