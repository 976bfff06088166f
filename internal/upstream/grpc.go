package upstream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/batchmesh/batchmesh/internal/codec"
	"github.com/batchmesh/batchmesh/internal/grpcapi"
	"github.com/batchmesh/batchmesh/internal/inference"
)

// GRPC is the client to runtimes that serve the Open Inference Protocol
// over gRPC (inference.GRPCInferenceService, Triton's port 8001): one
// plaintext HTTP/2 connection per endpoint, made on first use. The zero
// value is ready; it is safe for concurrent use; Close it when done.
type GRPC struct {
	// MaxMessageBytes bounds a message either way (default
	// DefaultMaxResponseBytes).
	MaxMessageBytes int
	// Timeout is the deadline of a call whose ctx has none (default
	// DefaultTimeout).
	Timeout time.Duration

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

// client returns the service client of endpoint, connecting on first use.
func (g *GRPC) client(endpoint string) (grpcapi.GRPCInferenceServiceClient, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if cc, ok := g.conns[endpoint]; ok {
		return grpcapi.NewGRPCInferenceServiceClient(cc), nil
	}
	limit := g.MaxMessageBytes
	if limit <= 0 {
		limit = DefaultMaxResponseBytes
	}
	cc, err := grpc.NewClient("passthrough:///"+endpoint,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(limit), grpc.MaxCallSendMsgSize(limit)))
	if err != nil {
		return nil, connectError(inference.KindUnavailable, endpoint, err)
	}
	if g.conns == nil {
		g.conns = map[string]*grpc.ClientConn{}
	}
	g.conns[endpoint] = cc
	return grpcapi.NewGRPCInferenceServiceClient(cc), nil
}

// Close closes every connection; calls in flight fail. The GRPC remains
// usable.
func (g *GRPC) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for ep, cc := range g.conns {
		_ = cc.Close()
		delete(g.conns, ep)
	}
}

// Forget closes the connection to endpoint, for an endpoint that left the
// configuration.
func (g *GRPC) Forget(endpoint string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if cc, ok := g.conns[endpoint]; ok {
		_ = cc.Close()
		delete(g.conns, endpoint)
	}
}

// Infer sends req to endpoint as a ModelInfer call with every input in
// raw_input_contents, headers as metadata, and decodes the answer, raw or
// typed. Errors are as Client.Infer's, with the gRPC code in the place of
// the HTTP status: Reply.Status is the status that stands for the code
// (RESOURCE_EXHAUSTED is 429, so that the caller backs off and retries;
// its RetryInfo becomes RetryAfter), and UNAVAILABLE matches ErrConnect.
// The ORCA load report is read from the endpoint-load-metrics header
// metadata.
func (g *GRPC) Infer(ctx context.Context, endpoint string, req *inference.Request, headers []Header) (Reply, error) {
	if err := ctx.Err(); err != nil {
		return Reply{}, contextError(endpoint, err)
	}
	c, err := g.client(endpoint)
	if err != nil {
		return Reply{}, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cmpOr(g.Timeout, DefaultTimeout))
		defer cancel()
	}
	if len(headers) > 0 {
		kv := make([]string, 0, 2*len(headers))
		for _, h := range headers {
			kv = append(kv, h.Key, h.Value)
		}
		ctx = metadata.AppendToOutgoingContext(ctx, kv...)
	}
	var md metadata.MD
	resp, err := c.ModelInfer(ctx, codec.EncodeGRPCRequest(req), grpc.Header(&md))
	var reply Reply
	if vs := md.Get(HeaderLoadReport); len(vs) > 0 {
		reply.LoadReport = vs[0]
	}
	if err != nil {
		return grpcFailure(endpoint, err, reply)
	}
	reply.Status = 200
	if reply.Response, err = codec.DecodeGRPCResponse(resp); err != nil {
		return reply, fmt.Errorf("upstream %s: %w", endpoint, err)
	}
	return reply, nil
}

// grpcFailure turns a failed call's status into Reply.Status and an
// *inference.Error.
func grpcFailure(endpoint string, err error, reply Reply) (Reply, error) {
	st, _ := status.FromError(err)
	msg := fmt.Sprintf("upstream %s: %s: %s", endpoint, st.Code(), st.Message())
	switch st.Code() {
	case codes.Unavailable:
		reply.Status = 0 // no answer: the connection failed or the server is going away
		return reply, connectError(inference.KindUnavailable, endpoint, errors.New(st.Message()))
	case codes.DeadlineExceeded:
		return reply, inference.Errorf(inference.KindDeadline, "%s", msg)
	case codes.Canceled:
		return reply, inference.Errorf(inference.KindUnavailable, "%s", msg)
	case codes.ResourceExhausted:
		reply.Status = 429
		for _, d := range st.Details() {
			if ri, ok := d.(*errdetails.RetryInfo); ok {
				reply.RetryAfter = strconv.Itoa(int(max(ri.GetRetryDelay().AsDuration().Round(time.Second), time.Second) / time.Second))
			}
		}
		return reply, inference.Errorf(inference.KindUnavailable, "%s", msg)
	case codes.NotFound:
		reply.Status = 404
		return reply, inference.Errorf(inference.KindNotFound, "%s", msg)
	case codes.InvalidArgument, codes.OutOfRange, codes.FailedPrecondition:
		reply.Status = 400
		return reply, inference.Errorf(inference.KindInvalid, "%s", msg)
	}
	reply.Status = 502
	return reply, inference.Errorf(inference.KindUpstream, "%s", msg)
}

// Probe checks that endpoint serves the gRPC service and is ready
// (ServerReady), within the probe timeout.
func (g *GRPC) Probe(ctx context.Context, endpoint string, timeout time.Duration) error {
	c, err := g.client(endpoint)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, cmpOr(timeout, DefaultProbeTimeout))
	defer cancel()
	r, err := c.ServerReady(ctx, &grpcapi.ServerReadyRequest{})
	if err != nil {
		_, ferr := grpcFailure(endpoint, err, Reply{})
		return ferr
	}
	if !r.GetReady() {
		return inference.Errorf(inference.KindUnavailable, "upstream %s: ServerReady says not ready", endpoint)
	}
	return nil
}

func cmpOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// ModelMetadata asks endpoint for the metadata of model (and version) over
// gRPC, in the REST route's shape.
func (g *GRPC) ModelMetadata(ctx context.Context, endpoint, model, version string) (codec.ModelMetadata, error) {
	var md codec.ModelMetadata
	c, err := g.client(endpoint)
	if err != nil {
		return md, err
	}
	r, err := c.ModelMetadata(ctx, &grpcapi.ModelMetadataRequest{Name: model, Version: version})
	if err != nil {
		_, ferr := grpcFailure(endpoint, err, Reply{})
		return md, ferr
	}
	md = codec.ModelMetadata{Name: r.GetName(), Versions: r.GetVersions(), Platform: r.GetPlatform()}
	for _, t := range r.GetInputs() {
		md.Inputs = append(md.Inputs, codec.TensorMetadata{Name: t.GetName(), Datatype: t.GetDatatype(), Shape: t.GetShape()})
	}
	for _, t := range r.GetOutputs() {
		md.Outputs = append(md.Outputs, codec.TensorMetadata{Name: t.GetName(), Datatype: t.GetDatatype(), Shape: t.GetShape()})
	}
	return md, nil
}
