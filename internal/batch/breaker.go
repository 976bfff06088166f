package batch

import "context"

// Breakers are a lane's circuit breakers: bounds on the batches and rows in
// flight, over the whole lane (one model version) and per endpoint. A
// batch is not sent past an open breaker: its rows wait in the queue, whose
// bound (MaxQueueSize) refuses new requests with 429 and a Retry-After
// hint. Zero fields mean no bound beyond the endpoints' slots.
type Breakers struct {
	MaxBatches         int // batches in flight over every endpoint
	MaxRows            int // a batch is sent only while fewer rows are in flight
	EndpointMaxBatches int // batches in flight on one endpoint
	EndpointMaxRows    int // a batch goes to an endpoint only while it has fewer rows in flight
}

// The breakers, the values of batchmesh_circuit_open's breaker label.
const (
	breakerBatches         = "max_batches"
	breakerRows            = "max_rows"
	breakerEndpointBatches = "endpoint_max_batches"
	breakerEndpointRows    = "endpoint_max_rows"
)

var breakerNames = [...]string{breakerBatches, breakerRows, breakerEndpointBatches, breakerEndpointRows}

// laneOpenLocked reports whether a lane-wide breaker holds every batch.
func (l *Lane) laneOpenLocked() bool {
	br := l.cfg.Breakers
	if br.MaxBatches <= 0 && br.MaxRows <= 0 {
		return false
	}
	batches, rows := 0, 0
	for _, e := range l.eps {
		batches += e.busy
		rows += e.rows
	}
	openB := br.MaxBatches > 0 && batches >= br.MaxBatches
	openR := br.MaxRows > 0 && rows >= br.MaxRows
	l.setOpenLocked(0, openB)
	l.setOpenLocked(1, openR)
	return openB || openR
}

// endpointOpenLocked reports whether e's breakers hold batches for it.
func (l *Lane) endpointOpenLocked(e *endpoint) bool {
	br := l.cfg.Breakers
	openB := br.EndpointMaxBatches > 0 && e.busy >= br.EndpointMaxBatches
	openR := br.EndpointMaxRows > 0 && e.rows >= br.EndpointMaxRows
	if openB {
		l.setOpenLocked(2, true)
	}
	if openR {
		l.setOpenLocked(3, true)
	}
	return openB || openR
}

// closeEndpointBreakersLocked marks the endpoint breakers closed when no
// endpoint's is open (called once a batch was sent).
func (l *Lane) closeEndpointBreakersLocked() {
	br := l.cfg.Breakers
	if br.EndpointMaxBatches <= 0 && br.EndpointMaxRows <= 0 {
		return
	}
	b, r := false, false
	for _, e := range l.eps {
		b = b || (br.EndpointMaxBatches > 0 && e.busy >= br.EndpointMaxBatches)
		r = r || (br.EndpointMaxRows > 0 && e.rows >= br.EndpointMaxRows)
	}
	l.setOpenLocked(2, b)
	l.setOpenLocked(3, r)
}

// setOpenLocked records breaker i's state in batchmesh_circuit_open when
// it changes.
func (l *Lane) setOpenLocked(i int, open bool) {
	if l.open[i] == open {
		return
	}
	l.open[i] = open
	v := int64(0)
	if open {
		v = 1
	}
	l.m.circuitOpen.Record(context.Background(), v, l.m.breakerAttrs[i])
}
