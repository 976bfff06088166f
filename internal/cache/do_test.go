package cache_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/batchmesh/batchmesh/internal/cache"
	"github.com/batchmesh/batchmesh/internal/inference"
)

// computeFunc counts the rows it computes and answers each key index i with
// valueOf(1, byte(i)).
func computeCounting(n *atomic.Int64) cache.Compute {
	return func(_ context.Context, idx []int) ([]*cache.Value, error) {
		n.Add(int64(len(idx)))
		out := make([]*cache.Value, len(idx))
		for j, i := range idx {
			out[j] = valueOf(1, byte(i))
		}
		return out, nil
	}
}

func TestDoHitsComputesAndDuplicates(t *testing.T) {
	c, _ := newCache(t, cache.Config{})
	opts := cache.Options{TTL: time.Minute}
	var n atomic.Int64
	keys := []cache.Key{keyOf(1), keyOf(2), keyOf(1)} // a duplicate row in one request
	vals, st, err := c.Do(t.Context(), "m", keys, opts, computeCounting(&n))
	if err != nil {
		t.Fatal(err)
	}
	if n.Load() != 2 || st != (cache.Stats{Computed: 3}) {
		t.Errorf("first call: computed %d rows, stats %+v; want 2 rows computed, stats {Computed:3}", n.Load(), st)
	}
	if vals[0] != vals[2] || vals[0] == vals[1] {
		t.Error("the duplicate row did not get its twin's value")
	}
	_, st, err = c.Do(t.Context(), "m", keys[:2], opts, computeCounting(&n))
	if err != nil || st != (cache.Stats{Hits: 2}) || n.Load() != 2 {
		t.Errorf("second call: err %v, stats %+v, computed %d; want 2 hits and nothing computed", err, st, n.Load())
	}
	_, st, _ = c.Do(t.Context(), "m", keys[:1], cache.Options{NoLookup: true, TTL: time.Minute}, computeCounting(&n))
	if st != (cache.Stats{Computed: 1}) {
		t.Errorf("no-cache call: stats %+v, want the row computed again", st)
	}
}

// TestDoFollowersSurviveLeaderCancel: the caller computing a row goes away
// (its ctx is cancelled and its computation fails with it); the caller that
// waited for the row computes it itself instead of failing.
func TestDoFollowersSurviveLeaderCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, _ := newCache(t, cache.Config{})
		opts := cache.Options{TTL: time.Minute}
		leaderCtx, cancelLeader := context.WithCancel(t.Context())
		started := make(chan struct{})
		leaderErr := make(chan error, 1)
		go func() {
			_, _, err := c.Do(leaderCtx, "m", []cache.Key{keyOf(7)}, opts, func(ctx context.Context, idx []int) ([]*cache.Value, error) {
				close(started)
				<-ctx.Done()
				return nil, inference.Errorf(inference.KindDeadline, "client went away")
			})
			leaderErr <- err
		}()
		<-started
		var n atomic.Int64
		var wg sync.WaitGroup
		var followerStats cache.Stats
		var followerErr error
		wg.Go(func() {
			_, followerStats, followerErr = c.Do(t.Context(), "m", []cache.Key{keyOf(7)}, opts, computeCounting(&n))
		})
		synctest.Wait() // the follower waits for the leader's row
		cancelLeader()
		wg.Wait()
		if err := <-leaderErr; inference.KindOf(err) != inference.KindDeadline {
			t.Errorf("leader: %v, want its own deadline error", err)
		}
		if followerErr != nil || n.Load() != 1 || followerStats.Computed != 1 {
			t.Errorf("follower: err %v, computed %d, stats %+v; want it to compute the row itself", followerErr, n.Load(), followerStats)
		}
	})
}

// TestDoErrorSharing: a row that fails on its own is failed for its
// waiters too; a failure of a request of several rows is not theirs.
func TestDoErrorSharing(t *testing.T) {
	bad := inference.Errorf(inference.KindInvalid, "row rejected by the runtime")
	for _, tt := range []struct {
		name       string
		leaderKeys []cache.Key
		wantShared bool
	}{
		{name: "one row: shared", leaderKeys: []cache.Key{keyOf(1)}, wantShared: true},
		{name: "several rows: recomputed", leaderKeys: []cache.Key{keyOf(1), keyOf(2)}, wantShared: false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c, _ := newCache(t, cache.Config{})
				opts := cache.Options{TTL: time.Minute}
				release := make(chan struct{})
				started := make(chan struct{})
				go func() {
					_, _, _ = c.Do(t.Context(), "m", tt.leaderKeys, opts, func(context.Context, []int) ([]*cache.Value, error) {
						close(started)
						<-release
						return nil, bad
					})
				}()
				<-started
				var n atomic.Int64
				var err error
				done := make(chan struct{})
				go func() {
					defer close(done)
					_, _, err = c.Do(t.Context(), "m", []cache.Key{keyOf(1)}, opts, computeCounting(&n))
				}()
				synctest.Wait()
				close(release)
				<-done
				shared := errors.Is(err, inference.ErrInvalid)
				if shared != tt.wantShared || (!shared && (err != nil || n.Load() != 1)) {
					t.Errorf("follower: err %v, computed %d; want shared %v", err, n.Load(), tt.wantShared)
				}
			})
		})
	}
}

func TestDoWaitEndsWithCtx(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, _ := newCache(t, cache.Config{})
		release := make(chan struct{})
		started := make(chan struct{})
		go func() {
			_, _, _ = c.Do(t.Context(), "m", []cache.Key{keyOf(3)}, cache.Options{}, func(context.Context, []int) ([]*cache.Value, error) {
				close(started)
				<-release
				return []*cache.Value{valueOf(1, 3)}, nil
			})
		}()
		<-started
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, _, err := c.Do(ctx, "m", []cache.Key{keyOf(3)}, cache.Options{}, func(context.Context, []int) ([]*cache.Value, error) {
			t.Error("the waiter computed the row while another caller was computing it")
			return nil, nil
		})
		if inference.KindOf(err) != inference.KindDeadline || time.Since(start) != 50*time.Millisecond {
			t.Errorf("waiter: %v after %v, want a deadline error after 50ms", err, time.Since(start))
		}
		close(release)
	})
}
