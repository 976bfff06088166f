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

// cacheControl reads the request's Cache-Control directives that matter.
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
	key    cache.Key
	value  *cache.Value
}

// cachedResult is a request's answer assembled from the cache, rows in
// flight elsewhere and its own batch.
type cachedResult struct {
	outputs   []inference.Tensor
	status    string // the X-Batchmesh-Cache value
	batchRows int    // 0 when nothing went upstream
	endpoint  string
	queueWait time.Duration
	err       error // of the request's own batch
}

// maxFollowRounds bounds how often a request re-looks-up rows whose leader
// gave up (see errLeaderGaveUp).
const maxFollowRounds = 3

// errLeaderGaveUp is what a leader's followers get when its failure says
// nothing about the row they wait for: its own deadline passed, the lane
// shed or refused its request, or the request held other rows that may be
// the ones at fault. They look the row up again, and one of them leads it,
// instead of failing with a request that was not theirs.
var errLeaderGaveUp = errors.New("proxy: the leader of an identical row in flight gave up")

// followersShare reports whether followers may take err, the failure of a
// leader's request of leaders units, as their own answer: only when that
// request computed their unit alone and failed on it, not on its own limits.
func followersShare(err error, leaders int) bool {
	if leaders != 1 {
		return false
	}
	switch inference.KindOf(err) {
	case inference.KindDeadline, inference.KindOverloaded, inference.KindTooLarge:
		return false
	}
	return true
}

// inferCached answers br through the cache: rows found are not computed,
// rows in flight for another request are waited for, and only the rest go
// to the lane, as one request.
func (p *Proxy) inferCached(m *model, v *version, br *batch.Request, tenant string, noCache, noStore bool) (cachedResult, error) {
	now := time.Now()
	scope := cache.Scope{
		Model: m.cfg.Name, Version: v.cfg.Version, Protocol: m.cfg.Protocol, Route: "infer",
		Outputs: br.Outputs, Parameters: br.Parameters,
	}
	if m.cfg.Cache.Scope == config.ScopeTenant {
		scope.Tenant = tenant
	}
	var units []unit
	if m.cfg.Cache.Granularity == config.GranularityRequest {
		units = []unit{{lo: 0, hi: br.Rows, key: cache.RequestKey(&scope, br.Inputs)}}
	} else {
		offsets := make([][]int, len(br.Inputs))
		for i := range br.Inputs {
			offsets[i] = br.Inputs[i].RowOffsets(nil)
		}
		keys := cache.RowKeys(make([]cache.Key, 0, br.Rows), &scope, br.Inputs, offsets, br.Rows)
		units = make([]unit, br.Rows)
		for r := range units {
			units[r] = unit{lo: r, hi: r + 1, key: keys[r]}
		}
	}
	res := cachedResult{}
	hits, computed, coalesced := 0, 0, 0
	pending := make([]int, len(units))
	for i := range pending {
		pending[i] = i
	}
	for round := 0; len(pending) > 0; round++ {
		if round == maxFollowRounds || !time.Now().Before(br.Deadline) {
			return res, inference.Errorf(inference.KindDeadline, "proxy: model %q: deadline passed while waiting for identical rows in flight", m.cfg.Name)
		}
		var leaders, followers []int
		calls := make(map[int]*cache.Call, len(pending))
		for _, i := range pending {
			val, call, role := p.cache.Lookup(m.cfg.Name, units[i].key, now, !noCache)
			switch role {
			case cache.Hit:
				units[i].value = val
				hits++
			case cache.Leader:
				leaders = append(leaders, i)
				calls[i] = call
			case cache.Follower:
				followers = append(followers, i)
				calls[i] = call
			}
		}
		own := make(map[*cache.Call]bool, len(leaders))
		for _, i := range leaders {
			own[calls[i]] = true
		}
		if len(leaders) > 0 {
			computed += p.lead(m, v, br, units, leaders, calls, noStore, &res)
		}
		pending = pending[:0]
		var waitErr error
		for _, i := range followers {
			val, err := waitCall(calls[i], br.Deadline)
			switch {
			case err == nil && own[calls[i]]:
				units[i].value = val // a duplicate of one of our own rows
				computed++
			case err == nil:
				units[i].value = val
				coalesced++
			case errors.Is(err, errLeaderGaveUp) || inference.KindOf(err) == inference.KindDeadline:
				pending = append(pending, i) // its leader gave up or our wait ended; look again
			default:
				waitErr = err
			}
		}
		if res.err != nil {
			return res, res.err
		}
		if waitErr != nil {
			return res, waitErr
		}
	}
	outs, err := assemble(units)
	if err != nil {
		return res, err
	}
	res.outputs = outs
	switch {
	case hits == len(units):
		res.status = cacheHit
	case computed == len(units):
		res.status = cacheMiss
	case computed == 0 && hits == 0:
		res.status = cacheCoalesced
	default:
		res.status = cachePartial
	}
	return res, nil
}

