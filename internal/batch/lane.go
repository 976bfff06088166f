package batch

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// Priority orders queues and shedding: high rows go first, low rows are
// shed first.
type Priority uint8

// The priorities of the X-Batchmesh-Priority header.
const (
	PriorityHigh Priority = iota
	PriorityNormal
	PriorityLow
	numPriorities
)

// ParsePriority parses a header value; "" is normal.
func ParsePriority(s string) (Priority, error) {
	switch s {
	case "high":
		return PriorityHigh, nil
	case "", "normal":
		return PriorityNormal, nil
	case "low":
		return PriorityLow, nil
	}
	return 0, inference.Errorf(inference.KindInvalid, "batch: priority %q is not one of high, normal, low", s)
}

func (p Priority) String() string {
	return [...]string{"high", "normal", "low"}[p]
}

// Caller sends one batch to one endpoint. It is the next stage's interface,
// implemented by the proxy over the upstream client. ctx carries the batch's
// span (to propagate upstream as traceparent) and the batch's own deadline (the latest of its requests': one caller's short deadline
// fails only its own request, never the batch). The returned tensors are owned
// by the lane. Errors are *inference.Error: KindInvalid (the runtime refused
// the input: the lane bisects), KindUnavailable or KindUpstream (the lane
// retries elsewhere), anything else fails the batch.
type Caller interface {
	Call(ctx context.Context, endpoint string, req *inference.Request) ([]inference.Tensor, error)
}

// Picker chooses the endpoint for a batch among the eligible ones; it
// returns an index into loads, or -1 when none is eligible. It must not
// block. The proxy plugs in the balancer package's.
type Picker interface {
	Pick(loads []inference.EndpointLoad) int
}

// KeyPicker is a Picker that hashes an affinity key (the lane uses
// PickKey when its Picker has it), e.g. a ring hash keyed on the tenant.
type KeyPicker interface {
	PickKey(key string, loads []inference.EndpointLoad) int
}

// leastLoaded is the default Picker: the eligible endpoint with the fewest
// in-flight rows per unit of weight, the first on ties.
type leastLoaded struct{}

func (leastLoaded) Pick(loads []inference.EndpointLoad) int {
	best, bestCost := -1, 0.0
	for i, l := range loads {
		if !l.Eligible {
			continue
		}
		cost := float64(l.InFlightRows+1) / float64(max(l.Weight, 1))
		if best < 0 || cost < bestCost {
			best, bestCost = i, cost
		}
	}
	return best
}

// HealthReporter learns of the endpoints a batch could not reach. It is
// called without the lane's lock held and may call back into the lane.
type HealthReporter interface {
	ReportFailure(address string, err error)
}

// Endpoint is one model runtime of a lane.
type Endpoint struct {
	Address string
	Weight  int // share in the balancer; 0 means 1
	Slots   int // batches the runtime computes at once; 0 means 1
}

// Config configures a Lane. Zero values are the defaults noted.
type Config struct {
	Model, Version string
	MaxBatchSize   int           // rows per batch; default 64
	MaxQueueDelay  time.Duration // see the package comment; 0 sends in-transit batches as soon as a batch can run
	MaxQueueSize   int           // queued rows before 429; default 4096
	Endpoints      []Endpoint    // at least one
	Caller         Caller        // required
	Meter          metric.Meter  // nil records nothing
	Picker         Picker        // nil picks the least loaded endpoint
	Tracer         trace.Tracer  // the batch spans; nil traces nothing
	// Timeout bounds a request whose context has no deadline; default 30s.
	Timeout time.Duration
	// Health, when set, is told of every endpoint a batch found unreachable
	// (the lane stops sending there at once); it owns the endpoint's health
	// from then on and turns it back on with SetHealthy.
	Health HealthReporter
	// AdaptiveSlots lets Observe move each endpoint's concurrency limit
	// between 1 and its Slots from the runtime's reported queue (weights:
	// adaptive); without it the declared Slots are the limit.
	AdaptiveSlots bool
	// Policy decides when a batch that could wait is sent (policy.go);
	// "" is PolicyTransit.
	Policy Policy
	// Hedge, RetryBudget and Breakers: see their types (hedge.go,
	// budget.go, breaker.go). The zero values are the defaults.
	Hedge       Hedge
	RetryBudget RetryBudget
	Breakers    Breakers
}

