package balancer

// EDF is weighted round robin by earliest deadline first, the scheduler of
// Envoy's and gRPC's WRR: every endpoint has a virtual deadline, the
// eligible endpoint with the earliest one is picked (the lowest index on
// ties) and its deadline moves 1/weight later. Over many picks each eligible
// endpoint gets exactly its weight's share, interleaved rather than in runs.
//
// An EDF schedules one endpoint set: loads[i] must be the same endpoint on
// every call. A call with a different number of loads starts a new
// schedule; when the set changes, build a new EDF. An endpoint that was
// ineligible rejoins at the current virtual time, as a new one would, so it
// gets its share from then on and no burst for the picks it missed.
//
// EDF is not safe for concurrent use (the lane serialises its picks); Pick
// never blocks and allocates only when the number of endpoints changes. The
// zero value is ready to use.
type EDF struct {
	now      float64   // the deadline of the last pick
	deadline []float64 // per endpoint; 0 before its first sight
}

// rebase is how far virtual time may run before deadlines are shifted back
// to keep float64 resolution well under the smallest step 1/weight.
const rebase = 1 << 20

// Pick returns the index of the chosen endpoint, or -1 when none is
// eligible.
func (e *EDF) Pick(loads []Load) int {
	if len(e.deadline) != len(loads) {
		e.deadline = make([]float64, len(loads))
		e.now = 0
	}
	best := -1
	for i := range loads {
		if !loads[i].Eligible {
			continue
		}
		d := e.deadline[i]
		if d < e.now || d == 0 {
			// First sight, or back from ineligible: enter as a new
			// endpoint one step after the current time.
			d = e.now + step(&loads[i])
			e.deadline[i] = d
		}
		if best < 0 || d < e.deadline[best] {
			best = i
		}
	}
	if best < 0 {
		return -1
	}
	e.now = e.deadline[best]
	e.deadline[best] += step(&loads[best])
	if e.now > rebase {
		for i := range e.deadline {
			e.deadline[i] = max(e.deadline[i]-e.now, 0)
		}
		e.now = 0
	}
	return best
}

// step is 1/weight, with weight 0 counting as 1.
func step(l *Load) float64 {
	return 1 / float64(max(l.Weight, 1))
}
