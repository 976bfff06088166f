package sidecar_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/batchmesh/batchmesh/internal/codec"
	"github.com/batchmesh/batchmesh/internal/grpcapi"
	"github.com/batchmesh/batchmesh/internal/modelrt"
	"github.com/batchmesh/batchmesh/internal/runtimetest"
	"github.com/batchmesh/batchmesh/internal/sidecar"
	"github.com/batchmesh/batchmesh/internal/sidecartest"
)

// dialGRPC connects a grpc-go client to the host:port of url
// ("http://host:port"), closed at the test's end.
func dialGRPC(t *testing.T, url string) grpcapi.GRPCInferenceServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(strings.TrimPrefix(url, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return grpcapi.NewGRPCInferenceServiceClient(cc)
}

// row is input row i: four FP32 values that differ from every other row's.
func row(i int) []float32 {
	return []float32{float32(i), float32(i) + 0.5, -float32(i), float32(i) * 1.25}
}

func fp32Bytes(vs []float32) []byte {
	b := make([]byte, 0, 4*len(vs))
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

// rawInfer is a one-row ModelInfer of row i in raw_input_contents.
func rawInfer(model string, i int) *grpcapi.ModelInferRequest {
	return &grpcapi.ModelInferRequest{
		ModelName:        model,
		Inputs:           []*grpcapi.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "FP32", Shape: []int64{1, 4}}},
		RawInputContents: [][]byte{fp32Bytes(row(i))},
	}
}

// typedInfer is rawInfer with the row in fp32_contents.
func typedInfer(model string, i int) *grpcapi.ModelInferRequest {
	return &grpcapi.ModelInferRequest{
		ModelName: model,
		Inputs: []*grpcapi.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "FP32", Shape: []int64{1, 4},
			Contents: &grpcapi.InferTensorContents{Fp32Contents: row(i)}}},
	}
}

