package balancer

// Policy is what Zoned delegates to: P2C's Picker, EDF, RingHash or
// another Zoned. It returns an index into loads, or -1 when none is
// eligible, and must not block.
type Policy interface {
	Pick(loads []Load) int
}

// DefaultSpill is Zoned's Spill when it is zero.
const DefaultSpill = 2.0

// Zoned prefers the endpoints in the sidecar's own zone while they have
// capacity: when some local endpoint is eligible and its in-flight rows per
// unit of weight are at most Spill times the mean of all eligible
// endpoints, Inner picks among the local endpoints only; otherwise Inner
// picks among all of them.
//
// Set the fields before the first Pick and do not change them after; a
// Zoned must not be copied after first use. Zones[i] is the zone of
// loads[i]; loads past Zones count as remote. Like Inner, Zoned is not safe
// for concurrent use (the lane serialises its picks); Pick never blocks and
// allocates only when loads outgrows every earlier call.
type Zoned struct {
	Local string   // the sidecar's zone
	Zones []string // per endpoint, in the order of loads
	Inner Policy
	Spill float64 // 0 means DefaultSpill

	scratch []Load // loads with the remote endpoints made ineligible
}

// Pick returns the index of the chosen endpoint, or -1 when none is
// eligible.
func (z *Zoned) Pick(loads []Load) int {
	if !z.localHasCapacity(loads) {
		return z.Inner.Pick(loads)
	}
	if cap(z.scratch) < len(loads) {
		z.scratch = make([]Load, len(loads))
	}
	local := z.scratch[:len(loads)]
	copy(local, loads)
	for i := range local {
		if !z.isLocal(i) {
			local[i].Eligible = false
		}
	}
	return z.Inner.Pick(local)
}

func (z *Zoned) isLocal(i int) bool { return i < len(z.Zones) && z.Zones[i] == z.Local }

// localHasCapacity reports whether some eligible local endpoint has at most
// Spill times the mean in-flight rows per unit of weight.
func (z *Zoned) localHasCapacity(loads []Load) bool {
	spill := z.Spill
	if spill == 0 {
		spill = DefaultSpill
	}
	rows, weight := 0, 0
	for i := range loads {
		if loads[i].Eligible {
			rows += loads[i].InFlightRows
			weight += max(loads[i].Weight, 1)
		}
	}
	if weight == 0 {
		return false
	}
	mean := float64(rows) / float64(weight)
	for i := range loads {
		if loads[i].Eligible && z.isLocal(i) &&
			float64(loads[i].InFlightRows)/float64(max(loads[i].Weight, 1)) <= spill*mean {
			return true
		}
	}
	return false
}
