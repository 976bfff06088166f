package batch

import (
	"testing"
	"testing/synctest"
	"time"
)

func idleWorkers(w *workers) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.idle)
}

// TestWorkersReused checks that tasks run one after another share one
// worker, that concurrent tasks get one each, and that idle workers exit
// after workerIdle, or at once on stop.
func TestWorkersReused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorkers()
		for i := range 100 {
			done := make(chan struct{})
			w.run(func() { close(done) })
			<-done
			synctest.Wait() // the worker is back in the idle list
			if n := idleWorkers(w); n != 1 {
				t.Fatalf("after task %d: %d idle workers, want the same 1", i, n)
			}
		}

		release := make(chan struct{})
		started := make(chan struct{}, 8)
		for range 8 {
			w.run(func() { started <- struct{}{}; <-release })
		}
		for range 8 {
			<-started // all 8 run at once: 7 new workers beside the idle one
		}
		if n := idleWorkers(w); n != 0 {
			t.Fatalf("%d idle workers while 8 tasks run, want 0", n)
		}
		close(release)
		synctest.Wait()
		if n := idleWorkers(w); n != 8 {
			t.Fatalf("%d idle workers after the 8 tasks, want 8", n)
		}

		time.Sleep(workerIdle - time.Millisecond)
		synctest.Wait()
		if n := idleWorkers(w); n != 8 {
			t.Fatalf("%d idle workers just before workerIdle, want 8", n)
		}
		time.Sleep(2 * time.Millisecond)
		synctest.Wait()
		if n := idleWorkers(w); n != 0 {
			t.Fatalf("%d idle workers after workerIdle, want 0 (they exit)", n)
		}

		w.run(func() {})
		synctest.Wait()
		w.stop()
		synctest.Wait()
		if n := idleWorkers(w); n != 0 {
			t.Fatalf("%d idle workers after stop, want 0", n)
		}
		ran := make(chan struct{})
		w.run(func() { close(ran) }) // still runs after stop, then its goroutine exits
		<-ran
	})
}
