package proxy

import (
	"context"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/batchmesh/batchmesh/internal/inference"
	"github.com/batchmesh/batchmesh/internal/upstream"
)

// Back-off of a batch the runtime refused with 429 (Hugging Face
// text-embeddings-inference's "Model is overloaded"): the first wait is
// between backoffFirst/2 and backoffFirst, each next one doubles, up to
// backoffMax; a Retry-After header of the runtime sets a longer wait.
const (
	backoffFirst = 4 * time.Millisecond
	backoffMax   = 250 * time.Millisecond
)

// retryOverloaded calls call until its answer is not a 429, waiting with
// exponential back-off and jitter between tries, as long as the next wait
// ends before ctx's deadline. When the deadline leaves no room for another
// wait it returns a KindOverloaded error (429): the runtime is busy, not
// broken, so the endpoint is not reported unhealthy.
func retryOverloaded(ctx context.Context, endpoint string, call func() (upstream.Reply, error)) (upstream.Reply, error) {
	wait := backoffFirst
	for tries := 1; ; tries++ {
		reply, err := call()
		if err == nil || reply.Status != 429 {
			return reply, err
		}
		d := wait/2 + rand.N(wait/2+1)
		if s, perr := strconv.Atoi(reply.RetryAfter); perr == nil && s > 0 {
			d = max(d, time.Duration(s)*time.Second)
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= d {
			return reply, inference.Errorf(inference.KindOverloaded,
				"proxy: runtime %s still refuses with 429 after %d tries, and the deadline leaves no room for another: %w", endpoint, tries, err)
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return reply, inference.Errorf(inference.KindDeadline, "proxy: deadline passed backing off from runtime %s's 429: %w", endpoint, err)
		case <-t.C:
		}
		wait = min(2*wait, backoffMax)
	}
}
