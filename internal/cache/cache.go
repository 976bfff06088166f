package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2/simplelru"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// Config configures a Cache. Zero values are the defaults noted.
type Config struct {
	MaxBytes   int64        // bytes of values and keys held; default 256 MiB
	MaxEntries int          // entries held; default 4,194,304
	Meter      metric.Meter // nil records nothing
}

// entryOverhead is what one entry costs beyond its output bytes: the key,
// the LRU's list element and map slot, the Value and its tensor headers.
const entryOverhead = 256

// Value is the answer of one row (or of one whole request): its outputs,
// each with its own copy of the data. A Value is immutable once stored and
// may be shared by any number of readers.
type Value struct {
	Outputs []inference.Tensor
	size    int64
}

// NewValue copies outputs into a Value the cache may keep.
func NewValue(outputs []inference.Tensor) *Value {
	v := &Value{Outputs: make([]inference.Tensor, len(outputs)), size: entryOverhead}
	total := 0
	for i := range outputs {
		total += len(outputs[i].Data)
	}
	buf := make([]byte, 0, total)
	for i, o := range outputs {
		start := len(buf)
		buf = append(buf, o.Data...)
		v.Outputs[i] = inference.Tensor{
			Name: o.Name, DataType: o.DataType, Shape: append([]int64(nil), o.Shape...),
			Data: buf[start:len(buf):len(buf)], Parameters: o.Parameters,
		}
		v.size += int64(len(o.Data)) + int64(len(o.Name)) + 8*int64(len(o.Shape)) + 64
	}
	return v
}

// Size is the bytes the Value counts against MaxBytes.
func (v *Value) Size() int64 { return v.size }

type entry struct {
	value   *Value
	model   string
	expires time.Time
}

// Cache is a row cache with in-flight coalescing. It is safe for concurrent
// use; only Do waits, and only for rows in flight.
type Cache struct {
	cfg Config

	mu       sync.Mutex
	lru      *lru.LRU[Key, entry]
	bytes    int64
	expiring bool // the removal in progress is an expiry, not an eviction
	flights  map[Key]*call

	m metrics
}

type metrics struct {
	hits, misses, evictions, coalesced metric.Int64Counter
	gauges                             metric.Registration
	attrs                              sync.Map // model → metric.MeasurementOption
}

// New builds a cache. It starts nothing.
func New(cfg Config) (*Cache, error) {
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = 256 << 20
	}
	if cfg.MaxEntries == 0 {
		cfg.MaxEntries = 4 << 20
	}
	if cfg.MaxBytes < 0 || cfg.MaxEntries < 0 {
		return nil, fmt.Errorf("cache: negative limits: %d bytes, %d entries", cfg.MaxBytes, cfg.MaxEntries)
	}
	if cfg.Meter == nil {
		cfg.Meter = noop.NewMeterProvider().Meter("")
	}
	c := &Cache{cfg: cfg, flights: make(map[Key]*call)}
	var err error
	c.lru, err = lru.NewLRU[Key, entry](cfg.MaxEntries, c.onEvict)
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	if err := c.newMetrics(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Cache) newMetrics() error {
	m := c.cfg.Meter
	var errs [6]error
	c.m.hits, errs[0] = m.Int64Counter("batchmesh_cache_hits", metric.WithDescription("Rows answered from the cache."))
	c.m.misses, errs[1] = m.Int64Counter("batchmesh_cache_misses", metric.WithDescription("Rows looked up and not found or expired."))
	c.m.evictions, errs[2] = m.Int64Counter("batchmesh_cache_evictions", metric.WithDescription("Rows evicted to stay within the byte or entry bound."))
	c.m.coalesced, errs[3] = m.Int64Counter("batchmesh_coalesced", metric.WithDescription("Rows that waited for an identical row already in flight."))
	bytesGauge, e4 := m.Int64ObservableGauge("batchmesh_cache_bytes", metric.WithDescription("Bytes held by the row cache."), metric.WithUnit("By"))
	entriesGauge, e5 := m.Int64ObservableGauge("batchmesh_cache_entries", metric.WithDescription("Entries held by the row cache."))
	errs[4], errs[5] = e4, e5
	if err := errors.Join(errs[:]...); err != nil {
		return fmt.Errorf("cache: metrics: %w", err)
	}
	var err error
	c.m.gauges, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		entries, bytes := c.Usage()
		o.ObserveInt64(bytesGauge, bytes)
		o.ObserveInt64(entriesGauge, int64(entries))
		return nil
	}, bytesGauge, entriesGauge)
	if err != nil {
		return fmt.Errorf("cache: metrics: %w", err)
	}
	return nil
}

