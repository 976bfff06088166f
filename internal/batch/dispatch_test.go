package batch

import (
	"math/rand/v2"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

// TestIdleDispatchesAtOnce checks that a request that finds a free slot is
// sent at the instant it is submitted, whatever MaxQueueDelay and the
// learned latency say, and that Submit returns when the runtime answers.
func TestIdleDispatchesAtOnce(t *testing.T) {
	tests := []struct {
		name    string
		latency time.Duration
		delay   time.Duration // MaxQueueDelay
		slots   int
		busy    int  // batches already running
		warm    bool // latency learned first
		rows    int
	}{
		{name: "cold", latency: 10 * time.Millisecond, rows: 1},
		{name: "cold with delay", latency: 10 * time.Millisecond, delay: 5 * time.Millisecond, rows: 3},
		{name: "warm", latency: 10 * time.Millisecond, delay: 2 * time.Millisecond, warm: true, rows: 1},
		{name: "zero latency", rows: 7},
		{name: "one of two slots busy", latency: 10 * time.Millisecond, delay: 2 * time.Millisecond, slots: 2, busy: 1, warm: true, rows: 2},
		{name: "full batch", latency: 4 * time.Millisecond, warm: true, rows: 64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeCaller(map[string]time.Duration{"a": tt.latency})
				l := newTestLane(t, Config{MaxQueueDelay: tt.delay, Endpoints: []Endpoint{{Address: "a", Slots: tt.slots}}}, f)
				if tt.warm {
					warm(t, l)
				}
				var blockers []<-chan outcome
				for i := range tt.busy {
					blockers = append(blockers, submit(t.Context(), l, newRequest(8000+i, 1)))
				}
				synctest.Wait()
				before := len(f.sent())

				start := time.Now()
				r := newRequest(1, tt.rows)
				res, err := l.Submit(t.Context(), r)
				if err != nil {
					t.Fatalf("Submit: %v", err)
				}
				if got := time.Since(start); got != tt.latency {
					t.Errorf("Submit returned after %v, want the runtime's latency %v", got, tt.latency)
				}
				checkEcho(t, r, res)
				if res.BatchRows != tt.rows || res.Endpoint != "a" || res.QueueWait != 0 {
					t.Errorf("result: %d batch rows from %q after %v in queue, want %d from \"a\" after 0", res.BatchRows, res.Endpoint, res.QueueWait, tt.rows)
				}
				sent := f.sentAfter(before)
				if len(sent) != 1 {
					t.Fatalf("%d batches sent, want 1", len(sent))
				}
				if !sent[0].at.Equal(start) || sent[0].rows != tt.rows {
					t.Errorf("batch of %d rows sent %v after Submit, want %d rows at once", sent[0].rows, sent[0].at.Sub(start), tt.rows)
				}
				for _, b := range blockers {
					must(t, "blocker", b)
				}
			})
		})
	}
}

// TestBatchFormsWhileBusy checks the in-transit batch: while the only slot
// is busy, rows gather and leave MaxQueueDelay before the running batch is
// predicted (from the learned latency) to end, all in one batch.
func TestBatchFormsWhileBusy(t *testing.T) {
	const (
		latency = 10 * time.Millisecond
		n       = 20
		every   = 250 * time.Microsecond // between arrivals: all 20 arrive within 5ms
	)
	tests := []struct {
		name  string
		delay time.Duration // MaxQueueDelay
	}{
		{name: "no delay", delay: 0},
		{name: "2ms", delay: 2 * time.Millisecond},
		{name: "5ms", delay: 5 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeCaller(map[string]time.Duration{"a": latency})
				l := newTestLane(t, Config{MaxQueueDelay: tt.delay, MaxBatchSize: 64, Endpoints: []Endpoint{{Address: "a", Slots: 1}}}, f)
				warm(t, l)
				before := len(f.sent())

				t1 := time.Now()
				first := submit(t.Context(), l, newRequest(1, 1))
				synctest.Wait()
				var reqs []*Request
				var outs []<-chan outcome
				var wantKeys []float32
				for i := range n {
					r := newRequest(10+i, 1)
					reqs = append(reqs, r)
					wantKeys = append(wantKeys, keysOf(10+i, 1)...)
					outs = append(outs, submit(t.Context(), l, r))
					synctest.Wait() // admitted before the next one
					time.Sleep(every)
				}

				sendAt := t1.Add(latency - tt.delay)
				if o := must(t, "first", first); !o.at.Equal(t1.Add(latency)) {
					t.Errorf("first request answered at +%v, want +%v", o.at.Sub(t1), latency)
				}
				for i, ch := range outs {
					o := must(t, "batched request", ch)
					checkEcho(t, reqs[i], o.res)
					arrived := t1.Add(time.Duration(i) * every)
					if !o.at.Equal(sendAt.Add(latency)) || o.res.BatchRows != n || o.res.QueueWait != sendAt.Sub(arrived) {
						t.Errorf("request %d: answered at +%v in a batch of %d after %v queued, want +%v, %d, %v",
							i, o.at.Sub(t1), o.res.BatchRows, o.res.QueueWait, sendAt.Add(latency).Sub(t1), n, sendAt.Sub(arrived))
					}
				}
				sent := f.sentAfter(before)
				if len(sent) != 2 {
					t.Fatalf("%d batches sent, want 2: %v", len(sent), sent)
				}
				if !sent[0].at.Equal(t1) || sent[0].rows != 1 {
					t.Errorf("first batch: %d rows at +%v, want 1 at +0", sent[0].rows, sent[0].at.Sub(t1))
				}
				if !sent[1].at.Equal(sendAt) || sent[1].rows != n {
					t.Errorf("second batch: %d rows at +%v, want %d at +%v (learned latency less MaxQueueDelay)",
						sent[1].rows, sent[1].at.Sub(t1), n, sendAt.Sub(t1))
				}
				if !slices.Equal(sent[1].keys, wantKeys) {
					t.Errorf("second batch rows %v, want arrival order %v", sent[1].keys, wantKeys)
				}
			})
		})
	}
}

