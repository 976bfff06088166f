package config

import (
	"errors"
	"fmt"
	"os"
	"time"
)

// Allowed values of Config.Weights.
const (
	WeightsStatic   = "static"   // weights come from the file
	WeightsAdaptive = "adaptive" // the control plane sets endpoint weights from load reports
)

// Allowed values of Model.Protocol: the wire protocol the application speaks.
const (
	ProtocolV2        = "v2"        // Open Inference Protocol v2 (KServe, Triton, MLServer)
	ProtocolOpenAI    = "openai"    // OpenAI embeddings
	ProtocolTFServing = "tfserving" // TF Serving / KServe v1 predict
)

// Allowed values of Batching.Policy (the batch package's policies).
const (
	BatchPolicyCohort  = "cohort"  // hold a batch for closed-loop callers about to return
	BatchPolicyTransit = "transit" // one batch in transit per busy endpoint (the earlier rule)
)

// Allowed values of Cache.Granularity.
const (
	GranularityRow     = "row"     // one cache entry per row of a request
	GranularityRequest = "request" // one cache entry per whole request
)

// Allowed values of Cache.Scope.
const (
	ScopeShared = "shared" // every tenant shares the cache entries
	ScopeTenant = "tenant" // entries are keyed by X-Batchmesh-Tenant as well
)

// Defaults that Parse and Load apply to keys absent from a file. Code that
// builds a Config itself starts from these (see DefaultBatching and
// DefaultCache), since Validate checks resolved values.
const (
	DefaultCacheBytes    int64 = 256 << 20
	DefaultWeights             = WeightsStatic
	DefaultProtocol            = ProtocolV2
	DefaultMaxBatchSize        = 64
	DefaultMaxQueueDelay       = 2 * time.Millisecond
	DefaultMaxQueueSize        = 4096
	DefaultBatchPolicy         = BatchPolicyCohort
	DefaultTimeout             = time.Second
	DefaultCacheTTL            = 10 * time.Minute
	DefaultGranularity         = GranularityRow
	DefaultScope               = ScopeShared
	DefaultWeight              = 1
	DefaultSlots               = 1
)

// MaxWeightSum bounds the sum of the weights of a model's versions and the
// sum of the weights of a version's endpoints (and so each weight): xDS
// carries them as uint32.
const MaxWeightSum = 1<<32 - 1

// Config is the whole file: what the sidecar serves in static mode, and what
// the control plane turns into xDS resources.
//
// Parse and Load return resolved values: every key absent from the file
// holds its default, so that consumers never interpret zero values. A Config
// built in code must hold resolved values too; Validate checks them. A
// Config is plain data: it is safe for concurrent reads, and whoever holds
// it owns it.
type Config struct {
	// CacheBytes bounds the memory of the sidecar's row cache, in bytes.
	// Default DefaultCacheBytes (256MiB); 0 means no row cache, which is an
	// error while a model enables its cache. Negative is an error.
	CacheBytes int64

	// Weights is WeightsStatic (the default) or WeightsAdaptive. The zero
	// value "" is invalid.
	Weights string

	// OutlierDetection ejects endpoints whose calls fail in a row. Parse
	// sets DefaultOutlierDetection's values for keys absent from the file; the zero
	// value (a Config built in code, or from xDS) means the defaults too.
	OutlierDetection OutlierDetection

	// Models lists the models served; at least one, with unique names.
	Models []Model
}

// Model is one model that applications call by name.
type Model struct {
	// Name is the name applications use. Required, unique, made of
	// [A-Za-z0-9._-] only, and neither "." nor "..": it is a URL path
	// segment and part of the cluster name batchmesh|{model}|{version}.
	Name string

	// Protocol is ProtocolV2 (the default), ProtocolOpenAI or
	// ProtocolTFServing. The zero value "" is invalid.
	Protocol string

	Batching Batching
	Cache    Cache

	// CircuitBreakers and Hedging: see their types. Parse sets the
	// defaults for keys absent from the file; the zero values mean the
	// defaults too.
	CircuitBreakers CircuitBreakers
	Hedging         Hedging

	// Versions lists the model's versions; at least one, with unique
	// version strings and weights that sum to more than 0.
	Versions []Version
}

// Batching says how rows are gathered into upstream batches.
type Batching struct {
	// MaxBatchSize is the most rows in one upstream batch. Default
	// DefaultMaxBatchSize (64) when the key is absent; 0, when written,
	// means pass-through: no batching. Negative is an error.
	MaxBatchSize int

	// MaxQueueSize is how many rows may wait before new requests get 429.
	// Default DefaultMaxQueueSize (4096); it must be 1 or more while
	// batching, and is unused in pass-through.
	MaxQueueSize int

	// MaxQueueDelay is the most a batch waits for more rows while an
	// endpoint slot is free. Default DefaultMaxQueueDelay (2ms); 0 sends at
	// once. Negative is an error.
	MaxQueueDelay time.Duration

	// Policy decides when a batch that could wait for more rows is sent:
	// BatchPolicyCohort (the default) holds it for callers about to come
	// back with their next rows; BatchPolicyTransit is the earlier rule
	// (one batch in transit per busy endpoint, sent max_queue_delay before
	// the running batch ends), kept for comparison.
	Policy string

	// Timeout is the default deadline of a request; a caller's
	// X-Batchmesh-Timeout-Ms may shorten it. Default DefaultTimeout (1s);
	// it must be more than 0.
	Timeout time.Duration
}