// restInfer posts row i to url's v2 infer route of model asking for binary
// output, and returns the output's bytes and the response headers.
func restInfer(t *testing.T, url, model string, i int) ([]byte, http.Header) {
	t.Helper()
	vals, _ := json.Marshal(row(i))
	body := fmt.Sprintf(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":%s}],"parameters":{"binary_data_output":true}}`, vals)
	resp, err := http.Post(url+"/v2/models/"+model+"/infer", "application/json", strings.NewReader(body))
	if err != nil {
		t.Error(err)
		return nil, nil
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("REST infer of row %d at %s: status %d, %v: %s", i, url, resp.StatusCode, err, b)
		return nil, nil
	}
	hl, err := strconv.Atoi(resp.Header.Get(codec.HeaderContentLength))
	if err != nil {
		t.Errorf("REST infer of row %d: no %s header", i, codec.HeaderContentLength)
		return nil, nil
	}
	dec, err := codec.DecodeResponse(b, hl)
	if err != nil || len(dec.Outputs) != 1 {
		t.Errorf("REST infer of row %d: %v, %d outputs", i, err, len(dec.Outputs))
		return nil, nil
	}
	return dec.Outputs[0].Data, resp.Header
}

// TestGRPCInferMatchesREST calls ModelInfer through the sidecar's inference
// listener, raw and typed, and checks each answer against the runtime's own
// REST answer for the row, byte for byte; REST on the same port still
// works, and a gRPC call is answered from the row cache a REST call filled.
func TestGRPCInferMatchesREST(t *testing.T) {
	rt := runtimetest.Start(t, modelrt.Config{Models: runtimetest.Models(t, "m=sim:linear/1ms+10us")})
	s := sidecartest.Start(t, sidecar.Config{Models: sidecartest.Models(t, "test.yaml", fmt.Sprintf(`models:
  - name: m
    batching: {max_batch_size: 8}
    cache: {enabled: true, ttl: 1m}
    versions: [{version: "1", endpoints: [{address: %s}]}]
`, rt.Addr))})
	c := dialGRPC(t, s.URL)
	ctx := t.Context()

	if live, err := c.ServerLive(ctx, &grpcapi.ServerLiveRequest{}); err != nil || !live.GetLive() {
		t.Errorf("ServerLive = %v, %v; want live", live, err)
	}
	if ready, err := c.ServerReady(ctx, &grpcapi.ServerReadyRequest{}); err != nil || !ready.GetReady() {
		t.Errorf("ServerReady = %v, %v; want ready", ready, err)
	}
	if ready, err := c.ModelReady(ctx, &grpcapi.ModelReadyRequest{Name: "m"}); err != nil || !ready.GetReady() {
		t.Errorf("ModelReady(m) = %v, %v; want ready", ready, err)
	}
	if md, err := c.ModelMetadata(ctx, &grpcapi.ModelMetadataRequest{Name: "m"}); err != nil || md.GetName() != "m" || len(md.GetOutputs()) != 1 || md.GetOutputs()[0].GetName() != modelrt.SimOutput {
		t.Errorf("ModelMetadata(m) = %v, %v; want the runtime's metadata of m", md, err)
	}

	for i := range 3 {
		want, _ := restInfer(t, rt.URL, "m", i)
		var hdr metadata.MD
		raw, err := c.ModelInfer(ctx, rawInfer("m", i), grpc.Header(&hdr))
		if err != nil {
			t.Fatalf("raw ModelInfer of row %d: %v", i, err)
		}
		if len(raw.GetRawOutputContents()) != 1 || !bytes.Equal(raw.GetRawOutputContents()[0], want) {
			t.Errorf("raw ModelInfer of row %d: raw_output_contents %x, want the runtime's REST answer %x", i, raw.GetRawOutputContents(), want)
		}
		if got := hdr.Get("x-batchmesh-cache"); len(got) != 1 || got[0] != "miss" {
			t.Errorf("raw ModelInfer of a new row %d: x-batchmesh-cache %v, want [miss]", i, got)
		}
		typed, err := c.ModelInfer(ctx, typedInfer("m", i), grpc.Header(&hdr))
		if err != nil {
			t.Fatalf("typed ModelInfer of row %d: %v", i, err)
		}
		if len(typed.GetRawOutputContents()) != 0 || len(typed.GetOutputs()) != 1 {
			t.Fatalf("typed ModelInfer of row %d: %d raw outputs and %d outputs, want typed contents", i, len(typed.GetRawOutputContents()), len(typed.GetOutputs()))
		}
		if got := fp32Bytes(typed.GetOutputs()[0].GetContents().GetFp32Contents()); !bytes.Equal(got, want) {
			t.Errorf("typed ModelInfer of row %d: fp32_contents %x, want %x", i, got, want)
		}
		if got := hdr.Get("x-batchmesh-cache"); len(got) != 1 || got[0] != "hit" {
			t.Errorf("typed ModelInfer of row %d after the raw one: x-batchmesh-cache %v, want [hit] (one cache for both forms)", i, got)
		}
	}
	// Metadata named like the headers: no-cache skips the lookup, a bad
	// priority is refused naming the key's value.
	var hdr metadata.MD
	nc := metadata.AppendToOutgoingContext(ctx, "cache-control", "no-cache")
	if _, err := c.ModelInfer(nc, rawInfer("m", 0), grpc.Header(&hdr)); err != nil || fmt.Sprint(hdr.Get("x-batchmesh-cache")) != "[miss]" {
		t.Errorf("cache-control: no-cache on a cached row: %v, x-batchmesh-cache %v; want miss", err, hdr.Get("x-batchmesh-cache"))
	}
	bad := metadata.AppendToOutgoingContext(ctx, "x-batchmesh-priority", "urgent")
	if _, err := c.ModelInfer(bad, rawInfer("m", 0)); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `"urgent"`) {
		t.Errorf("x-batchmesh-priority urgent: %v, want InvalidArgument naming it", err)
	}
	// A REST caller of the same port fills the cache; a gRPC caller hits it.
	want, h := restInfer(t, s.URL, "m", 7)
	if h.Get("X-Batchmesh-Cache") != "miss" {
		t.Errorf("REST on the shared port: X-Batchmesh-Cache %q, want miss", h.Get("X-Batchmesh-Cache"))
	}
	hdr = nil
	got, err := c.ModelInfer(ctx, rawInfer("m", 7), grpc.Header(&hdr))
	if err != nil || len(got.GetRawOutputContents()) != 1 || !bytes.Equal(got.GetRawOutputContents()[0], want) {
		t.Fatalf("ModelInfer of the row a REST call computed: %v, %v; want %x", got, err, want)
	}
	if c := hdr.Get("x-batchmesh-cache"); len(c) != 1 || c[0] != "hit" {
		t.Errorf("gRPC after REST for one row: x-batchmesh-cache %v, want [hit]", c)
	}
}

func contextWithTimeout(t *testing.T, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.Context(), d)
}
