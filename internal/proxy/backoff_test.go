package proxy

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/batchmesh/batchmesh/internal/inference"
	"github.com/batchmesh/batchmesh/internal/upstream"
)

var errOverloaded = inference.Errorf(inference.KindUnavailable, "upstream x: 429: Model is overloaded")

func TestRetryOverloadedBacksOffThenSucceeds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		var at []time.Duration
		start := time.Now()
		reply, err := retryOverloaded(ctx, "x", func() (upstream.Reply, error) {
			at = append(at, time.Since(start))
			if len(at) < 4 {
				return upstream.Reply{Status: 429}, errOverloaded
			}
			return upstream.Reply{Status: 200}, nil
		})
		if err != nil || reply.Status != 200 {
			t.Fatalf("got %d %v", reply.Status, err)
		}
		if len(at) != 4 {
			t.Fatalf("%d tries, want 4", len(at))
		}
		// Waits of [2,4], [4,8] and [8,16] ms: exponential with jitter.
		for i, bounds := range [][2]time.Duration{{2, 4}, {4, 8}, {8, 16}} {
			gap := at[i+1] - at[i]
			if gap < bounds[0]*time.Millisecond || gap > bounds[1]*time.Millisecond {
				t.Errorf("wait %d: %v, want %d-%d ms", i+1, gap, bounds[0], bounds[1])
			}
		}
	})
}

func TestRetryOverloadedGivesUpBeforeTheDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		tries := 0
		_, err := retryOverloaded(ctx, "x", func() (upstream.Reply, error) {
			tries++
			return upstream.Reply{Status: 429}, errOverloaded
		})
		if inference.KindOf(err) != inference.KindOverloaded || !errors.Is(err, errOverloaded) {
			t.Fatalf("err %v: want KindOverloaded wrapping the runtime's", err)
		}
		if el := time.Since(start); el >= 100*time.Millisecond {
			t.Fatalf("gave up after %v, past the deadline", el)
		}
		if tries < 5 {
			t.Fatalf("%d tries in 100 ms, want at least 5", tries)
		}
	})
}

func TestRetryOverloadedHonoursRetryAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		n := 0
		_, err := retryOverloaded(ctx, "x", func() (upstream.Reply, error) {
			n++
			if n == 1 {
				return upstream.Reply{Status: 429, RetryAfter: "2"}, errOverloaded
			}
			return upstream.Reply{Status: 200}, nil
		})
		if err != nil || time.Since(start) != 2*time.Second {
			t.Fatalf("err %v after %v, want success after 2s", err, time.Since(start))
		}
	})
}

func TestRetryOverloadedPassesOtherErrors(t *testing.T) {
	calls := 0
	_, err := retryOverloaded(context.Background(), "x", func() (upstream.Reply, error) {
		calls++
		return upstream.Reply{Status: 503}, errOverloaded
	})
	if calls != 1 || !errors.Is(err, errOverloaded) {
		t.Fatalf("%d calls, %v", calls, err)
	}
}
