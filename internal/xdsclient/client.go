package xdsclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/batchmesh/batchmesh/internal/config"
)

// Defaults of Config.
const (
	DefaultBackoffMin = 100 * time.Millisecond
	DefaultBackoffMax = 10 * time.Second
)

// Config configures a Client.
type Config struct {
	// Server is the host:port of the control plane's ADS service. Required.
	// Without TLS the connection is plain text: the control plane is then
	// expected on loopback or behind the pod's network policy.
	Server string

	// TLS, when set, returns the TLS config of each new connection (ADS
	// and LRS), called at every reconnection so that rotated files are
	// used (see package tlsfiles). Nil is plain text.
	TLS func() *tls.Config

	// NodeID, NodeCluster and Zone describe this sidecar in every request:
	// node.id, node.cluster (the control plane's node group) and
	// node.locality.zone. NodeID is required.
	NodeID, NodeCluster, Zone string

	// Logger receives NACKs, stream failures and applied versions. Nil
	// discards them.
	Logger *slog.Logger

	// Protocol is the ADS variant: ProtocolSotW (state of the world, the
	// default when empty) or ProtocolDelta (incremental: a change sends
	// only the resources that changed, and a reconnection only those that
	// changed since).
	Protocol string

	// BackoffMin and BackoffMax bound the wait before reconnecting after
	// the stream fails: it doubles from BackoffMin up to BackoffMax, with
	// jitter, and starts again from BackoffMin once a stream has received
	// a response. Zero means DefaultBackoffMin (100ms) and
	// DefaultBackoffMax (10s).
	BackoffMin, BackoffMax time.Duration
}

// TypeVersion is the state of one resource type, for /config_dump.
type TypeVersion struct {
	// Version and Nonce are those of the last response accepted (ACKed).
	Version string `json:"version"`
	Nonce   string `json:"nonce"`
	// Rejected is the version of the last response NACKed since then, and
	// Error the reason sent with it; both "" if none.
	Rejected string `json:"rejected,omitempty"`
	Error    string `json:"error,omitempty"`
}

// Versions is the state of each resource type the client subscribes to.
type Versions struct {
	Listeners TypeVersion `json:"listeners"`
	Routes    TypeVersion `json:"routes"`
	Clusters  TypeVersion `json:"clusters"`
	Endpoints TypeVersion `json:"endpoints"`
}

// ApplyFunc receives each new consistent config with the versions it is
// made of. The config is the callee's to keep; it is never modified after.
// A non-nil error means the config is unusable: the client NACKs it with
// the error as the reason and keeps the last good one.
type ApplyFunc func(*config.Config, Versions) error

// Client is the sidecar's ADS client. Create it with New and
// run it with Run; Versions is safe to call concurrently with Run.
type Client struct {
	cfg  Config
	log  *slog.Logger
	node *core.Node

	mu       sync.Mutex
	versions Versions
}

