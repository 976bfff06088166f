package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"

	"github.com/batchmesh/batchmesh/internal/codec"
	"github.com/batchmesh/batchmesh/internal/rawconn"
)

// ErrUnreachable is wrapped by the error Run returns when nothing accepts a
// TCP connection at the target's address.
var ErrUnreachable = errors.New("loadgen: target unreachable")

// Response headers the sidecar adds.
var (
	headerBatchSize = []byte("X-Batchmesh-Batch-Size")
	headerCache     = []byte("X-Batchmesh-Cache")
)

// Run validates cfg, pre-encodes the request bodies, checks that the target
// accepts a TCP connection, then runs cfg.Clients closed-loop clients until
// cfg.Duration has passed or cfg.Requests have been sent, and returns what
// they measured. It starts its own goroutines and has ended all of them when
// it returns. Run may be called concurrently with itself.
//
// Run fails only for a bad Config, a pool of bodies it cannot build, or a
// target it cannot reach at all (ErrUnreachable); a failing target is
// measured, not returned: its answers count as errors by status, transport
// errors under status 0. If ctx is done before the run starts, Run returns
// ctx.Err(); if it ends during the run, the clients stop after their
// requests in flight (each bounded by cfg.Timeout) and Run returns what was
// measured with a nil error.
func Run(ctx context.Context, cfg Config) (Result, error) {
	s, err := cfg.validate()
	if err != nil {
		return Result{}, err
	}
	p, err := newPool(&s)
	if err != nil {
		return Result{}, err
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	if err := probe(ctx, &s); err != nil {
		if ctx.Err() != nil {
			return Result{}, ctx.Err()
		}
		return Result{}, err
	}
	r := newRun(&s, p, ctx.Done())
	defer r.hc.CloseIdleConnections()
	start := time.Now()
	r.deadline = start.Add(s.Duration)
	var wg sync.WaitGroup
	if s.Rate > 0 {
		wg.Go(func() { r.openLoop(start) })
	} else {
		for _, c := range r.clients {
			wg.Go(func() { r.loop(c) })
		}
	}
	if s.OnProgress != nil {
		r.report(start, &wg)
	} else {
		wg.Wait()
	}
	return r.result(time.Since(start)), nil
}

func newRun(s *settings, p *pool, done <-chan struct{}) *run {
	r := &run{s: s, pool: p, done: done, limit: uint64(s.Requests)}
	r.hc = &fasthttp.HostClient{
		Addr:                   s.addr,
		IsTLS:                  s.tls,
		Name:                   "batchmesh-loadgen",
		MaxConns:               s.Clients, // each client has at most one request in flight
		DisablePathNormalizing: true,
		// A load generator should cost little CPU: the machine it shares
		// with the system under test is what is measured.
		DialTimeout: rawconn.DialFunc(fasthttp.DialTimeout),
	}
	r.clients = make([]*client, s.Clients)
	for i := range r.clients {
		r.clients[i] = &client{status: make(map[int]int64)}
	}
	return r
}

// probe dials the target once, so that a run against nothing fails fast
// instead of counting Duration's worth of refused connections.
func probe(ctx context.Context, s *settings) error {
	d := net.Dialer{Timeout: min(s.Timeout, 5*time.Second)}
	conn, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrUnreachable, s.URL, err)
	}
	_ = conn.Close() // nothing was sent; the dial was the test
	return nil
}

// run is the state shared by the clients of one Run.
type run struct {
	s        *settings
	pool     *pool
	hc       *fasthttp.HostClient
	done     <-chan struct{}
	limit    uint64 // requests in total; 0: no limit
	deadline time.Time
	next     atomic.Uint64 // the next request's sequence number
	firstErr atomic.Pointer[string]
	offered  atomic.Int64 // open loop: arrivals due before the end
	dropped  atomic.Int64 // open loop: arrivals that found every client busy
	clients  []*client
}

// client is one closed-loop client's tallies. The atomic fields may be read
// by the progress reporter while the client runs; the others belong to the
// client's goroutine until it returns.
type client struct {
	lat        hist // latencies of 200 answers
	requests   atomic.Int64
	rows       atomic.Int64 // rows of 200 answers
	errors     atomic.Int64
	ok         int64
	max        time.Duration
	status     map[int]int64 // non-200 answers; 0 for transport errors
	batchRows  int64
	batchCount int64
	cache      []cacheCount
}

type cacheCount struct {
	value string
	n     int64
}

// loop sends requests one after another until the run is over.
func (r *run) loop(c *client) {
	req := r.newRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	for {
		select {
		case <-r.done:
			return
		default:
		}
		t := r.next.Add(1) - 1
		if r.limit > 0 && t >= r.limit {
			return
		}
		end := r.send(c, req, resp, r.pool.pick(t), time.Time{})
		if r.s.deadline && !end.Before(r.deadline) {
			return
		}
	}
}

// newRequest returns a request with everything set but the body.
func (r *run) newRequest() *fasthttp.Request {
	req := fasthttp.AcquireRequest()
	req.SetRequestURI(r.s.URL)
	req.Header.SetMethod(fasthttp.MethodPost)
	if r.s.Binary {
		req.Header.SetContentType("application/octet-stream")
	} else {
		req.Header.SetContentType("application/json")
	}
	for k, v := range r.s.Headers {
		req.Header.Set(k, v)
	}
	req.SetTimeout(r.s.Timeout)
	return req
}

