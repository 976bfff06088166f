package proxy

import (
	"bytes"
	"context"
	"errors"
	"time"

	"github.com/batchmesh/batchmesh/internal/batch"
	"github.com/batchmesh/batchmesh/internal/cache"
	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/inference"
)

// Values of the X-Batchmesh-Cache response header.
const (
	cacheHit       = "hit"
	cacheMiss      = "miss"
	cachePartial   = "partial"
	cacheCoalesced = "coalesced"
	cacheBypass    = "bypass"
)

// cacheControl reads the request's Cache-Control directives that matter:
// no-cache (do not answer from the cache) and no-store (do not keep the
// answer).
func cacheControl(h []byte) (noCache, noStore bool) {
	for len(h) > 0 {
		var d []byte
		d, h, _ = bytes.Cut(h, []byte{','})
		d = bytes.TrimSpace(d)
		switch {
		case bytes.EqualFold(d, []byte("no-cache")):
			noCache = true
		case bytes.EqualFold(d, []byte("no-store")):
			noStore = true
		}
	}
	return noCache, noStore
}

// unit is a piece of a request the cache knows as one entry: a row, or the
// whole request for models cached by request.
type unit struct {
	lo, hi int // rows of the request
}

// cachedResult is a request's answer assembled from the cache, rows in
// flight elsewhere and its own batch.
type cachedResult struct {
	outputs   []inference.Tensor
	status    string // the X-Batchmesh-Cache value
	batchRows int    // 0 when nothing went upstream
	endpoint  string
	queueWait time.Duration
}

// inferCached answers br through the cache stage: rows found are not
// computed, rows in flight for another request are waited for, and only
// the rest go to the lane, as one request. ctx carries br's deadline.
func (p *Proxy) inferCached(ctx context.Context, m *model, v *version, br *batch.Request, tenant string, opts cache.Options) (cachedResult, error) {
	return p.inferCachedRoute(ctx, m, v, br, tenant, "infer", opts)
}

// inferCachedRoute is inferCached for a request of the given route
// ("infer", "predict", "embeddings"), part of every key.
func (p *Proxy) inferCachedRoute(ctx context.Context, m *model, v *version, br *batch.Request, tenant, route string, opts cache.Options) (cachedResult, error) {
	scope := cache.Scope{
		Model: m.cfg.Name, Version: v.cfg.Version, Protocol: m.cfg.Protocol, Route: route,
		Outputs: br.Outputs, Parameters: br.Parameters,
	}
	if m.cfg.Cache.Scope == config.ScopeTenant {
		scope.Tenant = tenant
	}
	var units []unit
	var keys []cache.Key
	if m.cfg.Cache.Granularity == config.GranularityRequest {
		units = []unit{{lo: 0, hi: br.Rows}}
		keys = []cache.Key{cache.RequestKey(&scope, br.Inputs)}
	} else {
		offsets := make([][]int, len(br.Inputs))
		for i := range br.Inputs {
			offsets[i] = br.Inputs[i].RowOffsets(nil)
		}
		keys = cache.RowKeys(make([]cache.Key, 0, br.Rows), &scope, br.Inputs, offsets, br.Rows)
		units = make([]unit, br.Rows)
		for r := range units {
			units[r] = unit{lo: r, hi: r + 1}
		}
	}
	opts.TTL = m.cfg.Cache.TTL
	var res cachedResult
	vals, st, err := p.cache.Do(ctx, m.cfg.Name, keys, opts, func(ctx context.Context, idx []int) ([]*cache.Value, error) {
		return computeUnits(ctx, v.lane, br, units, idx, &res)
	})
	if err != nil {
		return res, err
	}
	if res.outputs, err = assemble(vals); err != nil {
		return res, err
	}
	switch n := len(units); {
	case st.Hits == n:
		res.status = cacheHit
	case st.Computed == n:
		res.status = cacheMiss
	case st.Computed == 0 && st.Hits == 0:
		res.status = cacheCoalesced
	default:
		res.status = cachePartial
	}
	return res, nil
}

// computeUnits sends the units idx of br to lane as one request and returns
// each unit's rows of the answer as a cache value. It records the batch in
// res.
func computeUnits(ctx context.Context, lane *batch.Lane, br *batch.Request, units []unit, idx []int, res *cachedResult) ([]*cache.Value, error) {
	sub := *br
	rows := 0
	for _, i := range idx {
		rows += units[i].hi - units[i].lo
	}
	if rows != br.Rows { // only some rows: gather them
		sub.Rows = rows
		sub.Inputs = make([]inference.Tensor, len(br.Inputs))
		parts := make([]inference.Tensor, len(idx))
		for in := range br.Inputs {
			t := &br.Inputs[in]
			off := t.RowOffsets(nil)
			for j, i := range idx {
				parts[j] = t.Slice(off, units[i].lo, units[i].hi)
			}
			var err error
			if sub.Inputs[in], err = inference.Concat(parts); err != nil {
				return nil, err
			}
		}
	}
	out, err := lane.Submit(ctx, &sub)
	if err != nil {
		return nil, err
	}
	res.batchRows, res.endpoint, res.queueWait = out.BatchRows, out.Endpoint, out.QueueWait
	offs := make([][]int, len(out.Outputs))
	for o := range out.Outputs {
		offs[o] = out.Outputs[o].RowOffsets(nil)
	}
	vals := make([]*cache.Value, len(idx))
	row := 0
	for j, i := range idx {
		n := units[i].hi - units[i].lo
		mine := make([]inference.Tensor, len(out.Outputs))
		for o := range out.Outputs {
			mine[o] = out.Outputs[o].Slice(offs[o], row, row+n)
		}
		vals[j] = cache.NewValue(mine)
		row += n
	}
	return vals, nil
}

// assemble stacks the units' values into the request's outputs, in row
// order, by output name.
func assemble(vals []*cache.Value) ([]inference.Tensor, error) {
	first := vals[0]
	outs := make([]inference.Tensor, len(first.Outputs))
	parts := make([]inference.Tensor, len(vals))
	for o, want := range first.Outputs {
		for u := range vals {
			var found *inference.Tensor
			for k := range vals[u].Outputs {
				if vals[u].Outputs[k].Name == want.Name {
					found = &vals[u].Outputs[k]
					break
				}
			}
			if found == nil {
				return nil, inference.Errorf(inference.KindUpstream, "proxy: cached rows disagree: output %q missing from one", want.Name)
			}
			parts[u] = *found
		}
		t, err := inference.Concat(parts)
		if err != nil {
			return nil, errors.Join(inference.ErrUpstream, err)
		}
		outs[o] = t
	}
	return outs, nil
}