// New checks cfg and returns a Client. It starts nothing.
func New(cfg Config) (*Client, error) {
	if cfg.Server == "" {
		return nil, errors.New("xdsclient: no server address")
	}
	if cfg.NodeID == "" {
		return nil, errors.New("xdsclient: no node id")
	}
	switch cfg.Protocol {
	case "":
		cfg.Protocol = ProtocolSotW
	case ProtocolSotW, ProtocolDelta:
	default:
		return nil, fmt.Errorf("xdsclient: protocol %q: want %s or %s", cfg.Protocol, ProtocolSotW, ProtocolDelta)
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = DefaultBackoffMin
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = DefaultBackoffMax
	}
	if cfg.BackoffMax < cfg.BackoffMin {
		return nil, fmt.Errorf("xdsclient: backoff max %v is below min %v", cfg.BackoffMax, cfg.BackoffMin)
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	node := &core.Node{
		Id:            cfg.NodeID,
		Cluster:       cfg.NodeCluster,
		UserAgentName: "batchmesh-sidecar",
	}
	if cfg.Zone != "" {
		node.Locality = &core.Locality{Zone: cfg.Zone}
	}
	return &Client{cfg: cfg, log: lg, node: node}, nil
}

// Versions returns the version and nonce of the last accepted response of
// each type, and the last rejection since.
func (c *Client) Versions() Versions {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.versions
}

func (c *Client) setVersions(v Versions) {
	c.mu.Lock()
	c.versions = v
	c.mu.Unlock()
}

// Run subscribes to the control plane and calls apply with every new
// consistent config until ctx ends, from one goroutine at a time. When the
// stream fails it reconnects with backoff; the last good config stays
// applied meanwhile. It returns nil once ctx ends. Call Run once.
func (c *Client) Run(ctx context.Context, apply ApplyFunc) error {
	s := newState(c, apply)
	r := retrier{min: c.cfg.BackoffMin, max: c.cfg.BackoffMax, rand: rand.Float64}
	r.run(ctx, func(ctx context.Context) bool {
		progress, err := c.stream(ctx, s)
		if ctx.Err() == nil {
			c.log.Warn("xds stream failed", "server", c.cfg.Server, "err", err)
		}
		return progress
	})
	return nil
}

// stream runs one ADS stream until it fails or ctx ends. progress reports
// whether it received a response.
func (c *Client) stream(ctx context.Context, s *state) (progress bool, err error) {
	conn, err := c.dial()
	if err != nil {
		return false, fmt.Errorf("xdsclient: %w", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // Recv fails once the stream's context ends
	ads := discovery.NewAggregatedDiscoveryServiceClient(conn)
	if c.cfg.Protocol == ProtocolDelta {
		st, err := ads.DeltaAggregatedResources(ctx)
		if err != nil {
			return false, fmt.Errorf("xdsclient: %w", err)
		}
		s.begin(newDeltaWire(c.node, st.Send))
		return pump(ctx, cancel, s, st.Recv, s.receiveDelta)
	}
	st, err := ads.StreamAggregatedResources(ctx)
	if err != nil {
		return false, fmt.Errorf("xdsclient: %w", err)
	}
	s.begin(sotwWire{node: c.node, send: st.Send})
	return pump(ctx, cancel, s, st.Recv, s.receive)
}

// dial makes a connection to the control plane, over TLS when configured.
func (c *Client) dial() (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if c.cfg.TLS != nil {
		creds = credentials.NewTLS(c.cfg.TLS())
	}
	return grpc.NewClient(c.cfg.Server, grpc.WithTransportCredentials(creds))
}

// pump sends the first requests of s, then receives responses with recv
// and hands them to receive, then acts on them, until the stream fails or
// ctx ends. cancel ends the stream's context, so that recv fails: pump
// calls it before it returns.
func pump[R any](ctx context.Context, cancel context.CancelFunc, s *state, recv func() (R, error), receive func(R)) (progress bool, err error) {
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	responses := make(chan R)
	recvErr := make(chan error, 1)
	wg.Go(func() {
		for {
			resp, err := recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case responses <- resp:
			case <-ctx.Done():
				return
			}
		}
	})
	if err := s.start(); err != nil {
		return false, err
	}
	for {
		var batch []R
		select {
		case <-ctx.Done():
			return progress, ctx.Err()
		case err := <-recvErr:
			return progress, fmt.Errorf("xdsclient: %w", err)
		case resp := <-responses:
			batch = append(batch, resp)
		}
		// Take what else has arrived, so that the responses of one update
		// are applied together.
	drain:
		for {
			select {
			case resp := <-responses:
				batch = append(batch, resp)
			default:
				break drain
			}
		}
		progress = true
		for _, resp := range batch {
			receive(resp)
		}
		if err := s.sync(); err != nil {
			return progress, err
		}
	}
}

// retrier calls a function again after it returns, waiting a backoff
// between the calls that grows while they make no progress.
type retrier struct {
	min, max time.Duration
	rand     func() float64 // in [0, 1)
}

// run calls try until ctx ends. try reports whether it made progress, which
// resets the backoff.
func (r retrier) run(ctx context.Context, try func(context.Context) bool) {
	attempt := 0
	for ctx.Err() == nil {
		if try(ctx) {
			attempt = 0
		}
		d := backoff(attempt, r.min, r.max, r.rand())
		attempt++
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// backoff returns the wait before reconnection attempt n (from 0): min·2ⁿ
// capped at max, less up to half of it by jitter j in [0, 1): the result
// lies in [d/2, d].
func backoff(n int, lo, hi time.Duration, j float64) time.Duration {
	d := lo
	for i := 0; i < n && d < hi && d <= math.MaxInt64/2; i++ {
		d *= 2
	}
	d = min(d, hi)
	return d - time.Duration(float64(d/2)*j)
}
