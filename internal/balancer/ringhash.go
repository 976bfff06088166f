package balancer

import (
	"math"
	"slices"
	"strconv"
)

// DefaultReplicas is the number of ring points per unit of weight when
// NewRingHash is given replicas <= 0.
const DefaultReplicas = 100

// BoundedLoad is the c of consistent hashing with bounded loads: an
// endpoint holding more than c times its weighted share of the in-flight
// rows is passed over for the next one on the ring.
const BoundedLoad = 1.25

// RingHash is consistent hashing with bounded loads (Mirrokni et al.,
// Envoy's and gRPC's ring_hash): a key (the X-Batchmesh-Tenant) hashes to a
// point on a ring of virtual nodes, replicas × weight per endpoint, and goes
// to the first endpoint clockwise that is eligible and not over
// BoundedLoad × its weighted share of the in-flight rows. The same key keeps
// reaching the same endpoint while it has capacity, and removing one of n
// endpoints moves only the keys that were on it (about 1/n).
//
// A RingHash is immutable: when the endpoints or weights change, build a
// new one and swap it in (for example through an atomic.Pointer). It is safe
// for concurrent use and its Pick and PickKey never block or allocate.
// loads[i] must be the endpoint addresses[i] given to NewRingHash; loads
// past the addresses are never picked, addresses past the loads count as
// ineligible.
type RingHash struct {
	points []ringPoint // sorted by hash
}

type ringPoint struct {
	hash     uint64
	endpoint int
}

// NewRingHash builds the ring for addresses, with weights[i] (0, negative
// or missing counts as 1) times replicas points for addresses[i]; replicas
// <= 0 means DefaultReplicas. The points depend only on the addresses,
// weights and replicas, so every sidecar with the same endpoint set builds
// the same ring. NewRingHash does not retain the slices.
func NewRingHash(addresses []string, weights []int, replicas int) *RingHash {
	if replicas <= 0 {
		replicas = DefaultReplicas
	}
	var points []ringPoint
	var buf []byte
	for i, addr := range addresses {
		w := 1
		if i < len(weights) && weights[i] > 0 {
			w = weights[i]
		}
		for k := range w * replicas {
			buf = append(append(buf[:0], addr...), '_')
			buf = strconv.AppendInt(buf, int64(k), 10)
			points = append(points, ringPoint{hash: hashBytes(buf), endpoint: i})
		}
	}
	slices.SortFunc(points, func(a, b ringPoint) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return a.endpoint - b.endpoint
	})
	return &RingHash{points: points}
}

// Pick is PickKey with the empty key: every batch starts at the same point
// of the ring and the bounded load spreads them.
func (r *RingHash) Pick(loads []Load) int { return r.PickKey("", loads) }

// PickKey returns the index of the endpoint for key, or -1 when none is
// eligible. When every eligible endpoint is over its bound (possible only
// through rounding) it returns the first eligible one on the ring after the
// key's point.
func (r *RingHash) PickKey(key string, loads []Load) int {
	if len(r.points) == 0 {
		return -1
	}
	total, weight := 0, 0
	for i := range loads {
		if loads[i].Eligible {
			total += loads[i].InFlightRows
			weight += max(loads[i].Weight, 1)
		}
	}
	if weight == 0 {
		return -1
	}
	h := hashString(key)
	start, _ := slices.BinarySearchFunc(r.points, h, func(p ringPoint, h uint64) int {
		switch {
		case p.hash < h:
			return -1
		case p.hash > h:
			return 1
		}
		return 0
	})
	fallback := -1
	for k := range r.points {
		i := r.points[(start+k)%len(r.points)].endpoint
		if i >= len(loads) || !loads[i].Eligible {
			continue
		}
		if fallback < 0 {
			fallback = i
		}
		// The bound is ceil(c × weighted share), so an idle ring or a
		// single batch in flight never moves a key.
		share := float64(total) * float64(max(loads[i].Weight, 1)) / float64(weight)
		if float64(loads[i].InFlightRows) <= math.Ceil(BoundedLoad*share) {
			return i
		}
	}
	return fallback
}

// FNV-1a, 64 bit, finished with murmur3's fmix64 so that nearby inputs
// ("10.0.0.1_7", "10.0.0.1_8") spread over the whole ring.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func hashString(s string) uint64 {
	h := uint64(fnvOffset)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * fnvPrime
	}
	return fmix64(h)
}

func hashBytes(b []byte) uint64 {
	h := uint64(fnvOffset)
	for _, c := range b {
		h = (h ^ uint64(c)) * fnvPrime
	}
	return fmix64(h)
}

func fmix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}