// TestFullBatchGoesWhileBusy checks that a full batch is sent in transit at
// once, without waiting for the predicted end of the running batches, and
// that an endpoint never has more than Slots+1 batches in flight.
func TestFullBatchGoesWhileBusy(t *testing.T) {
	const (
		latency  = 10 * time.Millisecond
		maxBatch = 8
	)
	for _, slots := range []int{1, 2, 3} {
		t.Run("slots="+itoa(slots), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeCaller(map[string]time.Duration{"a": latency})
				l := newTestLane(t, Config{MaxQueueDelay: 2 * time.Millisecond, MaxBatchSize: maxBatch, Endpoints: []Endpoint{{Address: "a", Slots: slots}}}, f)
				warm(t, l)
				before := len(f.sent())

				t1 := time.Now()
				var outs []<-chan outcome
				id := 0
				burst := func(n int) {
					for range n {
						outs = append(outs, submit(t.Context(), l, newRequest(id, 1)))
						id++
					}
					synctest.Wait()
				}
				burst(slots) // one per slot, each sent alone at once
				time.Sleep(time.Millisecond)
				burst(maxBatch) // a full batch: in transit at once
				time.Sleep(time.Millisecond)
				burst(maxBatch) // no room: waits for the first slot to free
				for _, ch := range outs {
					must(t, "request", ch)
				}

				type want struct {
					at   time.Duration
					rows int
				}
				var wants []want
				for range slots {
					wants = append(wants, want{0, 1})
				}
				wants = append(wants, want{time.Millisecond, maxBatch}, want{latency, maxBatch})
				var got []want
				for _, b := range f.sentAfter(before) {
					got = append(got, want{b.at.Sub(t1), b.rows})
				}
				if !slices.Equal(got, wants) {
					t.Errorf("batches (time sent, rows) = %v, want %v", got, wants)
				}
				if p := f.peakInFlight("a"); p != slots+1 {
					t.Errorf("at most %d batches in flight, want Slots+1 = %d", p, slots+1)
				}
			})
		})
	}
}

// TestLargeRequestSplits checks that a request of more than MaxBatchSize
// rows rides in several batches, none over MaxBatchSize, and comes back
// whole and in order, also when its pieces share batches with others.
func TestLargeRequestSplits(t *testing.T) {
	tests := []struct {
		name  string
		ahead int // rows of a request queued just before, behind a busy slot
		rows  int
		want  []int // rows of each batch
	}{
		{name: "64", rows: 64, want: []int{64}},
		{name: "65", rows: 65, want: []int{64, 1}},
		{name: "150", rows: 150, want: []int{64, 64, 22}},
		{name: "150 behind 10", ahead: 10, rows: 150, want: []int{64, 64, 32}},
		{name: "130 behind 63", ahead: 63, rows: 130, want: []int{64, 64, 64, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeCaller(map[string]time.Duration{"a": 10 * time.Millisecond})
				l := newTestLane(t, Config{MaxBatchSize: 64, Endpoints: []Endpoint{{Address: "a", Slots: 1}}}, f)
				var wantKeys []float32
				var aheadReq *Request
				var aheadOut, blocker <-chan outcome
				if tt.ahead > 0 {
					warm(t, l)
					blocker = submit(t.Context(), l, newRequest(8000, 1))
					synctest.Wait()
					aheadReq = newRequest(1, tt.ahead)
					wantKeys = keysOf(1, tt.ahead)
				}
				before := len(f.sent())
				if aheadReq != nil {
					aheadOut = submit(t.Context(), l, aheadReq)
					synctest.Wait()
				}
				r := newRequest(2, tt.rows)
				wantKeys = append(wantKeys, keysOf(2, tt.rows)...)
				o := must(t, "large request", submit(t.Context(), l, r))
				checkEcho(t, r, o.res)
				if aheadOut != nil {
					checkEcho(t, aheadReq, must(t, "request ahead", aheadOut).res)
					must(t, "blocker", blocker)
				}

				var sizes []int
				var keys []float32
				for _, b := range byTime(f.sentAfter(before)) {
					sizes = append(sizes, b.rows)
					keys = append(keys, b.keys...)
				}
				if !slices.Equal(sizes, tt.want) {
					t.Errorf("batch sizes %v, want %v", sizes, tt.want)
				}
				if !slices.Equal(keys, wantKeys) {
					t.Errorf("rows sent in the order %v, want %v", keys, wantKeys)
				}
				// Pieces answered at the same instant may settle in any
				// order: BatchRows is the size of the batch of the piece
				// answered last.
				if !slices.Contains(tt.want, o.res.BatchRows) {
					t.Errorf("BatchRows = %d, want one of the batch sizes %v", o.res.BatchRows, tt.want)
				}
			})
		})
	}
}

