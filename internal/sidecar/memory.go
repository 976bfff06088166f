package sidecar

import (
	"os"
	"runtime/debug"

	"github.com/batchmesh/batchmesh/internal/config"
)

// processBytes is the sidecar's own memory in the bound of memoryLimit.
const processBytes = 64 << 20

// memoryLimit is the documented bound of the sidecar's memory
// (docs/resilience.md): the process itself, four copies of every body the
// budget admits (as received, as a batch tensor, as the upstream request,
// and its answer from the runtime while the reply is written), and the row
// cache twice (the collector's headroom) when a model uses it.
func memoryLimit(budget int, c *config.Config) int64 {
	limit := processBytes + 4*int64(budget)
	if c == nil {
		return limit
	}
	for _, m := range c.Models {
		if m.Cache.Enabled {
			return limit + 2*c.CacheBytes
		}
	}
	return limit
}

// setMemoryLimit sets Go's soft memory limit just under memoryLimit, unless the
// GOMEMLIMIT variable sets one. Without it the collector paces itself by
// GOGC alone and returns the memory of answered bodies late: bursts of
// eight 60 MiB bodies reached 1,026 MiB. With it the collector runs
// harder as the process nears the bound. It is called at start and with each new configuration (the cache
// may come or go).
func (s *Sidecar) setMemoryLimit(c *config.Config) {
	if _, set := os.LookupEnv("GOMEMLIMIT"); set {
		return
	}
	// A sixteenth below the bound: the limit is soft, and memory the
	// collector has freed goes back to the system a little later.
	limit := memoryLimit(s.proxy.MaxBodyBytesInFlight(), c)
	limit -= limit / 16
	if old := debug.SetMemoryLimit(limit); old != limit {
		s.cfg.Logger.Debug("memory limit", "bytes", limit)
	}
}
