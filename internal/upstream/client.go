package upstream

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/batchmesh/batchmesh/internal/codec"
	"github.com/batchmesh/batchmesh/internal/inference"
	"github.com/batchmesh/batchmesh/internal/rawconn"
)

// Defaults of Config's zero values.
const (
	DefaultMaxConnsPerEndpoint = 512
	DefaultProbeTimeout        = time.Second
	DefaultMaxResponseBytes    = 256 << 20
	DefaultTimeout             = 30 * time.Second
)

// Config configures a Client. The zero value is a valid configuration: every
// zero field means the documented default.
type Config struct {
	// MaxConnsPerEndpoint bounds the open connections to one endpoint
	// (default 512). A call beyond it waits for a free connection until its
	// deadline (then KindDeadline) or for at most Timeout (then
	// KindUnavailable).
	MaxConnsPerEndpoint int
	// ProbeTimeout bounds each request of a Probe (default 1 s); a shorter
	// ctx deadline wins.
	ProbeTimeout time.Duration
	// MaxResponseBytes bounds a response body (default 256 MiB); a bigger
	// one fails the call with KindUpstream.
	MaxResponseBytes int
	// Timeout is the deadline of a call whose ctx has none (default 30 s).
	Timeout time.Duration
	// Logger logs what Probe learns about endpoints; nil discards.
	Logger *slog.Logger
}

// Client talks to model runtimes, one connection pool per endpoint address
// (host:port). Build it with New; it starts nothing until the first call. A
// Client is safe for concurrent use; Close it when done.
type Client struct {
	cfg       Config
	endpoints sync.Map // address → *pool
	bufs      sync.Pool
	// binParams is the request parameters of a binary call whose request
	// has none. Never modified.
	binParams inference.Parameters
}

// pool is one runtime address: its connections and what Probe learned.
type pool struct {
	hc     *fasthttp.HostClient
	binary atomic.Bool // the last Probe saw binary_tensor_data
	conns  conns       // Take's connections
}

// New returns a Client configured by cfg with defaults applied.
func New(cfg Config) *Client {
	if cfg.MaxConnsPerEndpoint <= 0 {
		cfg.MaxConnsPerEndpoint = DefaultMaxConnsPerEndpoint
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = DefaultProbeTimeout
	}
	if cfg.MaxResponseBytes <= 0 {
		cfg.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Client{
		cfg:       cfg,
		binParams: inference.Parameters{inference.ParamBinaryDataOutput: true},
	}
}

// pool returns the pool of addr, making it on first use.
func (c *Client) pool(addr string) *pool {
	if ep, ok := c.endpoints.Load(addr); ok {
		return ep.(*pool)
	}
	ep, _ := c.endpoints.LoadOrStore(addr, &pool{hc: &fasthttp.HostClient{
		Addr:                   addr,
		Name:                   "batchmesh",
		MaxConns:               c.cfg.MaxConnsPerEndpoint,
		MaxConnWaitTimeout:     c.cfg.Timeout, // shortened to each call's deadline
		MaxResponseBodySize:    c.cfg.MaxResponseBytes,
		DisablePathNormalizing: true,
		RetryIfErr:             retryStale,
		DialDualStack:          true, // IPv6 endpoints, and names with IPv6 addresses
		DialTimeout:            rawconn.DialFunc(fasthttp.DialDualStackTimeout),
	}})
	return ep.(*pool)
}

// Binary reports whether the last Probe of endpoint found the binary tensor
// extension, that is whether Infer sends it binary tensors.
func (c *Client) Binary(endpoint string) bool {
	ep, ok := c.endpoints.Load(endpoint)
	return ok && ep.(*pool).binary.Load()
}

// Forget closes the idle connections to endpoint and drops what the Client
// knows of it, for an endpoint that left the configuration. Calls in flight
// finish; a later call starts afresh (JSON until probed).
func (c *Client) Forget(endpoint string) {
	if ep, ok := c.endpoints.LoadAndDelete(endpoint); ok {
		ep.(*pool).hc.CloseIdleConnections()
		ep.(*pool).conns.closeIdle(true)
	}
}

// Close closes the idle connections of every endpoint. Calls in flight
// finish and close their connections; the Client remains usable.
func (c *Client) Close() {
	c.endpoints.Range(func(_, ep any) bool {
		ep.(*pool).hc.CloseIdleConnections()
		ep.(*pool).conns.closeIdle(false)
		return true
	})
}

// deadline returns ctx's deadline, or the default timeout from now.
func (c *Client) deadline(ctx context.Context) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now().Add(c.cfg.Timeout)
}

// Probe asks endpoint for GET /v2, learning whether it speaks the binary
// tensor extension (Binary), then for GET /v2/health/ready (GET /health when
// that is a 404, for OpenAI-compatible runtimes), and returns nil
// when it is ready. Each request ends at ctx's deadline or after
// Config.ProbeTimeout, whichever is first. A runtime that does not answer GET
// /v2 with its metadata is taken to lack the extension. Errors are as Infer's;
// a runtime that answers but is not ready gives KindUnavailable (without
// ErrConnect).
func (c *Client) Probe(ctx context.Context, endpoint string) error {
	if err := ctx.Err(); err != nil {
		return contextError(endpoint, err)
	}
	ep := c.pool(endpoint)
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)

	if err := c.get(ctx, ep, req, resp, "/v2"); err != nil {
		return transportError(endpoint, err)
	}
	binary := false
	if resp.StatusCode() == fasthttp.StatusOK {
		var md codec.ServerMetadata
		if json.Unmarshal(resp.Body(), &md) == nil {
			binary = slices.Contains(md.Extensions, codec.ExtensionBinaryTensorData)
		}
	}
	if old := ep.binary.Swap(binary); old != binary {
		c.cfg.Logger.Info("upstream: endpoint tensor encoding", "endpoint", endpoint, "binary", binary)
	}

	if err := c.get(ctx, ep, req, resp, "/v2/health/ready"); err != nil {
		return transportError(endpoint, err)
	}
	if resp.StatusCode() == fasthttp.StatusNotFound {
		// Not a v2 runtime: OpenAI-compatible ones (text-embeddings-
		// inference, vLLM, Infinity, llama.cpp) answer GET /health.
		if err := c.get(ctx, ep, req, resp, "/health"); err != nil {
			return transportError(endpoint, err)
		}
	}
	if st := resp.StatusCode(); st != fasthttp.StatusOK {
		return inference.Errorf(inference.KindUnavailable, "upstream %s: not ready: %d: %s", endpoint, st, errorText(resp.Body()))
	}
	return nil
}

func (c *Client) get(ctx context.Context, ep *pool, req *fasthttp.Request, resp *fasthttp.Response, path string) error {
	req.Reset()
	req.Header.SetMethod(fasthttp.MethodGet)
	req.SetRequestURI(path)
	req.Header.SetHost(ep.hc.Addr)
	deadline := time.Now().Add(c.cfg.ProbeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	return ep.hc.DoDeadline(req, resp, deadline)
}
