package sidecar

import (
	"math"
	"runtime/debug"
	"testing"

	"github.com/batchmesh/batchmesh/internal/config"
)

func TestMemoryLimit(t *testing.T) {
	const mib = 1 << 20
	cached := &config.Config{CacheBytes: 256 * mib, Models: []config.Model{{Name: "a"}, {Name: "b", Cache: config.Cache{Enabled: true}}}}
	uncached := &config.Config{CacheBytes: 256 * mib, Models: []config.Model{{Name: "a"}}}
	tests := []struct {
		name string
		c    *config.Config
		want int64
	}{
		{"no configuration yet", nil, 64*mib + 4*256*mib},
		{"no model caches: the cache is never filled", uncached, 1088 * mib},
		{"a model caches", cached, 1088*mib + 2*256*mib},
	}
	for _, tt := range tests {
		if got := memoryLimit(256*mib, tt.c); got != tt.want {
			t.Errorf("%s: memoryLimit = %d MiB, want %d MiB", tt.name, got/mib, tt.want/mib)
		}
	}
}

// TestSetMemoryLimit checks that the sidecar sets Go's soft limit a
// sixteenth under the bound, follows a new configuration, and leaves a
// GOMEMLIMIT from the environment alone.
func TestSetMemoryLimit(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(math.MaxInt64))
	c, err := config.Parse("t.yaml", []byte("models:\n  - name: m\n    versions: [{version: \"1\", endpoints: [{address: 127.0.0.1:1}]}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Models: c})
	if err != nil {
		t.Fatal(err)
	}
	bound := memoryLimit(s.proxy.MaxBodyBytesInFlight(), nil)
	s.setMemoryLimit(nil)
	if got := debug.SetMemoryLimit(-1); got != bound-bound/16 {
		t.Fatalf("memory limit %d, want %d (a sixteenth under %d)", got, bound-bound/16, bound)
	}
	c.Models[0].Cache.Enabled = true
	s.setMemoryLimit(c)
	withCache := bound + 2*c.CacheBytes
	if got := debug.SetMemoryLimit(-1); got != withCache-withCache/16 {
		t.Fatalf("memory limit with a cache %d, want %d", got, withCache-withCache/16)
	}
	debug.SetMemoryLimit(math.MaxInt64)
	t.Setenv("GOMEMLIMIT", "2GiB")
	s.setMemoryLimit(c)
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Fatalf("with GOMEMLIMIT set the sidecar changed the limit to %d", got)
	}
}
