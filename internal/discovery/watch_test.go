package discovery

import (
	"context"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestDebounce checks, on fake time, that a burst of signals gives one
// call d after its first signal (never later, however long the burst),
// and a later signal another call.
func TestDebounce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		kick := make(chan struct{}, 1)
		var mu sync.Mutex
		var at []time.Duration
		calls := func() []time.Duration {
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(at)
		}
		start := time.Now()
		done := make(chan struct{})
		go func() {
			defer close(done)
			Debounce(ctx, kick, 50*time.Millisecond, func() {
				mu.Lock()
				at = append(at, time.Since(start))
				mu.Unlock()
			})
		}()
		synctest.Wait()
		if c := calls(); len(c) != 0 {
			t.Fatalf("calls before any signal: %v", c)
		}
		// A burst: a signal every 10ms for 200ms.
		for range 20 {
			poke(kick)
			time.Sleep(10 * time.Millisecond)
		}
		synctest.Wait()
		c := calls()
		// 50ms after the first signal, then 50ms after the first signal
		// that came after each call: 0→50, 50→100 (signal at 60), ...
		if len(c) < 3 || c[0] != 50*time.Millisecond {
			t.Fatalf("calls during a 200ms burst at %v; want the first at 50ms and one at least every ~60ms", c)
		}
		for i := 1; i < len(c); i++ {
			if gap := c[i] - c[i-1]; gap > 60*time.Millisecond {
				t.Errorf("call %d came %v after the previous one during a burst; want at most 60ms", i, gap)
			}
		}
		n := len(c)
		time.Sleep(time.Second)
		synctest.Wait()
		if c := calls(); len(c) > n+1 {
			t.Errorf("%d calls after the burst ended; want at most 1 (for its last signals)", len(c)-n)
		}
		n = len(calls())
		sent := time.Since(start)
		poke(kick)
		time.Sleep(100 * time.Millisecond)
		synctest.Wait()
		if c := calls(); len(c) != n+1 || c[n] != sent+50*time.Millisecond {
			t.Errorf("a lone signal at %v gave calls %v; want one at %v", sent, c[n:], sent+50*time.Millisecond)
		}
		cancel()
		<-done
	})
}
