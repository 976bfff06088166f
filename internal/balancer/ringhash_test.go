package balancer

import (
	"fmt"
	"strconv"
	"testing"
)

func idle(n int) []Load {
	loads := make([]Load, n)
	for i := range loads {
		loads[i] = Load{Weight: 1, Eligible: true}
	}
	return loads
}

var fourAddrs = []string{"10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000", "10.0.0.4:8000"}

func TestRingHashSameKeySameEndpoint(t *testing.T) {
	r := NewRingHash(fourAddrs, nil, 0)
	again := NewRingHash(fourAddrs, nil, 0) // another sidecar's ring
	loads := idle(4)
	seen := make([]int, 4)
	for k := range 200 {
		key := "tenant-" + strconv.Itoa(k)
		first := r.PickKey(key, loads)
		if first < 0 {
			t.Fatalf("key %q: no endpoint", key)
		}
		seen[first]++
		for range 3 {
			if got := r.PickKey(key, loads); got != first {
				t.Fatalf("key %q: picked %d then %d", key, first, got)
			}
		}
		if got := again.PickKey(key, loads); got != first {
			t.Fatalf("key %q: %d on one ring, %d on an identical one", key, first, got)
		}
	}
	for i, n := range seen {
		if n == 0 {
			t.Errorf("endpoint %d got no key of 200: %v", i, seen)
		}
	}
}

func TestRingHashRemovalMovesAQuarter(t *testing.T) {
	before := NewRingHash(fourAddrs, nil, 0)
	removed := 2
	rest := append(append([]string(nil), fourAddrs[:removed]...), fourAddrs[removed+1:]...)
	after := NewRingHash(rest, nil, 0)
	moved := 0
	const keys = 1000
	for k := range keys {
		key := fmt.Sprintf("tenant-%d", k)
		a := fourAddrs[before.PickKey(key, idle(4))]
		b := rest[after.PickKey(key, idle(3))]
		if a != b {
			moved++
			if a != fourAddrs[removed] {
				t.Errorf("key %q moved from %s, which was not removed, to %s", key, a, b)
			}
		}
	}
	if moved < keys*15/100 || moved > keys*35/100 {
		t.Errorf("removing 1 of 4 endpoints moved %d of %d keys, want about 250", moved, keys)
	}
}

func TestRingHashWeights(t *testing.T) {
	r := NewRingHash(fourAddrs[:2], []int{1, 3}, 0)
	counts := make([]int, 2)
	for k := range 4000 {
		counts[r.PickKey("t"+strconv.Itoa(k), idle(2))]++
	}
	if counts[1] < 2600 || counts[1] > 3400 {
		t.Errorf("weights 1:3 got keys %v, want about 1000:3000", counts)
	}
}

// TestRingHashBoundedLoadSpreadsHotKey sends one hot key's batches while
// completing none: once its endpoint holds more than 1.25× its share, the
// batches walk on to the next endpoints, and no endpoint ends far above the
// bound.
func TestRingHashBoundedLoadSpreadsHotKey(t *testing.T) {
	r := NewRingHash(fourAddrs, nil, 0)
	loads := idle(4)
	home := r.PickKey("hot", loads)
	const batches, rows = 400, 8
	for range batches {
		i := r.PickKey("hot", loads)
		loads[i].InFlightRows += rows
	}
	if got := loads[home].InFlightRows; got >= batches*rows/2 {
		t.Errorf("hot key's endpoint holds %d of %d rows, want it spread", got, batches*rows)
	}
	limit := int(BoundedLoad*batches*rows/4) + rows
	for i, l := range loads {
		if l.InFlightRows == 0 {
			t.Errorf("endpoint %d never took the hot key: %+v", i, loads)
		}
		if l.InFlightRows > limit {
			t.Errorf("endpoint %d holds %d rows, over the bound %d", i, l.InFlightRows, limit)
		}
	}
	// With the load gone, the key goes home again.
	if got := r.PickKey("hot", idle(4)); got != home {
		t.Errorf("idle again: picked %d, want home %d", got, home)
	}
}

func TestRingHashSkipsIneligible(t *testing.T) {
	r := NewRingHash(fourAddrs, nil, 0)
	loads := idle(4)
	home := r.PickKey("k", loads)
	loads[home].Eligible = false
	if got := r.PickKey("k", loads); got == home || got < 0 {
		t.Errorf("home %d ineligible: picked %d", home, got)
	}
	for i := range loads {
		loads[i].Eligible = false
	}
	if got := r.PickKey("k", loads); got != -1 {
		t.Errorf("none eligible: picked %d, want -1", got)
	}
	if got := NewRingHash(nil, nil, 0).Pick(idle(2)); got != -1 {
		t.Errorf("empty ring: picked %d, want -1", got)
	}
	if got := r.Pick(idle(2)); got != 0 && got != 1 {
		t.Errorf("fewer loads than addresses: picked %d, want 0 or 1", got)
	}
}

func TestRingHashPickAllocs(t *testing.T) {
	r := NewRingHash(fourAddrs, []int{1, 2, 3, 1}, 0)
	loads := idle(4)
	if a := testing.AllocsPerRun(1000, func() { r.PickKey("tenant-7", loads) }); a != 0 {
		t.Errorf("PickKey allocates %v times per call, want 0", a)
	}
}

func BenchmarkRingHash(b *testing.B) {
	addrs := make([]string, 8)
	weights := make([]int, 8)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("10.0.0.%d:8000", i+1)
		weights[i] = 1 + i%3
	}
	r := NewRingHash(addrs, weights, 0)
	loads := benchLoads()
	b.ReportAllocs()
	for b.Loop() {
		r.PickKey("tenant-42", loads)
	}
}