// Request is one caller's rows as the lane sees them. Inputs must be valid
// and own their data (the lane reads them until Submit returns and from
// batches it sends in the meantime); every input has Rows rows in dim 0.
type Request struct {
	Inputs     []inference.Tensor
	Outputs    []inference.OutputSpec
	Parameters inference.Parameters // sent upstream with the batch (the group key must cover them)
	Rows       int
	Group      string // requests batch together only with the same Group
	Priority   Priority
	// Affinity is the key a KeyPicker hashes (the tenant). When the lane's
	// picker is a KeyPicker, requests batch only with the same Affinity too,
	// since a batch goes to one endpoint; other pickers ignore it.
	Affinity string
}

// Result is a request's answer: its rows of every output, in order.
type Result struct {
	Outputs   []inference.Tensor
	BatchRows int    // rows in the upstream batch of the request's last piece
	Endpoint  string // the endpoint that answered its last piece
	QueueWait time.Duration
}

// Lane batches the requests of one model version. Build it with NewLane;
// Submit may be called from any goroutine. Close drains it.
type Lane struct {
	cfg Config
	m   laneMetrics

	mu      sync.Mutex
	groups  map[string]*group
	queued  int // rows queued, over all groups
	eps     []*endpoint
	loads   []inference.EndpointLoad // scratch for the picker
	timer   *time.Timer
	timerAt time.Time
	closed  bool
	running int // batches in flight
	retries int // hedges and retries in flight (the retry budget's count)
	open    [len(breakerNames)]bool
	idle    chan struct{} // closed and renewed when running and queued reach 0 while closed
	echo    echo          // the cohort policy's view of returning callers
	workers *workers      // run batches and attempts (workers.go)
}

type endpoint struct {
	Endpoint
	healthy  bool
	limit    int         // batches it may run at once: Slots, or less under AdaptiveSlots
	limitAt  time.Time   // of the last change of limit
	busy     int         // batches in flight
	rows     int         // rows in flight
	starts   []time.Time // start of each batch in flight
	latency  time.Duration
	cost     costModel   // the cohort policy's fit of latency to rows
	freedAt  time.Time   // when a batch last ended
	tail     latencyTail // for the hedge delay
	batches  int64
	failures int64
}

type laneMetrics struct {
	attrs      metric.MeasurementOption
	queueDepth metric.Int64UpDownCounter
	queueWait  metric.Float64Histogram
	batchRows  metric.Int64Histogram
	shed       metric.Int64Counter
	shedAttrs  map[string]metric.MeasurementOption

	hedges        metric.Int64Counter
	hedgeAttrs    map[string]metric.MeasurementOption
	retryOverflow metric.Int64Counter
	circuitOpen   metric.Int64Gauge
	breakerAttrs  [len(breakerNames)]metric.MeasurementOption
}

