package batch

import (
	"net"
	"syscall"

	"go.opentelemetry.io/otel/trace"

	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// Row keys that make fakeCaller misbehave. Every other row's key is
// key(id, r) >= 0.
const (
	poisonKey = -1 // the batch is refused with KindInvalid and poisonMsg
	shortKey  = -2 // the answer has one row too few
	longKey   = -3 // the answer has one row too many
)

const poisonMsg = "fake runtime: input \"x\": NaN in row"

// width is the FP32 values per row of the test requests.
const width = 2

// fakeCaller fakes the lane's Caller, the interface the batch package
// declares for the stage after it; the real upstream client runs in the
// proxy's end-to-end tests. In a synctest bubble its latency is fake time.
//
// Call records the batch, then, in this order: fails at once with
// KindUnavailable when the endpoint is in down; fails at once with
// KindInvalid and poisonMsg when a row's key is poisonKey (a runtime refuses
// bad input before computing); waits the endpoint's latency, giving up with
// KindDeadline when ctx ends first, as the real client does; and answers
// with input 0 echoed back as output "out" (a copy), with one row less or
// more for shortKey or longKey. A row's key is its first FP32 value.
//
// latency and down are read-only once Call may run; Call is safe for
// concurrent use.
type fakeCaller struct {
	latency map[string]time.Duration
	down    map[string]bool
	refused map[string]bool // down, and the error says the dial was refused

	mu       sync.Mutex
	calls    []sentBatch
	inFlight map[string]int
	peak     map[string]int // the most calls in flight at once, per endpoint
}

// sentBatch is one call as the runtime saw it.
type sentBatch struct {
	endpoint string
	at       time.Time // when the call began
	deadline time.Time // ctx's deadline
	rows     int
	keys     []float32 // the key of each row, in order
	span     trace.SpanContext
}

func newFakeCaller(latency map[string]time.Duration, down ...string) *fakeCaller {
	f := &fakeCaller{latency: latency, down: map[string]bool{}, refused: map[string]bool{}, inFlight: map[string]int{}, peak: map[string]int{}}
	for _, d := range down {
		f.down[d] = true
	}
	return f
}

func (f *fakeCaller) Call(ctx context.Context, endpoint string, req *inference.Request) ([]inference.Tensor, error) {
	in := req.Inputs[0]
	keys := rowKeys(&in)
	deadline, _ := ctx.Deadline()
	f.mu.Lock()
	f.calls = append(f.calls, sentBatch{endpoint: endpoint, at: time.Now(), deadline: deadline, rows: int(in.Shape[0]), keys: keys, span: trace.SpanContextFromContext(ctx)})
	f.inFlight[endpoint]++
	f.peak[endpoint] = max(f.peak[endpoint], f.inFlight[endpoint])
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inFlight[endpoint]--
		f.mu.Unlock()
	}()

	if f.refused[endpoint] {
		return nil, &inference.Error{Kind: inference.KindUnavailable, Msg: "fake: " + endpoint + ": cannot connect",
			Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}
	}
	if f.down[endpoint] {
		return nil, inference.Errorf(inference.KindUnavailable, "fake: %s: connection refused", endpoint)
	}
	if slices.Contains(keys, poisonKey) {
		return nil, inference.Errorf(inference.KindInvalid, "%s", poisonMsg)
	}
	if d := f.latency[endpoint]; d > 0 {
		timer := time.NewTimer(d)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-ctx.Done():
			return nil, inference.Errorf(inference.KindDeadline, "fake: %s: %w", endpoint, context.Cause(ctx))
		}
	}
	out := inference.Tensor{Name: "out", DataType: in.DataType, Shape: slices.Clone(in.Shape), Data: bytes.Clone(in.Data)}
	rowBytes := width * 4
	switch {
	case slices.Contains(keys, shortKey):
		out.Shape[0]--
		out.Data = out.Data[:len(out.Data)-rowBytes]
	case slices.Contains(keys, longKey):
		out.Shape[0]++
		out.Data = append(out.Data, out.Data[:rowBytes]...)
	}
	return []inference.Tensor{out}, nil
}

// sent returns a copy of the calls so far.
func (f *fakeCaller) sent() []sentBatch {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// sentAfter returns the calls after the first n.
func (f *fakeCaller) sentAfter(n int) []sentBatch {
	return f.sent()[n:]
}

// byTime sorts batches by the time they were sent, then by their first
// row's key: the fake cannot see in which order the lane started batches
// sent at the same instant.
func byTime(batches []sentBatch) []sentBatch {
	slices.SortStableFunc(batches, func(a, b sentBatch) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return cmp.Compare(a.keys[0], b.keys[0])
	})
	return batches
}

func (f *fakeCaller) peakInFlight(endpoint string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.peak[endpoint]
}

// rowKeys returns the first FP32 value of each row of t.
func rowKeys(t *inference.Tensor) []float32 {
	rows := int(t.Shape[0])
	keys := make([]float32, rows)
	for r := range keys {
		keys[r] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[r*width*4:]))
	}
	return keys
}

