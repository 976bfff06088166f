package cache_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/batchmesh/batchmesh/internal/cache"
	"github.com/batchmesh/batchmesh/internal/inference"
)

// newCache builds a cache whose metrics a test can read.
func newCache(t testing.TB, cfg cache.Config) (*cache.Cache, *sdkmetric.ManualReader) {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	cfg.Meter = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("cache_test")
	c, err := cache.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c, reader
}

// metricSum returns the sum over data points of the int64 counter or gauge
// name, and whether it was recorded at all.
func metricSum(t *testing.T, r *sdkmetric.ManualReader, name string) (int64, bool) {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			var sum int64
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					sum += p.Value
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					sum += p.Value
				}
			default:
				t.Fatalf("metric %s has data of type %T", name, m.Data)
			}
			return sum, true
		}
	}
	return 0, false
}

func counter(t *testing.T, r *sdkmetric.ManualReader, name string) int64 {
	t.Helper()
	v, _ := metricSum(t, r, name)
	return v
}

func keyOf(i int) cache.Key {
	return cache.Key(sha256.Sum256(binary.LittleEndian.AppendUint64(nil, uint64(i))))
}

// valueOf is a one-output Value of n bytes, each byte seed.
func valueOf(n int, seed byte) *cache.Value {
	return cache.NewValue([]inference.Tensor{{
		Name: "output", DataType: inference.Uint8, Shape: []int64{1, int64(n)}, Data: bytes.Repeat([]byte{seed}, n),
	}})
}

// fill leads k and completes it with v, expiring at expires.
func fill(t testing.TB, c *cache.Cache, k cache.Key, v *cache.Value, now, expires time.Time) {
	t.Helper()
	_, call, role := c.Lookup("m", k, now, true)
	if role != cache.Leader {
		t.Fatalf("lookup of a new key: role %d, want Leader", role)
	}
	c.Complete("m", k, call, v, nil, expires, true)
}

var far = time.Now().Add(time.Hour)

