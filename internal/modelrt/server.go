package modelrt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// Config configures a Server. The zero value of every field but Models is a
// documented default.
type Config struct {
	// Models served, by name. At least one.
	Models map[string]Model
	// Version is the version every model reports and accepts ("1" if empty).
	Version string
	// Slots is how many batches run at once across all models (default 1,
	// like one GPU stream). Batches beyond it wait in arrival order.
	Slots int
	// MaxBatch is the most rows one request may carry (default 256).
	MaxBatch int
	// MaxQueue, when above 0, bounds the batches waiting for a slot: one
	// more is refused with 429 ("Model is overloaded", as Hugging Face
	// text-embeddings-inference says), so that callers back off.
	MaxQueue int
	// MaxBodyBytes bounds a request body (default 64 MiB); over it, 413.
	MaxBodyBytes int
	// Meter records model_* metrics; nil records nothing.
	Meter metric.Meter
	// Metrics, when set, is served at GET /metrics.
	Metrics http.Handler
	// Logger logs lifecycle events; nil discards them.
	Logger *slog.Logger
	// Tracer, when set, records a server span per inference that continues
	// the caller's trace (W3C traceparent, read by Propagator).
	Tracer     trace.Tracer
	Propagator propagation.TextMapPropagator
}

// Server is the reference model runtime: the Open Inference Protocol v2 over
// HTTP in front of a set of Models. Build it with NewServer, then Serve; it
// is ready once Warm has succeeded. Its methods are safe for concurrent use.
type Server struct {
	cfg     Config
	names   []string
	http    *fasthttp.Server
	slots   chan struct{}
	ready   atomic.Bool
	closing atomic.Bool
	load    loadTracker
	m       instruments
	attrs   map[string]metric.MeasurementOption // per model name
	metrics fasthttp.RequestHandler
}

type instruments struct {
	queueDepth metric.Int64UpDownCounter
	batchRows  metric.Int64Histogram
	duration   metric.Float64Histogram
	rows       metric.Int64Counter
}

// NewServer validates cfg and builds a server. It starts nothing.
func NewServer(cfg Config) (*Server, error) {
	if len(cfg.Models) == 0 {
		return nil, errors.New("modelrt: no models configured; give at least one -model NAME=KIND[:ARG]")
	}
	if cfg.Version == "" {
		cfg.Version = "1"
	}
	if cfg.Slots == 0 {
		cfg.Slots = 1
	}
	if cfg.Slots < 0 {
		return nil, fmt.Errorf("modelrt: slots is %d; must be 1 or more", cfg.Slots)
	}
	if cfg.MaxBatch == 0 {
		cfg.MaxBatch = 256
	}
	if cfg.MaxBatch < 0 {
		return nil, fmt.Errorf("modelrt: max batch is %d; must be 1 or more", cfg.MaxBatch)
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 64 << 20
	}
	if cfg.Meter == nil {
		cfg.Meter = noop.NewMeterProvider().Meter("")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Tracer != nil && cfg.Propagator == nil {
		cfg.Propagator = propagation.TraceContext{}
	}
	s := &Server{cfg: cfg, slots: make(chan struct{}, cfg.Slots)}
	s.attrs = make(map[string]metric.MeasurementOption, len(cfg.Models))
	for name, m := range cfg.Models {
		if m == nil {
			return nil, fmt.Errorf("modelrt: model %q is nil", name)
		}
		s.names = append(s.names, name)
		s.attrs[name] = metric.WithAttributeSet(attribute.NewSet(attribute.String("model", name)))
	}
	if cfg.Metrics != nil {
		s.metrics = fasthttpadaptor.NewFastHTTPHandler(cfg.Metrics)
	}
	sort.Strings(s.names)
	s.load.start = time.Now()
	var err error
	if s.m, err = newInstruments(cfg.Meter); err != nil {
		return nil, err
	}
	s.http = &fasthttp.Server{
		Handler:               s.handle,
		ErrorHandler:          s.handleTransportError,
		Name:                  "batchmesh-model",
		MaxRequestBodySize:    cfg.MaxBodyBytes,
		ReadTimeout:           5 * time.Minute,
		IdleTimeout:           2 * time.Minute,
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		CloseOnShutdown:       true,
	}
	return s, nil
}

func newInstruments(m metric.Meter) (instruments, error) {
	var in instruments
	var errs [4]error
	in.queueDepth, errs[0] = m.Int64UpDownCounter("model_queue_depth",
		metric.WithDescription("Batches waiting for a free slot."))
	in.batchRows, errs[1] = m.Int64Histogram("model_batch_rows",
		metric.WithDescription("Rows per batch run by the model."),
		metric.WithExplicitBucketBoundaries(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
	in.duration, errs[2] = m.Float64Histogram("model_inference_duration_seconds",
		metric.WithDescription("Time one batch spent computing."), metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5))
	in.rows, errs[3] = m.Int64Counter("model_rows",
		metric.WithDescription("Rows computed."))
	return in, errors.Join(errs[:]...)
}

// Serve accepts connections on ln until Shutdown. It returns nil after a
// clean shutdown.
func (s *Server) Serve(ln net.Listener) error {
	err := s.http.Serve(ln)
	if s.closing.Load() {
		return nil
	}
	return err
}

// Warm runs one one-row inference through every model and marks the server
// ready when all succeed.
func (s *Server) Warm(ctx context.Context) error {
	for _, name := range s.names {
		m := s.cfg.Models[name]
		req, err := warmupRequest(m)
		if err != nil {
			return fmt.Errorf("modelrt: warm-up of %q: %w", name, err)
		}
		if err := m.Validate(&req); err != nil {
			return fmt.Errorf("modelrt: warm-up of %q: %w", name, err)
		}
		if _, err := m.Infer(ctx, &req); err != nil {
			return fmt.Errorf("modelrt: warm-up of %q: %w", name, err)
		}
	}
	s.ready.Store(true)
	s.cfg.Logger.Info("model runtime ready", "models", s.names, "slots", s.cfg.Slots)
	return nil
}

// warmupRequest builds a one-row request of zeros from a model's inputs.
func warmupRequest(m Model) (inference.Request, error) {
	var req inference.Request
	for _, in := range m.Inputs() {
		dt := inference.FP32
		if in.DataType != "" {
			var ok bool
			if dt, ok = inference.ParseDataType(in.DataType); !ok {
				return req, fmt.Errorf("input %q has unknown datatype %q", in.Name, in.DataType)
			}
		}
		shape := []int64{1}
		if len(in.Shape) > 1 {
			shape = append(shape, in.Shape[1:]...)
		}
		n := int64(1)
		for i := range shape {
			if shape[i] < 0 {
				shape[i] = 1
			}
			n *= shape[i]
		}
		name := in.Name
		if name == "" {
			name = "input"
		}
		t := inference.Tensor{Name: name, DataType: dt, Shape: shape}
		if dt == inference.Bytes {
			t.Data = make([]byte, 4*n)
		} else {
			t.Data = make([]byte, n*int64(dt.Size()))
		}
		req.Inputs = append(req.Inputs, t)
	}
	return req, nil
}

// Ready reports whether the server is warmed up and not shutting down.
func (s *Server) Ready() bool { return s.ready.Load() && !s.closing.Load() }

// Shutdown reports not ready, stops accepting connections and waits for the
// requests in flight to finish, or for ctx to end.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	return s.http.ShutdownWithContext(ctx)
}