// Enabled reports whether rows are batched: MaxBatchSize > 0.
func (b Batching) Enabled() bool { return b.MaxBatchSize > 0 }

// DefaultBatching returns the batching settings of a model whose file sets
// none.
func DefaultBatching() Batching {
	return Batching{
		MaxBatchSize:  DefaultMaxBatchSize,
		MaxQueueSize:  DefaultMaxQueueSize,
		MaxQueueDelay: DefaultMaxQueueDelay,
		Policy:        DefaultBatchPolicy,
		Timeout:       DefaultTimeout,
	}
}

// Cache says whether and how a model's replies are cached.
type Cache struct {
	// Enabled turns the cache on for the model. Default false.
	Enabled bool

	// TTL is how long an entry lives. Default DefaultCacheTTL (10m); it
	// must be more than 0.
	TTL time.Duration

	// Granularity is GranularityRow (the default) or GranularityRequest.
	Granularity string

	// Scope is ScopeShared (the default) or ScopeTenant.
	Scope string
}

// DefaultCache returns the cache settings of a model whose file sets none:
// disabled.
func DefaultCache() Cache {
	return Cache{TTL: DefaultCacheTTL, Granularity: DefaultGranularity, Scope: DefaultScope}
}

// Version is one version of a model and the endpoints that serve it.
type Version struct {
	// Version names the version. Required, unique within its model, with
	// no '/', '|', space or control character, and neither "." nor "..".
	// A file may write it as a YAML number: 1 becomes "1", as written.
	Version string

	// Weight is the version's share of the model's traffic, relative to
	// its sibling versions. Default DefaultWeight (1) when absent; 0 sends
	// it no traffic. Negative is an error.
	Weight int

	// Endpoints lists the runtimes serving the version; at least one, with
	// unique addresses and weights that sum to more than 0.
	Endpoints []Endpoint

	// ServiceAddresses (service_addresses) are more "ip:port" addresses
	// that mean this version's model to the transparent listener: a
	// captured connection to one of them is a call to the model, as one to
	// an endpoint is. Kubernetes discovery sets them to the ClusterIPs of
	// the version's Services; a file may list its own (a virtual IP in
	// front of the runtimes). Optional; each is an IP address and a port
	// from 1 to 65535.
	ServiceAddresses []string
}

// Endpoint is one model runtime.
type Endpoint struct {
	// Address is host:port, with a port from 1 to 65535. Required.
	Address string

	// Weight is the endpoint's share of its version's traffic. Default
	// DefaultWeight (1) when absent; 0 sends it no traffic. Negative is an
	// error. In adaptive mode it is the starting weight.
	Weight int

	// Slots is how many batches the endpoint runs at once (one per GPU
	// stream). Default DefaultSlots (1); it must be 1 or more.
	Slots int

	// Zone is the endpoint's locality zone; optional.
	Zone string

	// Protocol is how the sidecar reaches the endpoint: "" or EndpointHTTP
	// (the default: the model protocol's REST routes), or EndpointGRPC (the
	// Open Inference Protocol's GRPCInferenceService, v2 models only).
	Protocol string

	// Draining marks an endpoint that finishes what it has but takes no
	// new work: the control plane's discovery sets it for a Kubernetes
	// endpoint that is serving and terminating, and sends it as xDS health
	// DRAINING. A file cannot set it.
	Draining bool
}

// Allowed values of Endpoint.Protocol ("" is EndpointHTTP).
const (
	EndpointHTTP = "http"
	EndpointGRPC = "grpc"
)

// Model returns the model with the given name, or nil. The result points
// into c.Models.
func (c *Config) Model(name string) *Model {
	if c == nil {
		return nil
	}
	for i := range c.Models {
		if c.Models[i].Name == name {
			return &c.Models[i]
		}
	}
	return nil
}

// Load reads and parses the file at path; see Parse.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// LoadPartial is Load for the control plane's -kubernetes mode, where
// discovery supplies the versions: a model may list no versions (it gives
// its name's batching and cache settings), and the file may list no
// models. Everything it does list is checked as Load checks it.
func LoadPartial(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return parse(path, data, true)
}

// Parse parses a YAML config, applies defaults and validates it. name
// identifies data in error messages, usually its file name.
//
// On failure the Config is nil and the error lists every problem found,
// each an *Error with name, line and key path, joined with errors.Join
// and sorted by line.
func Parse(name string, data []byte) (*Config, error) {
	return parse(name, data, false)
}

// parse is Parse; with partial, models and versions may be absent
// (LoadPartial).
func parse(name string, data []byte, partial bool) (*Config, error) {
	d := newDecoder(name)
	c := d.decode(data)
	if c == nil {
		return nil, join(d.errs)
	}
	ch := &checker{file: name, lines: d.lines, failed: d.failed, partial: partial}
	ch.config(c)
	errs := append(d.errs, ch.errs...)
	if len(errs) > 0 {
		return nil, join(errs)
	}
	return c, nil
}

// Validate checks a Config built in code with the checks Parse applies to
// files: it returns nil, or every problem as an *Error with a key path but
// no file or line, joined with errors.Join.
func (c *Config) Validate() error {
	if c == nil {
		return errors.New("config: no config")
	}
	ch := &checker{}
	ch.config(c)
	if len(ch.errs) > 0 {
		return join(ch.errs)
	}
	return nil
}