// NewLane validates cfg and builds a lane. It starts no goroutine: batches
// run in goroutines started by Submit's dispatch and owned by the lane until
// they finish (Close waits for them).
func NewLane(cfg Config) (*Lane, error) {
	if cfg.MaxBatchSize == 0 {
		cfg.MaxBatchSize = 64
	}
	if cfg.MaxQueueSize == 0 {
		cfg.MaxQueueSize = 4096
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	cfg.Hedge, cfg.RetryBudget = cfg.Hedge.withDefaults(), cfg.RetryBudget.withDefaults()
	if cfg.MaxBatchSize < 0 || cfg.MaxQueueSize < 0 || cfg.MaxQueueDelay < 0 {
		return nil, fmt.Errorf("batch: model %q: negative batch size, queue size or delay", cfg.Model)
	}
	var err error
	if cfg.Policy, err = ParsePolicy(string(cfg.Policy)); err != nil {
		return nil, err
	}
	if len(cfg.Endpoints) == 0 {
		return nil, fmt.Errorf("batch: model %q version %q has no endpoints", cfg.Model, cfg.Version)
	}
	if cfg.Caller == nil {
		return nil, fmt.Errorf("batch: model %q: no caller", cfg.Model)
	}
	if cfg.Meter == nil {
		cfg.Meter = noop.NewMeterProvider().Meter("")
	}
	l := &Lane{
		cfg:     cfg,
		groups:  make(map[string]*group),
		idle:    make(chan struct{}),
		workers: newWorkers(),
	}
	for _, e := range cfg.Endpoints {
		if e.Weight <= 0 {
			e.Weight = 1
		}
		if e.Slots <= 0 {
			e.Slots = 1
		}
		l.eps = append(l.eps, &endpoint{Endpoint: e, healthy: true, limit: e.Slots})
	}
	l.loads = make([]inference.EndpointLoad, len(l.eps))
	if l.cfg.Tracer == nil {
		l.cfg.Tracer = tracenoop.NewTracerProvider().Tracer("")
	}
	if l.cfg.Picker == nil {
		l.cfg.Picker = leastLoaded{}
	}
	if l.m, err = newLaneMetrics(cfg.Meter, cfg.Model); err != nil {
		return nil, err
	}
	// Export the model's series at zero from the start, so that dashboards
	// and alerts see 0 rather than no data before the first shed.
	l.m.queueDepth.Add(context.Background(), 0, l.m.attrs)
	for _, o := range l.m.shedAttrs {
		l.m.shed.Add(context.Background(), 0, o)
	}
	l.m.zero()
	return l, nil
}

func newLaneMetrics(m metric.Meter, model string) (laneMetrics, error) {
	lm := laneMetrics{
		attrs:     metric.WithAttributeSet(attribute.NewSet(attribute.String("model", model))),
		shedAttrs: map[string]metric.MeasurementOption{},
	}
	for _, reason := range []string{shedQueueFull, shedDeadline, shedPriority} {
		lm.shedAttrs[reason] = metric.WithAttributeSet(attribute.NewSet(
			attribute.String("model", model), attribute.String("reason", reason)))
	}
	var errs [4]error
	lm.queueDepth, errs[0] = m.Int64UpDownCounter("batchmesh_queue_depth",
		metric.WithDescription("Rows waiting to be batched: the autoscaling signal."))
	lm.queueWait, errs[1] = m.Float64Histogram("batchmesh_queue_wait_seconds",
		metric.WithDescription("Time from a request's arrival to the dispatch of its last rows."), metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5))
	lm.batchRows, errs[2] = m.Int64Histogram("batchmesh_batch_rows",
		metric.WithDescription("Rows per upstream batch."),
		metric.WithExplicitBucketBoundaries(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
	lm.shed, errs[3] = m.Int64Counter("batchmesh_shed",
		metric.WithDescription("Requests refused before dispatch, by reason."))
	for _, err := range errs {
		if err != nil {
			return lm, fmt.Errorf("batch: metrics: %w", err)
		}
	}
	return lm, newResilienceMetrics(m, model, &lm)
}

// Shed reasons, the values of batchmesh_shed_total's reason label.
const (
	shedQueueFull = "queue_full"
	shedDeadline  = "deadline"
	shedPriority  = "priority"
)

// RetryAfter is the hint a 429 from the lane carries.
func (l *Lane) RetryAfter() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	lat := l.bestLatencyLocked()
	if lat <= 0 {
		return time.Second
	}
	batches := l.queued/l.cfg.MaxBatchSize + 1
	d := time.Duration(batches) * lat / time.Duration(l.slotsLocked())
	return max(d, time.Second)
}

// Close stops admitting requests (Submit fails with 503) and waits until
// every queued and in-flight request has its answer, or ctx ends.
func (l *Lane) Close(ctx context.Context) error {
	l.mu.Lock()
	l.closed = true
	if l.queued == 0 && l.running == 0 {
		l.mu.Unlock()
		l.workers.stop()
		return nil
	}
	idle := l.idle
	l.mu.Unlock()
	defer l.workers.stop()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("batch: model %q: drain: %w", l.cfg.Model, ctx.Err())
	}
}

// noteIdleLocked wakes Close when the lane has drained.
func (l *Lane) noteIdleLocked() {
	if l.closed && l.queued == 0 && l.running == 0 {
		select {
		case <-l.idle:
		default:
			close(l.idle)
		}
	}
}

func (l *Lane) slotsLocked() int {
	n := 0
	for _, e := range l.eps {
		if e.healthy {
			n += e.Slots
		}
	}
	return max(n, 1)
}

// bestLatencyLocked is the lowest recent batch latency of a healthy
// endpoint, or 0 when none is known yet.
func (l *Lane) bestLatencyLocked() time.Duration {
	var best time.Duration
	for _, e := range l.eps {
		if e.healthy && e.latency > 0 && (best == 0 || e.latency < best) {
			best = e.latency
		}
	}
	return best
}

func itoa(n int) string { return strconv.Itoa(n) }
