// Command textbook is the textbook dynamic batcher, a reference point for
// the sidecar's benchmarks only (examples/bench/scenarios.sh batching).
//
// It serves POST /v2/models/{name}/infer (JSON v2 bodies, one model, every
// request with the same inputs), pushes each request into one channel and
// has one collector goroutine that opens a batch with the first request and
// closes it at -max-batch rows or -max-wait after that first arrival,
// whichever comes first. Each batch goes upstream in its own goroutine (at
// most -max-inflight at once; 0 = no limit), and the answer's rows are split
// back to the callers. GET /v2/health/ready answers 200. No deadlines, no
// retries, no priorities: the plain algorithm the sidecar is measured
// against.
//
//	textbook -listen 127.0.0.1:18820 -upstream 127.0.0.1:18800 -max-batch 32 -max-wait 10ms
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"log"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/batchmesh/batchmesh/internal/codec"
	"github.com/batchmesh/batchmesh/internal/inference"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:18820", "listen address")
	upstream := flag.String("upstream", "127.0.0.1:18800", "the model runtime's host:port")
	maxBatch := flag.Int("max-batch", 32, "most rows per batch")
	maxWait := flag.Duration("max-wait", 10*time.Millisecond, "most a batch waits after its first request (0: take only what is queued)")
	maxInflight := flag.Int("max-inflight", 0, "most batches upstream at once (0: no limit)")
	flag.Parse()
	if *maxBatch < 1 || *maxWait < 0 || *maxInflight < 0 {
		log.Fatal("textbook: -max-batch must be 1 or more, -max-wait and -max-inflight 0 or more")
	}
	b := &batcher{
		in:       make(chan *item, 4096),
		maxBatch: *maxBatch, maxWait: *maxWait,
		client: &fasthttp.HostClient{Addr: *upstream, MaxConns: 1024},
	}
	if *maxInflight > 0 {
		b.sem = make(chan struct{}, *maxInflight)
	}
	go b.collect()
	log.Fatal(fasthttp.ListenAndServe(*listen, b.handle))
}

type batcher struct {
	in       chan *item
	sem      chan struct{}
	maxBatch int
	maxWait  time.Duration
	client   *fasthttp.HostClient
}

// item is one caller's request until its answer is in reply.
type item struct {
	path  string
	req   inference.Request
	rows  int
	reply chan result
}

type result struct {
	outs []inference.Tensor
	err  error
}

// collect forms batches for ever: the first request opens one, which
// closes when full or maxWait later.
func (b *batcher) collect() {
	for {
		first := <-b.in
		if b.sem != nil {
			b.sem <- struct{}{} // wait for a free slot; arrivals meanwhile join this batch
		}
		batch, n := []*item{first}, first.rows
		timer := time.NewTimer(b.maxWait)
	fill:
		for n < b.maxBatch {
			select {
			case it := <-b.in:
				batch, n = append(batch, it), n+it.rows
				continue
			default:
			}
			if b.maxWait <= 0 {
				break fill
			}
			select {
			case it := <-b.in:
				batch, n = append(batch, it), n+it.rows
			case <-timer.C:
				break fill
			}
		}
		timer.Stop()
		go func() {
			b.dispatch(batch)
			if b.sem != nil {
				<-b.sem
			}
		}()
	}
}

// dispatch sends one batch upstream and hands each caller its rows.
func (b *batcher) dispatch(batch []*item) {
	outs, err := b.call(batch)
	row := 0
	for _, it := range batch {
		if err != nil {
			it.reply <- result{err: err}
			continue
		}
		mine := make([]inference.Tensor, len(outs))
		for i := range outs {
			mine[i] = outs[i].Slice(outs[i].RowOffsets(nil), row, row+it.rows)
		}
		row += it.rows
		it.reply <- result{outs: mine}
	}
}

func (b *batcher) call(batch []*item) ([]inference.Tensor, error) {
	req := inference.Request{Inputs: make([]inference.Tensor, len(batch[0].req.Inputs))}
	rows := 0
	for i := range req.Inputs {
		parts := make([]inference.Tensor, len(batch))
		for j, it := range batch {
			if len(it.req.Inputs) != len(req.Inputs) {
				return nil, errors.New("requests of one batch differ in their inputs")
			}
			parts[j] = it.req.Inputs[i]
		}
		t, err := inference.Concat(parts)
		if err != nil {
			return nil, err
		}
		req.Inputs[i] = t
	}
	for _, it := range batch {
		rows += it.rows
	}
	body, _, err := codec.EncodeRequest(nil, &req, false)
	if err != nil {
		return nil, err
	}
	hreq, hresp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(hreq)
	defer fasthttp.ReleaseResponse(hresp)
	hreq.SetRequestURI("http://" + b.client.Addr + batch[0].path)
	hreq.Header.SetMethod(fasthttp.MethodPost)
	hreq.Header.SetContentType("application/json")
	hreq.SetBodyRaw(body)
	if err := b.client.DoTimeout(hreq, hresp, 30*time.Second); err != nil {
		return nil, err
	}
	if hresp.StatusCode() != fasthttp.StatusOK {
		return nil, fmt.Errorf("upstream status %d: %s", hresp.StatusCode(), hresp.Body())
	}
	resp, err := codec.DecodeResponse(bytes.Clone(hresp.Body()), codec.NoHeader)
	if err != nil {
		return nil, err
	}
	for _, o := range resp.Outputs {
		if len(o.Shape) == 0 || o.Shape[0] != int64(rows) {
			return nil, fmt.Errorf("upstream answered %s rows for a batch of %d", inference.FormatShape(o.Shape), rows)
		}
	}
	return resp.Outputs, nil
}

func (b *batcher) handle(ctx *fasthttp.RequestCtx) {
	path := ctx.Path()
	if ctx.IsGet() && string(path) == "/v2/health/ready" {
		return
	}
	if !ctx.IsPost() || !bytes.HasPrefix(path, []byte("/v2/models/")) || !bytes.HasSuffix(path, []byte("/infer")) {
		ctx.Error(`{"error":"only POST /v2/models/{name}/infer"}`, fasthttp.StatusNotFound)
		return
	}
	req, err := codec.DecodeRequest(bytes.Clone(ctx.PostBody()), codec.NoHeader)
	if err != nil {
		ctx.Error(fmt.Sprintf(`{"error":%q}`, err.Error()), fasthttp.StatusBadRequest)
		return
	}
	rows, err := req.Inputs[0].BatchRows()
	if err != nil || rows < 1 {
		ctx.Error(`{"error":"input 0 has no batch rows"}`, fasthttp.StatusBadRequest)
		return
	}
	it := &item{path: string(path), req: req, rows: rows, reply: make(chan result, 1)}
	b.in <- it
	r := <-it.reply
	if r.err != nil {
		ctx.Error(fmt.Sprintf(`{"error":%q}`, r.err.Error()), fasthttp.StatusBadGateway)
		return
	}
	body, _, err := codec.EncodeResponse(nil, &inference.Response{ModelName: "m", Outputs: r.outs}, func(string) bool { return false })
	if err != nil {
		ctx.Error(fmt.Sprintf(`{"error":%q}`, err.Error()), fasthttp.StatusInternalServerError)
		return
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(body)
}
