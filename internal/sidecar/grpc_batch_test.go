package sidecar_test

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/batchmesh/batchmesh/internal/grpcapi"
	"github.com/batchmesh/batchmesh/internal/modelrt"
	"github.com/batchmesh/batchmesh/internal/runtimetest"
	"github.com/batchmesh/batchmesh/internal/sidecar"
	"github.com/batchmesh/batchmesh/internal/sidecartest"
)

// batchRows returns the sum and count of the runtime's model_batch_rows.
func batchRows(t *testing.T, url string) (sum float64, count uint64) {
	t.Helper()
	fam := scrape(t, url+"/metrics")["model_batch_rows"]
	for _, m := range fam.GetMetric() {
		sum += m.GetHistogram().GetSampleSum()
		count += m.GetHistogram().GetSampleCount()
	}
	return sum, count
}

// TestGRPCAndRESTShareBatches runs 64 callers at once, half on gRPC and
// half on REST, against one model with the cache off: the runtime sees
// batches of more than 8 rows on average (so both wires ride in the same
// batches), and every caller gets the runtime's own answer for its row.
func TestGRPCAndRESTShareBatches(t *testing.T) {
	const callers, calls = 64, 8
	rt := runtimetest.Start(t, modelrt.Config{Models: runtimetest.Models(t, "m=sim:linear/5ms+20us")}, runtimetest.WithMetrics())
	want := make([][]byte, callers)
	for i := range want {
		want[i], _ = restInfer(t, rt.URL, "m", i)
	}
	s := sidecartest.Start(t, sidecar.Config{Models: sidecartest.Models(t, "test.yaml", fmt.Sprintf(`models:
  - name: m
    batching: {max_batch_size: 64, max_queue_delay: 5ms, timeout: 30s}
    versions: [{version: "1", endpoints: [{address: %s}]}]
`, rt.Addr))})
	c := dialGRPC(t, s.URL)
	sum0, count0 := batchRows(t, rt.URL)

	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			for range calls {
				var got []byte
				if i%2 == 0 {
					resp, err := c.ModelInfer(t.Context(), rawInfer("m", i))
					if err != nil {
						t.Errorf("gRPC caller %d: %v", i, err)
						return
					}
					got = resp.GetRawOutputContents()[0]
				} else {
					got, _ = restInfer(t, s.URL, "m", i)
				}
				if !bytes.Equal(got, want[i]) {
					t.Errorf("caller %d (gRPC: %t): answer %x, want %x", i, i%2 == 0, got, want[i])
					return
				}
			}
		})
	}
	wg.Wait()
	sum, count := batchRows(t, rt.URL)
	rows, batches := sum-sum0, count-count0
	if rows != callers*calls {
		t.Errorf("the runtime computed %v rows, want %d", rows, callers*calls)
	}
	if mean := rows / float64(batches); mean <= 8 {
		t.Errorf("mean batch of %.1f rows over %d batches, want more than 8: gRPC and REST callers do not share batches", mean, batches)
	} else {
		t.Logf("%v rows in %d batches, mean %.1f", rows, batches, mean)
	}
}

// TestGRPCErrors checks the status codes that stand for the HTTP ones: a
// malformed tensor is InvalidArgument naming the input, an unknown model
// NotFound, a deadline (the call's own, or x-batchmesh-timeout-ms)
// DeadlineExceeded, a full queue ResourceExhausted with a RetryInfo, and a
// dead runtime Unavailable.
func TestGRPCErrors(t *testing.T) {
	rt := runtimetest.Start(t, modelrt.Config{Models: runtimetest.Models(t, "fast=sim:linear/1ms+0s", "slow=sim:linear/300ms+0s")})
	s := sidecartest.Start(t, sidecar.Config{Models: sidecartest.Models(t, "test.yaml", fmt.Sprintf(`models:
  - name: fast
    versions: [{version: "1", endpoints: [{address: %[1]s}]}]
  - name: slow
    batching: {max_batch_size: 1, max_queue_size: 2, timeout: 10s}
    versions: [{version: "1", endpoints: [{address: %[1]s}]}]
`, rt.Addr))})
	c := dialGRPC(t, s.URL)
	expect := func(name string, err error, code codes.Code, mention string) *status.Status {
		t.Helper()
		st, _ := status.FromError(err)
		if st.Code() != code || !strings.Contains(st.Message(), mention) {
			t.Errorf("%s: %v, want %s mentioning %q", name, err, code, mention)
		}
		return st
	}

	short := rawInfer("fast", 1)
	short.RawInputContents[0] = short.RawInputContents[0][:15]
	_, err := c.ModelInfer(t.Context(), short)
	expect("15 raw bytes for [1,4] FP32", err, codes.InvalidArgument, `input "x"`)
	mixed := typedInfer("fast", 1)
	mixed.Inputs[0].Contents = &grpcapi.InferTensorContents{IntContents: []int32{1, 2, 3, 4}}
	_, err = c.ModelInfer(t.Context(), mixed)
	expect("FP32 with int_contents", err, codes.InvalidArgument, `input "x"`)
	_, err = c.ModelInfer(t.Context(), rawInfer("nope", 1))
	expect("unknown model", err, codes.NotFound, `"nope"`)
	_, err = c.ModelInfer(metadata.AppendToOutgoingContext(t.Context(), "x-batchmesh-timeout-ms", "zero"), rawInfer("fast", 1))
	expect("bad x-batchmesh-timeout-ms", err, codes.InvalidArgument, "x-batchmesh-timeout-ms")

	// The sidecar's own deadline: the call allows 10 s, the metadata 50 ms.
	_, err = c.ModelInfer(metadata.AppendToOutgoingContext(t.Context(), "x-batchmesh-timeout-ms", "50"), rawInfer("slow", 1))
	expect("x-batchmesh-timeout-ms 50 on a 300 ms model", err, codes.DeadlineExceeded, "")
	ctx, cancel := contextWithTimeout(t, 50*time.Millisecond)
	_, err = c.ModelInfer(ctx, rawInfer("slow", 2))
	cancel()
	expect("a 50 ms gRPC deadline on a 300 ms model", err, codes.DeadlineExceeded, "")

	// A queue of 2 rows and one row per batch: of 12 calls at once, most
	// are refused.
	var wg sync.WaitGroup
	errs := make([]error, 12)
	for i := range errs {
		wg.Go(func() { _, errs[i] = c.ModelInfer(t.Context(), rawInfer("slow", 100+i)) })
	}
	wg.Wait()
	exhausted := 0
	for _, err := range errs {
		st, _ := status.FromError(err)
		if st.Code() != codes.ResourceExhausted {
			continue
		}
		exhausted++
		var retry *errdetails.RetryInfo
		for _, d := range st.Details() {
			if r, ok := d.(*errdetails.RetryInfo); ok {
				retry = r
			}
		}
		if retry == nil || retry.GetRetryDelay().AsDuration() < time.Second {
			t.Errorf("ResourceExhausted without a RetryInfo of at least 1s: details %v", st.Details())
		}
	}
	if exhausted == 0 {
		t.Errorf("12 calls at once on a queue of 2: no ResourceExhausted; errors %v", errs)
	}

	rt.Stop()
	_, err = c.ModelInfer(t.Context(), rawInfer("fast", 3))
	expect("a dead runtime", err, codes.Unavailable, "")
}