// TestGroupsNeverMix checks that requests of different groups never share
// a batch, under a random mix of arrivals over two endpoints.
func TestGroupsNeverMix(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeCaller(map[string]time.Duration{"a": 3 * time.Millisecond, "b": 5 * time.Millisecond})
		l := newTestLane(t, Config{
			MaxBatchSize: 8, MaxQueueDelay: time.Millisecond,
			Endpoints: []Endpoint{{Address: "a"}, {Address: "b", Slots: 2}},
		}, f)
		rnd := rand.New(rand.NewPCG(1, 2))
		groupOf := func(id int) string { return "g" + itoa(id%3) }
		var reqs []*Request
		var outs []<-chan outcome
		for id := range 60 {
			r := newRequest(id, 1+rnd.IntN(5))
			r.Group = groupOf(id)
			r.Inputs[0].Name = "x" + r.Group // would not stack with another group's input
			reqs = append(reqs, r)
			outs = append(outs, submit(t.Context(), l, r))
			time.Sleep(time.Duration(rnd.IntN(1000)) * time.Microsecond)
		}
		for i, ch := range outs {
			checkEcho(t, reqs[i], must(t, "request "+itoa(i), ch).res)
		}
		shared := 0
		for _, b := range f.sent() {
			if b.rows > 8 {
				t.Errorf("batch of %d rows, over MaxBatchSize 8", b.rows)
			}
			g := groupOf(int(b.keys[0]) / 1000)
			for _, k := range b.keys {
				if other := groupOf(int(k) / 1000); other != g {
					t.Errorf("batch %v mixes groups %s and %s", b.keys, g, other)
					break
				}
			}
			if int(b.keys[0])/1000 != int(b.keys[len(b.keys)-1])/1000 {
				shared++
			}
		}
		if shared == 0 {
			t.Error("no batch carried two requests: the test did not exercise batching")
		}
	})
}

// TestGroupOrder checks that the next batch goes to the group whose first
// row has the highest priority, then the earliest arrival.
func TestGroupOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeCaller(map[string]time.Duration{"a": 10 * time.Millisecond})
		l := newTestLane(t, Config{MaxBatchSize: 4, Endpoints: []Endpoint{{Address: "a"}}}, f)
		// Fill the slot and the batch in transit (full: sent at once).
		b1 := submit(t.Context(), l, newRequest(8000, 4))
		b2 := submit(t.Context(), l, newRequest(8001, 4))
		synctest.Wait()
		before := len(f.sent())
		type sub struct {
			id    int
			group string
			prio  Priority
		}
		subs := []sub{{1, "g1", PriorityLow}, {2, "g2", PriorityNormal}, {3, "g3", PriorityNormal}, {4, "g1", PriorityHigh}}
		var outs []<-chan outcome
		for _, s := range subs {
			r := newRequest(s.id, 1)
			r.Group, r.Priority = s.group, s.prio
			outs = append(outs, submit(t.Context(), l, r))
			synctest.Wait()
			time.Sleep(time.Microsecond)
		}
		for _, ch := range append(outs, b1, b2) {
			must(t, "request", ch)
		}
		var got [][]float32
		for _, b := range f.sentAfter(before) {
			got = append(got, b.keys)
		}
		// g1 holds the high request: it goes first, with its low row
		// behind; then the normal groups in arrival order.
		want := [][]float32{{key(4, 0), key(1, 0)}, {key(2, 0)}, {key(3, 0)}}
		if !slices.EqualFunc(got, want, slices.Equal) {
			t.Errorf("batches %v, want %v", got, want)
		}
	})
}