// lead computes the leader units in one request through the lane and
// completes their calls, storing what succeeded. It returns the units it
// computed.
func (p *Proxy) lead(m *model, v *version, br *batch.Request, units []unit, leaders []int, calls map[int]*cache.Call, noStore bool, res *cachedResult) int {
	sub := *br
	rows := 0
	for _, i := range leaders {
		rows += units[i].hi - units[i].lo
	}
	if rows != br.Rows { // only some rows: gather them
		sub.Rows = rows
		sub.Inputs = make([]inference.Tensor, len(br.Inputs))
		parts := make([]inference.Tensor, len(leaders))
		for in := range br.Inputs {
			t := &br.Inputs[in]
			off := t.RowOffsets(nil)
			for j, i := range leaders {
				parts[j] = t.Slice(off, units[i].lo, units[i].hi)
			}
			var err error
			if sub.Inputs[in], err = inference.Concat(parts); err != nil {
				res.err = err
				break
			}
		}
	}
	var out batch.Result
	err := res.err
	if err == nil {
		out, err = v.lane.Submit(context.Background(), &sub)
	}
	expires := time.Now().Add(m.cfg.Cache.TTL)
	offs := make([][]int, len(out.Outputs))
	for o := range out.Outputs {
		offs[o] = out.Outputs[o].RowOffsets(nil)
	}
	callErr := err
	if err != nil && !followersShare(err, len(leaders)) {
		callErr = errLeaderGaveUp
	}
	row := 0
	for _, i := range leaders {
		n := units[i].hi - units[i].lo
		var val *cache.Value
		if err == nil {
			mine := make([]inference.Tensor, len(out.Outputs))
			for o := range out.Outputs {
				mine[o] = out.Outputs[o].Slice(offs[o], row, row+n)
			}
			val = cache.NewValue(mine)
			units[i].value = val
		}
		p.cache.Complete(m.cfg.Name, units[i].key, calls[i], val, callErr, expires, !noStore)
		row += n
	}
	if err != nil {
		res.err = err
		return len(leaders)
	}
	res.batchRows, res.endpoint, res.queueWait = out.BatchRows, out.Endpoint, out.QueueWait
	return len(leaders)
}

// waitCall waits for a row in flight until deadline.
func waitCall(call *cache.Call, deadline time.Time) (*cache.Value, error) {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-call.Done():
		return call.Result()
	case <-t.C:
		return nil, inference.Errorf(inference.KindDeadline, "proxy: deadline passed while waiting for an identical row in flight")
	}
}

// assemble stacks the units' values into the request's outputs, in row
// order, by output name.
func assemble(units []unit) ([]inference.Tensor, error) {
	first := units[0].value
	outs := make([]inference.Tensor, len(first.Outputs))
	parts := make([]inference.Tensor, len(units))
	for o, want := range first.Outputs {
		for u := range units {
			var found *inference.Tensor
			for k := range units[u].value.Outputs {
				if units[u].value.Outputs[k].Name == want.Name {
					found = &units[u].value.Outputs[k]
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