// send sends b, records the outcome in c and returns when the answer came.
// Its latency counts from from (an open-loop arrival's scheduled time), or
// from now when from is zero. Once req and resp have been used, it does not
// allocate.
func (r *run) send(c *client, req *fasthttp.Request, resp *fasthttp.Response, b *body, from time.Time) time.Time {
	req.SetBodyRaw(b.data)
	if b.headerLen != "" {
		req.Header.Set(codec.HeaderContentLength, b.headerLen)
	}
	start := from
	if start.IsZero() {
		start = time.Now()
	}
	err := r.hc.Do(req, resp)
	end := time.Now()
	c.record(r, b, resp, err, end.Sub(start))
	return end
}

func (c *client) record(r *run, b *body, resp *fasthttp.Response, err error, lat time.Duration) {
	status := 0
	if err == nil {
		status = resp.StatusCode()
		if v := resp.Header.PeekBytes(headerBatchSize); len(v) > 0 {
			if n, perr := fasthttp.ParseUint(v); perr == nil {
				c.batchRows += int64(n)
				c.batchCount++
			}
		}
		if v := resp.Header.PeekBytes(headerCache); len(v) > 0 {
			c.countCache(v)
		}
	}
	if status == fasthttp.StatusOK {
		c.ok++
		c.rows.Add(b.rows)
		c.lat.record(lat)
		c.max = max(c.max, lat)
	} else {
		c.status[status]++
		c.errors.Add(1)
		if r.firstErr.Load() == nil {
			msg := describe(status, resp, err)
			r.firstErr.CompareAndSwap(nil, &msg)
		}
	}
	c.requests.Add(1)
}

// countCache counts a cache header value; it allocates only for a value it
// has not seen before.
func (c *client) countCache(v []byte) {
	for i := range c.cache {
		if c.cache[i].value == string(v) {
			c.cache[i].n++
			return
		}
	}
	c.cache = append(c.cache, cacheCount{value: string(v), n: 1})
}

// describe says what went wrong with one request, in one short line.
func describe(status int, resp *fasthttp.Response, err error) string {
	if err != nil {
		return err.Error()
	}
	const limit = 200
	b := bytes.TrimSpace(resp.Body())
	if len(b) > limit {
		b = b[:limit]
	}
	msg := strings.Map(func(r rune) rune {
		if r < ' ' || r == utf8.RuneError {
			return ' '
		}
		return r
	}, string(b))
	return fmt.Sprintf("HTTP %d: %s", status, msg)
}

// report calls OnProgress about once a second until every client is done.
func (r *run) report(start time.Time, wg *sync.WaitGroup) {
	finished := make(chan struct{})
	go func() {
		wg.Wait()
		close(finished)
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	pr := &progress{at: start}
	for {
		select {
		case <-finished:
			return
		case now := <-tick.C:
			r.s.OnProgress(pr.next(r.clients, start, now))
		}
	}
}

// progress turns cumulative tallies into interval snapshots.
type progress struct {
	prev, cur, diff counts
	rows, errors    int64
	at              time.Time
}

func (p *progress) next(clients []*client, start, now time.Time) Snapshot {
	p.cur = counts{}
	var rows, errs int64
	for _, c := range clients {
		c.lat.addTo(&p.cur)
		rows += c.rows.Load()
		errs += c.errors.Load()
	}
	p.diff.sub(&p.cur, &p.prev)
	q := p.diff.quantiles(0, 0.50, 0.99)
	s := Snapshot{
		Elapsed:    now.Sub(start),
		RowsPerSec: perSecond(rows-p.rows, now.Sub(p.at)),
		P50:        q[0],
		P99:        q[1],
		Errors:     errs - p.errors,
	}
	p.prev, p.rows, p.errors, p.at = p.cur, rows, errs, now
	return s
}

// result merges the clients' tallies; every client has returned.
func (r *run) result(elapsed time.Duration) Result {
	res := Result{
		Elapsed:      elapsed,
		ByStatus:     make(map[int]int64),
		CacheResults: make(map[string]int64),
	}
	var all counts
	var ok, batchRows, batchCount int64
	for _, c := range r.clients {
		c.lat.addTo(&all)
		res.Requests += c.requests.Load()
		res.Rows += c.rows.Load()
		res.Errors += c.errors.Load()
		res.Max = max(res.Max, c.max)
		ok += c.ok
		for s, n := range c.status {
			res.ByStatus[s] += n
		}
		batchRows += c.batchRows
		batchCount += c.batchCount
		for _, cc := range c.cache {
			res.CacheResults[cc.value] += cc.n
		}
	}
	if ok > 0 {
		res.ByStatus[fasthttp.StatusOK] = ok
	}
	q := all.quantiles(res.Max, 0.50, 0.90, 0.99, 0.999)
	res.P50, res.P90, res.P99, res.P999 = q[0], q[1], q[2], q[3]
	if r.s.Rate > 0 {
		res.Offered, res.Dropped = r.offered.Load(), r.dropped.Load()
		span := elapsed // the schedule's length: Duration, or until the last arrival
		if r.s.deadline {
			span = min(span, r.s.Duration)
		}
		res.OfferedPerSec = perSecond(res.Offered, span)
	}
	res.RowsPerSec = perSecond(res.Rows, elapsed)
	res.ReqPerSec = perSecond(ok, elapsed)
	if batchCount > 0 {
		res.MeanBatchRows = float64(batchRows) / float64(batchCount)
	}
	if msg := r.firstErr.Load(); msg != nil {
		res.FirstError = *msg
	}
	return res
}

func perSecond(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}