// key is the key of row r of request id: distinct for every row of every
// request below id 10000, and exact in FP32.
func key(id, r int) float32 { return float32(id*1000 + r) }

// keysOf returns the keys of request id's rows.
func keysOf(id, rows int) []float32 {
	keys := make([]float32, rows)
	for r := range keys {
		keys[r] = key(id, r)
	}
	return keys
}

// fp32Request builds a request whose input "x" is FP32 [len(keys), width]:
// row r holds keys[r] and keys[r]+0.5.
// Its deadline is the context's passed to Submit (or the lane's Timeout).
func fp32Request(keys []float32) *Request {
	data := make([]byte, 0, len(keys)*width*4)
	for _, k := range keys {
		data = binary.LittleEndian.AppendUint32(data, math.Float32bits(k))
		data = binary.LittleEndian.AppendUint32(data, math.Float32bits(k+0.5))
	}
	return &Request{
		Inputs: []inference.Tensor{{Name: "x", DataType: inference.FP32, Shape: []int64{int64(len(keys)), width}, Data: data}},
		Rows:   len(keys),
	}
}

// newRequest builds request id of rows rows; newTestLane's lanes give it a
// second.
func newRequest(id, rows int) *Request {
	return fp32Request(keysOf(id, rows))
}

// checkEcho fails t unless res holds exactly r's input rows, in order, as
// output "out".
func checkEcho(t *testing.T, r *Request, res Result) {
	t.Helper()
	if len(res.Outputs) != 1 {
		t.Errorf("result has %d outputs, want 1", len(res.Outputs))
		return
	}
	out, in := res.Outputs[0], r.Inputs[0]
	if out.Name != "out" || out.DataType != in.DataType || !slices.Equal(out.Shape, in.Shape) {
		t.Errorf("output is %q %s %s, want \"out\" %s %s", out.Name, out.DataType, inference.FormatShape(out.Shape), in.DataType, inference.FormatShape(in.Shape))
		return
	}
	if !bytes.Equal(out.Data, in.Data) {
		t.Errorf("output rows %v, want the request's own rows %v", rowKeys(&out), rowKeys(&in))
	}
}

// checkKind fails t unless err is of kind want, or nil when want is
// noError.
func checkKind(t *testing.T, what string, err error, want inference.Kind) {
	t.Helper()
	switch {
	case want == noError && err != nil:
		t.Errorf("%s: %v (kind %d), want success", what, err, inference.KindOf(err))
	case want != noError && err == nil:
		t.Errorf("%s: succeeded, want kind %d", what, want)
	case want != noError && inference.KindOf(err) != want:
		t.Errorf("%s: %v has kind %d, want %d", what, err, inference.KindOf(err), want)
	}
}

// noError, as a wanted kind, means success.
const noError inference.Kind = 255

// outcome is what one Submit returned, and when.
type outcome struct {
	res Result
	err error
	at  time.Time
}

// submit calls l.Submit in a new goroutine and delivers its outcome.
func submit(ctx context.Context, l *Lane, r *Request) <-chan outcome {
	ch := make(chan outcome, 1)
	go func() {
		res, err := l.Submit(ctx, r)
		ch <- outcome{res, err, time.Now()}
	}()
	return ch
}

// newTestLane builds a lane over caller with cfg's other fields.
func newTestLane(t *testing.T, cfg Config, caller Caller) *Lane {
	t.Helper()
	cfg.Caller = caller
	if cfg.Timeout == 0 {
		cfg.Timeout = time.Second
	}
	if cfg.Model == "" {
		cfg.Model = "m"
	}
	if len(cfg.Endpoints) == 0 {
		cfg.Endpoints = []Endpoint{{Address: "a"}}
	}
	l, err := NewLane(cfg)
	if err != nil {
		t.Fatalf("NewLane: %v", err)
	}
	// Idle workers wait for more batches; in a synctest bubble they must
	// be gone when the test ends.
	t.Cleanup(l.workers.stop)
	return l
}

// warmID is the id of warm-up requests.
const warmID = 9000

// warm teaches the lane its endpoints' latency: it submits one-row
// requests one after another until every healthy endpoint has answered
// one. It needs the lane idle.
func warm(t *testing.T, l *Lane) {
	t.Helper()
	for i := range 100 {
		eps, _ := l.Status()
		learned := true
		for _, e := range eps {
			learned = learned && (e.LatencyMs > 0 || !e.Healthy)
		}
		if learned {
			return
		}
		if _, err := l.Submit(context.Background(), newRequest(warmID+i, 1)); err != nil {
			t.Fatalf("warm-up: %v", err)
		}
	}
	t.Fatal("warm-up: some endpoint never got a batch")
}

// must returns the outcome on ch, failing t if it is an error.
func must(t *testing.T, what string, ch <-chan outcome) outcome {
	t.Helper()
	o := <-ch
	if o.err != nil {
		t.Errorf("%s: %v", what, o.err)
	}
	return o
}
