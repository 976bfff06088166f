package xdsclient

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

func TestBackoff(t *testing.T) {
	const lo, hi = 100 * time.Millisecond, 10 * time.Second
	tests := []struct {
		n      int
		jitter float64
		want   time.Duration
	}{
		{n: 0, jitter: 0, want: lo},
		{n: 1, jitter: 0, want: 2 * lo},
		{n: 3, jitter: 0, want: 8 * lo},
		{n: 3, jitter: 0.5, want: 6 * lo},
		{n: 3, jitter: 0.75, want: 5 * lo},
		{n: 7, jitter: 0, want: hi}, // 12.8s capped
		{n: 1000, jitter: 0, want: hi},
		{n: 1000, jitter: 0.5, want: hi * 3 / 4},
	}
	for _, tt := range tests {
		got := backoff(tt.n, lo, hi, tt.jitter)
		// Rounding of the jitter may cost a nanosecond.
		if d := got - tt.want; d < -1 || d > 1 {
			t.Errorf("backoff(%d, jitter %v) = %v, want %v", tt.n, tt.jitter, got, tt.want)
		}
	}
}

// The retrier waits a growing backoff between attempts that make no
// progress and starts over after one that does; it stops when ctx ends.
func TestRetrierSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lo, hi = 100 * time.Millisecond, 400 * time.Millisecond
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		start := time.Now()
		var at []time.Duration
		progress := []bool{false, false, false, false, true, false}
		r := retrier{min: lo, max: hi, rand: func() float64 { return 0 }}
		done := make(chan struct{})
		go func() {
			defer close(done)
			r.run(ctx, func(context.Context) bool {
				at = append(at, time.Since(start))
				if len(at) == len(progress) {
					cancel()
				}
				return progress[len(at)-1]
			})
		}()
		<-done
		// Waits: 100, 200, 400, 400 (capped), then progress resets: 100.
		want := []time.Duration{0, 100, 300, 700, 1100, 1200}
		if len(at) != len(want) {
			t.Fatalf("attempts at %v, want %v ms", at, want)
		}
		for i := range want {
			if at[i] != want[i]*time.Millisecond {
				t.Fatalf("attempts at %v, want %v ms", at, want)
			}
		}
	})
}

// Cancelling ctx ends the wait at once.
func TestRetrierCancelDuringWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		r := retrier{min: time.Hour, max: time.Hour, rand: func() float64 { return 0 }}
		done := make(chan struct{})
		go func() {
			defer close(done)
			r.run(ctx, func(context.Context) bool { return false })
		}()
		synctest.Wait() // the retrier waits its hour
		start := time.Now()
		cancel()
		<-done
		if d := time.Since(start); d != 0 {
			t.Fatalf("run returned %v after cancel", d)
		}
	})
}
