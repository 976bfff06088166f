package batch

import (
	"slices"
	"sync"
	"time"
)

// workerIdle is how long a lane's idle worker goroutine waits for its next
// batch before it exits.
const workerIdle = 10 * time.Second

// workers runs a lane's batches and their attempts on goroutines that
// outlive them. A goroutine started for each batch begins with a small
// stack and grows it through the upstream call every time (a copy of the
// stack per doubling: 6% of the sidecar's CPU at one closed-loop caller);
// a worker keeps the stack it grew. Idle workers wait workerIdle, most
// recently used first, and exit sooner once the lane is closed.
type workers struct {
	mu   sync.Mutex
	idle []chan func() // of the waiting workers; the last is the warmest
	quit chan struct{} // closed by stop
	once sync.Once
}

func newWorkers() *workers { return &workers{quit: make(chan struct{})} }

// run runs f on an idle worker, or on a new one.
func (w *workers) run(f func()) {
	w.mu.Lock()
	if n := len(w.idle); n > 0 {
		ch := w.idle[n-1]
		w.idle = w.idle[:n-1]
		w.mu.Unlock()
		ch <- f // buffered: never blocks
		return
	}
	w.mu.Unlock()
	go w.loop(make(chan func(), 1), f)
}

// stop makes the idle workers exit, and each busy one when it is done.
// run still works after it (on a goroutine that then exits).
func (w *workers) stop() { w.once.Do(func() { close(w.quit) }) }

func (w *workers) loop(ch chan func(), f func()) {
	t := time.NewTimer(workerIdle)
	defer t.Stop()
	for {
		f()
		select {
		case <-w.quit:
			return
		default:
		}
		w.mu.Lock()
		w.idle = append(w.idle, ch)
		w.mu.Unlock()
		t.Reset(workerIdle)
		select {
		case f = <-ch:
			continue
		case <-t.C:
		case <-w.quit:
		}
		// Leaving, unless run has already taken ch: then its f is coming.
		w.mu.Lock()
		if i := slices.Index(w.idle, ch); i >= 0 {
			w.idle = slices.Delete(w.idle, i, i+1)
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		f = <-ch
	}
}