func TestNewLimits(t *testing.T) {
	for _, tc := range []struct {
		name        string
		cfg         cache.Config
		wantBytes   int64
		wantEntries int
		wantErr     bool
	}{
		{name: "zero means defaults", cfg: cache.Config{}, wantBytes: 256 << 20, wantEntries: 4 << 20},
		{name: "explicit", cfg: cache.Config{MaxBytes: 1000, MaxEntries: 7}, wantBytes: 1000, wantEntries: 7},
		{name: "negative bytes", cfg: cache.Config{MaxBytes: -1}, wantErr: true},
		{name: "negative entries", cfg: cache.Config{MaxEntries: -1}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := cache.New(tc.cfg)
			if tc.wantErr {
				if err == nil {
					t.Fatal("New succeeded, want an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if b, e := c.Limits(); b != tc.wantBytes || e != tc.wantEntries {
				t.Errorf("Limits() = %d bytes, %d entries; want %d, %d", b, e, tc.wantBytes, tc.wantEntries)
			}
			if e, b := c.Usage(); e != 0 || b != 0 {
				t.Errorf("new cache Usage() = %d entries, %d bytes; want empty", e, b)
			}
		})
	}
}

func TestNewValueCopies(t *testing.T) {
	src := []inference.Tensor{
		{Name: "a", DataType: inference.FP32, Shape: []int64{1, 2}, Data: []byte{1, 2, 3, 4, 5, 6, 7, 8}},
		{Name: "b", DataType: inference.Uint8, Shape: []int64{1, 3}, Data: []byte{9, 10, 11}},
	}
	v := cache.NewValue(src)
	src[0].Data[0], src[1].Data[0], src[0].Shape[1] = 0xff, 0xff, 99
	if got := v.Outputs[0]; got.Data[0] != 1 || got.Shape[1] != 2 || got.Name != "a" {
		t.Errorf("output a = %+v; NewValue must copy data and shape", got)
	}
	if got := v.Outputs[1]; !bytes.Equal(got.Data, []byte{9, 10, 11}) {
		t.Errorf("output b data = %v, want [9 10 11]", got.Data)
	}
	// Appending to one output's data must not run into the next one's.
	_ = append(v.Outputs[0].Data, 0xee)
	if v.Outputs[1].Data[0] != 9 {
		t.Error("appending to output a overwrote output b: the data slices share capacity")
	}
	if v.Size() < 8+3 {
		t.Errorf("Size() = %d, less than the data it holds", v.Size())
	}
}

// TestLookupComplete walks one key through its roles: a leader, a follower
// of the same call, then hits.
func TestLookupComplete(t *testing.T) {
	c, r := newCache(t, cache.Config{})
	now, k := time.Now(), keyOf(1)
	val, lead, role := c.Lookup("m", k, now, true)
	if role != cache.Leader || val != nil || lead == nil {
		t.Fatalf("first lookup: %v %v %d, want a Leader call", val, lead, role)
	}
	_, follow, role := c.Lookup("m", k, now, true)
	if role != cache.Follower || follow != lead {
		t.Fatalf("second lookup while in flight: role %d (same call: %v), want a Follower of the leader's call", role, follow == lead)
	}
	select {
	case <-follow.Done():
		t.Fatal("call done before Complete")
	default:
	}
	v := valueOf(10, 7)
	c.Complete("m", k, lead, v, nil, now.Add(time.Minute), true)
	<-follow.Done()
	if got, err := follow.Result(); got != v || err != nil {
		t.Errorf("follower result = %p, %v; want the leader's value", got, err)
	}
	for range 2 {
		got, call, role := c.Lookup("m", k, now, true)
		if role != cache.Hit || got != v || call != nil {
			t.Errorf("lookup after Complete: role %d value %p, want a Hit of %p", role, got, v)
		}
	}
	if e, b := c.Usage(); e != 1 || b != v.Size() {
		t.Errorf("Usage() = %d entries, %d bytes; want 1, %d", e, b, v.Size())
	}
	for name, want := range map[string]int64{
		"batchmesh_cache_hits": 2, "batchmesh_cache_misses": 2, "batchmesh_coalesced": 1, "batchmesh_cache_evictions": 0,
		"batchmesh_cache_entries": 1, "batchmesh_cache_bytes": v.Size(),
	} {
		if got := counter(t, r, name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
}

func TestOnlySuccessStored(t *testing.T) {
	c, _ := newCache(t, cache.Config{})
	now, k := time.Now(), keyOf(2)
	_, lead, _ := c.Lookup("m", k, now, true)
	_, follow, _ := c.Lookup("m", k, now, true)
	boom := errors.New("runtime said no")
	c.Complete("m", k, lead, nil, boom, far, true)
	<-follow.Done()
	if v, err := follow.Result(); v != nil || !errors.Is(err, boom) {
		t.Errorf("follower result = %v, %v; want the leader's error", v, err)
	}
	if _, _, role := c.Lookup("m", k, now, true); role != cache.Leader {
		t.Errorf("lookup after a failed call: role %d, want Leader (errors are not stored)", role)
	}
	if e, _ := c.Usage(); e != 0 {
		t.Errorf("%d entries after a failure, want 0", e)
	}
}

// TestNoStoreNoCache: Complete with store false keeps nothing; Lookup with
// lookup false skips a stored value, counts no miss, and its Complete
// replaces the entry without counting an eviction.
func TestNoStoreNoCache(t *testing.T) {
	c, r := newCache(t, cache.Config{})
	now, k := time.Now(), keyOf(3)
	_, call, _ := c.Lookup("m", k, now, true)
	c.Complete("m", k, call, valueOf(10, 1), nil, far, false)
	if e, b := c.Usage(); e != 0 || b != 0 {
		t.Fatalf("no-store Complete kept %d entries, %d bytes", e, b)
	}
	old := valueOf(10, 1)
	fill(t, c, k, old, now, far)
	misses := counter(t, r, "batchmesh_cache_misses")
	v, call, role := c.Lookup("m", k, now, false)
	if role != cache.Leader || v != nil {
		t.Fatalf("no-cache lookup of a stored key: role %d, want Leader", role)
	}
	if got := counter(t, r, "batchmesh_cache_misses"); got != misses {
		t.Errorf("no-cache lookup counted %d misses, want none (nothing was looked up)", got-misses)
	}
	fresh := valueOf(20, 2)
	c.Complete("m", k, call, fresh, nil, far, true)
	if got, _, role := c.Lookup("m", k, now, true); role != cache.Hit || got != fresh {
		t.Errorf("after a no-cache fill: role %d value %p, want a Hit of the fresh value %p", role, got, fresh)
	}
	if e, b := c.Usage(); e != 1 || b != fresh.Size() {
		t.Errorf("Usage() = %d entries, %d bytes; want 1, %d (the old value released)", e, b, fresh.Size())
	}
	if got := counter(t, r, "batchmesh_cache_evictions"); got != 0 {
		t.Errorf("a replacement counted %d evictions, want 0", got)
	}
}

// TestByteBoundUnderStream stores a stream of large distinct values: the
// bytes held never pass MaxBytes, every value pushed out is an eviction,
// and the heap holds little more than the bound.
func TestByteBoundUnderStream(t *testing.T) {
	const maxBytes = 4 << 20
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	c, r := newCache(t, cache.Config{MaxBytes: maxBytes})
	rnd := rand.New(rand.NewPCG(1, 2))
	now := time.Now()
	stored, total := 0, int64(0)
	for i := range 1000 {
		n := 16<<10 + rnd.IntN(240<<10) // 16 KiB to 256 KiB
		src := make([]byte, n)          // a fresh buffer, as an upstream reply is
		src[0] = byte(i)
		v := cache.NewValue([]inference.Tensor{{Name: "output", DataType: inference.Uint8, Shape: []int64{1, int64(n)}, Data: src}})
		fill(t, c, keyOf(i), v, now, far)
		stored++
		total += int64(n)
		if e, b := c.Usage(); b > maxBytes || b <= 0 || e <= 0 {
			t.Fatalf("after %d values: %d entries, %d bytes; bound %d", i+1, e, b, maxBytes)
		}
	}
	if total < 20*maxBytes {
		t.Fatalf("only %d bytes streamed; the test wants many times the bound", total)
	}
	entries, held := c.Usage()
	if ev := counter(t, r, "batchmesh_cache_evictions"); ev != int64(stored-entries) {
		t.Errorf("evictions = %d, want %d (stored %d, held %d)", ev, stored-entries, stored, entries)
	}
	if g := counter(t, r, "batchmesh_cache_bytes"); g != held {
		t.Errorf("batchmesh_cache_bytes = %d, Usage says %d", g, held)
	}
	if g := counter(t, r, "batchmesh_cache_entries"); g != int64(entries) {
		t.Errorf("batchmesh_cache_entries = %d, Usage says %d", g, entries)
	}
	// The most recent values are the ones kept.
	if _, _, role := c.Lookup("m", keyOf(999), now, true); role != cache.Hit {
		t.Errorf("the newest value was evicted (role %d)", role)
	}
	if _, call, role := c.Lookup("m", keyOf(0), now, true); role != cache.Leader {
		t.Errorf("the oldest value is still held (role %d)", role)
	} else {
		c.Complete("m", keyOf(0), call, nil, errors.New("unused"), far, true)
	}

	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > maxBytes+maxBytes/4+(1<<20) {
		t.Errorf("heap grew by %d bytes holding a cache bounded at %d", grew, maxBytes)
	}
	runtime.KeepAlive(c)
}

func TestValueOverBoundNotStored(t *testing.T) {
	c, _ := newCache(t, cache.Config{MaxBytes: 1000})
	now, k := time.Now(), keyOf(4)
	small := valueOf(100, 1)
	fill(t, c, keyOf(5), small, now, far)
	_, lead, _ := c.Lookup("m", k, now, true)
	_, follow, _ := c.Lookup("m", k, now, true)
	big := valueOf(2000, 2)
	c.Complete("m", k, lead, big, nil, far, true)
	if v, err := follow.Result(); v != big || err != nil {
		t.Errorf("follower of a too-large value got %p, %v; want the value", v, err)
	}
	if e, b := c.Usage(); e != 1 || b != small.Size() {
		t.Errorf("Usage() = %d entries, %d bytes; want the small value alone (%d bytes)", e, b, small.Size())
	}
	if _, _, role := c.Lookup("m", keyOf(5), now, true); role != cache.Hit {
		t.Error("storing a value larger than the bound evicted the others")
	}
}

func TestEntryBound(t *testing.T) {
	c, r := newCache(t, cache.Config{MaxEntries: 10})
	now := time.Now()
	v := valueOf(8, 1)
	for i := range 25 {
		fill(t, c, keyOf(i), v, now, far)
	}
	if e, b := c.Usage(); e != 10 || b != 10*v.Size() {
		t.Errorf("Usage() = %d entries, %d bytes; want 10, %d", e, b, 10*v.Size())
	}
	if ev := counter(t, r, "batchmesh_cache_evictions"); ev != 15 {
		t.Errorf("evictions = %d, want 15", ev)
	}
}

// TestTTLExpiry: a value is a hit until its expiry and a miss after, under
// fake time. An expired entry is dropped without counting as an eviction.
func TestTTLExpiry(t *testing.T) {
	const ttl = 10 * time.Minute
	synctest.Test(t, func(t *testing.T) {
		c, r := newCache(t, cache.Config{})
		k := keyOf(6)
		v := valueOf(32, 3)
		fill(t, c, k, v, time.Now(), time.Now().Add(ttl))

		time.Sleep(ttl - time.Nanosecond)
		if got, _, role := c.Lookup("m", k, time.Now(), true); role != cache.Hit || got != v {
			t.Fatalf("just before the TTL: role %d, want a Hit", role)
		}
		time.Sleep(time.Nanosecond)
		_, call, role := c.Lookup("m", k, time.Now(), true)
		if role != cache.Leader {
			t.Fatalf("at the TTL: role %d, want Leader (expired)", role)
		}
		if e, b := c.Usage(); e != 0 || b != 0 {
			t.Errorf("after expiry: %d entries, %d bytes; want the entry dropped", e, b)
		}
		if ev := counter(t, r, "batchmesh_cache_evictions"); ev != 0 {
			t.Errorf("expiry counted %d evictions, want 0", ev)
		}
		if m := counter(t, r, "batchmesh_cache_misses"); m != 2 {
			t.Errorf("misses = %d, want 2 (the first fill and the expired lookup)", m)
		}
		fresh := valueOf(32, 4)
		c.Complete("m", k, call, fresh, nil, time.Now().Add(ttl), true)
		time.Sleep(ttl / 2)
		if got, _, role := c.Lookup("m", k, time.Now(), true); role != cache.Hit || got != fresh {
			t.Errorf("refilled value within its TTL: role %d, want a Hit of the fresh value", role)
		}
	})
}

// TestConcurrent races lookups and completions on a few keys: every
// follower gets its leader's value, and the accounting stays consistent.
func TestConcurrent(t *testing.T) {
	c, r := newCache(t, cache.Config{MaxBytes: 64 * 1024})
	const workers, perWorker, keys = 16, 500, 40
	now := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(w), 9))
			for range perWorker {
				i := rnd.IntN(keys)
				k := keyOf(i)
				v, call, role := c.Lookup("m", k, now, rnd.IntN(8) != 0)
				switch role {
				case cache.Hit:
				case cache.Leader:
					v = valueOf(100+i, byte(i))
					if rnd.IntN(10) == 0 {
						c.Complete("m", k, call, nil, errors.New("failed"), far, true)
						continue
					}
					c.Complete("m", k, call, v, nil, far, rnd.IntN(4) != 0)
				case cache.Follower:
					<-call.Done()
					var err error
					if v, err = call.Result(); err != nil {
						continue
					}
				}
				if len(v.Outputs[0].Data) != 100+i || v.Outputs[0].Data[0] != byte(i) {
					t.Errorf("key %d: got a value of %d bytes starting %d", i, len(v.Outputs[0].Data), v.Outputs[0].Data[0])
					return
				}
			}
		})
	}
	wg.Wait()
	entries, held := c.Usage()
	if held > 64*1024 || entries > keys {
		t.Errorf("Usage() = %d entries, %d bytes; bound %d bytes, %d keys", entries, held, 64*1024, keys)
	}
	lookups := counter(t, r, "batchmesh_cache_hits") + counter(t, r, "batchmesh_cache_misses")
	if lookups == 0 || lookups > workers*perWorker {
		t.Errorf("hits+misses = %d for %d lookups", lookups, workers*perWorker)
	}
}
