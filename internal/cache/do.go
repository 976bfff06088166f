package cache

import (
	"context"
	"errors"
	"time"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// Options says how one Do call uses the cache.
type Options struct {
	NoLookup bool          // skip stored values (Cache-Control: no-cache); rows in flight are still joined
	NoStore  bool          // do not store what is computed (Cache-Control: no-store)
	TTL      time.Duration // how long computed values are kept
}

// Stats says where Do found each key's value.
type Stats struct {
	Hits      int // stored values
	Computed  int // computed by this call's Compute (duplicates within the call included)
	Coalesced int // computed by another caller's Compute, waited for
}

// Compute computes the values of the keys at the given indexes, in that
// order, in one go (one request to the lane). It returns one value per
// index or an error.
type Compute func(ctx context.Context, indexes []int) ([]*Value, error)

// maxRounds bounds how often Do looks keys up again after the caller
// computing them gave up (see errLeaderGaveUp).
const maxRounds = 3

// errLeaderGaveUp is what the waiters of a row get when its computation's
// failure says nothing about the row: the computing caller's deadline
// passed or it went away, the lane shed or refused its request, or the
// request held other rows that may be the ones at fault. They look the row
// up again, and one of them computes it, instead of failing with an error
// that was not theirs.
var errLeaderGaveUp = errors.New("cache: the caller computing an identical row gave up")

// Do returns the value of every key: stored values, values another caller
// is computing right now (waited for), and the rest computed by this
// caller's compute, called at most once per round with every key nobody
// else is computing. Computed values are stored (unless opts.NoStore) and
// handed to every caller waiting for them.
//
// Shared work survives its callers: when the caller computing a row gives
// up (its ctx ends, the lane refuses it), the callers waiting for that row
// look it up again and one of them computes it. A computation's error is
// shared with the waiters only when it concerns their row alone. Do returns
// a KindDeadline error when ctx ends while it waits.
//
// The returned values are shared and must not be modified.
func (c *Cache) Do(ctx context.Context, model string, keys []Key, opts Options, compute Compute) ([]*Value, Stats, error) {
	var st Stats
	values := make([]*Value, len(keys))
	pending := make([]int, len(keys))
	for i := range pending {
		pending[i] = i
	}
	for round := 0; len(pending) > 0; round++ {
		if round == maxRounds || ctx.Err() != nil {
			return nil, st, inference.Errorf(inference.KindDeadline, "cache: model %q: deadline passed while waiting for identical rows in flight", model)
		}
		now := time.Now()
		var leaders, followers []int
		calls := make(map[int]*call, len(pending))
		for _, i := range pending {
			v, cl, r := c.lookup(model, keys[i], now, opts)
			switch r {
			case hit:
				values[i] = v
				st.Hits++
			case leader:
				leaders = append(leaders, i)
				calls[i] = cl
			case follower:
				followers = append(followers, i)
				calls[i] = cl
			}
		}
		var leadErr error
		if len(leaders) > 0 {
			leadErr = c.lead(ctx, model, keys, leaders, calls, opts, compute, values)
			st.Computed += len(leaders)
		}
		var own map[*call]bool // this round's own calls, for duplicates within the request
		if len(followers) > 0 && len(leaders) > 0 {
			own = make(map[*call]bool, len(leaders))
			for _, i := range leaders {
				own[calls[i]] = true
			}
		}
		pending = pending[:0]
		var waitErr error
		for _, i := range followers {
			v, err := wait(ctx, calls[i])
			switch {
			case err == nil && own[calls[i]]:
				values[i] = v // a duplicate of one of this caller's own rows
				st.Computed++
			case err == nil:
				values[i] = v
				st.Coalesced++
			case errors.Is(err, errLeaderGaveUp):
				pending = append(pending, i) // look it up again
			default:
				waitErr = err
			}
		}
		if leadErr != nil {
			return nil, st, leadErr
		}
		if waitErr != nil {
			return nil, st, waitErr
		}
	}
	return values, st, nil
}

// lead computes the leader keys with one call to compute and completes
// their calls, storing what succeeded into values and the cache.
func (c *Cache) lead(ctx context.Context, model string, keys []Key, leaders []int, calls map[int]*call, opts Options, compute Compute, values []*Value) error {
	vals, err := compute(ctx, leaders)
	if err == nil && len(vals) != len(leaders) {
		err = inference.Errorf(inference.KindInternal, "cache: model %q: computed %d values for %d rows", model, len(vals), len(leaders))
	}
	shared := err
	if err != nil && !waitersShare(err, len(leaders)) {
		shared = errLeaderGaveUp
	}
	expires := time.Now().Add(opts.TTL)
	for j, i := range leaders {
		var v *Value
		if err == nil {
			v = vals[j]
			values[i] = v
		}
		c.complete(model, keys[i], calls[i], v, shared, expires, opts)
	}
	return err
}

// waitersShare reports whether the callers waiting for a row may take err,
// the failure of a computation of n rows, as their own answer: only when it
// computed their row alone and failed on it, not on its caller's limits.
func waitersShare(err error, n int) bool {
	if n != 1 {
		return false
	}
	switch inference.KindOf(err) {
	case inference.KindDeadline, inference.KindOverloaded, inference.KindTooLarge:
		return false
	}
	return true
}

// wait waits for a row in flight until ctx ends.
func wait(ctx context.Context, cl *call) (*Value, error) {
	select {
	case <-cl.done:
		return cl.value, cl.err
	case <-ctx.Done():
		return nil, inference.Errorf(inference.KindDeadline, "cache: gave up waiting for an identical row in flight: %v", context.Cause(ctx))
	}
}