func (c *Cache) attrs(model string) metric.MeasurementOption {
	if o, ok := c.m.attrs.Load(model); ok {
		return o.(metric.MeasurementOption)
	}
	o := metric.WithAttributeSet(attribute.NewSet(attribute.String("model", model)))
	c.m.attrs.Store(model, o)
	return o
}

// Track exports model's counters (hits, misses, evictions, coalesced) at
// zero, so that they exist on /metrics before the model's first row.
func (c *Cache) Track(model string) {
	ctx, o := context.Background(), c.attrs(model)
	for _, ctr := range []metric.Int64Counter{c.m.hits, c.m.misses, c.m.evictions, c.m.coalesced} {
		ctr.Add(ctx, 0, o)
	}
}

// onEvict runs under c.mu for every entry leaving the LRU.
func (c *Cache) onEvict(_ Key, e entry) {
	c.bytes -= e.value.size
	if !c.expiring {
		c.m.evictions.Add(context.Background(), 1, c.attrs(e.model))
	}
}

// Usage returns the entries and bytes held.
func (c *Cache) Usage() (entries int, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len(), c.bytes
}

// Limits returns the configured bounds.
func (c *Cache) Limits() (maxBytes int64, maxEntries int) { return c.cfg.MaxBytes, c.cfg.MaxEntries }

// role says what a lookup found for a row.
type role uint8

const (
	// hit: the value was in the cache.
	hit role = iota
	// leader: nothing stored or in flight; the caller computes the row and
	// must call complete with the call.
	leader
	// follower: an identical row is in flight; wait on the call.
	follower
)

// call is one row in flight. Its result is set once, by complete.
type call struct {
	done  chan struct{}
	value *Value
	err   error
}

// lookup finds k for model at time now. With opts.NoLookup (Cache-Control:
// no-cache) it skips the stored values but still joins a row in flight. It
// returns the value on a hit, or the call to lead or to wait for.
func (c *Cache) lookup(model string, k Key, now time.Time, opts Options) (*Value, *call, role) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !opts.NoLookup {
		if e, ok := c.lru.Get(k); ok {
			if now.Before(e.expires) {
				c.m.hits.Add(context.Background(), 1, c.attrs(model))
				return e.value, nil, hit
			}
			c.expiring = true
			c.lru.Remove(k)
			c.expiring = false
		}
		c.m.misses.Add(context.Background(), 1, c.attrs(model))
	}
	if cl, ok := c.flights[k]; ok {
		c.m.coalesced.Add(context.Background(), 1, c.attrs(model))
		return nil, cl, follower
	}
	cl := &call{done: make(chan struct{})}
	c.flights[k] = cl
	return nil, cl, leader
}

// complete ends the call a leader was given: followers get v or err, and a
// successful v is stored until expires unless opts.NoStore (Cache-Control:
// no-store) or v alone is larger than the byte bound.
func (c *Cache) complete(model string, k Key, cl *call, v *Value, err error, expires time.Time, opts Options) {
	c.mu.Lock()
	if c.flights[k] == cl {
		delete(c.flights, k)
	}
	if err == nil && !opts.NoStore && v != nil && v.size <= c.cfg.MaxBytes {
		if c.lru.Contains(k) {
			c.expiring = true // a replacement, not an eviction
			c.lru.Remove(k)
			c.expiring = false
		}
		c.lru.Add(k, entry{value: v, model: model, expires: expires})
		c.bytes += v.size
		for c.bytes > c.cfg.MaxBytes {
			if _, _, ok := c.lru.RemoveOldest(); !ok {
				break
			}
		}
	}
	c.mu.Unlock()
	cl.value, cl.err = v, err
	close(cl.done)
}
