package modelrt

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/batchmesh/batchmesh/internal/codec"
	"github.com/batchmesh/batchmesh/internal/grpcapi"
	"github.com/batchmesh/batchmesh/internal/inference"
)

// DefaultGRPCListen is where the model binary serves gRPC by default
// (Triton's gRPC port).
const DefaultGRPCListen = "127.0.0.1:8001"

// NewGRPCServer returns a gRPC server of the Open Inference Protocol's
// GRPCInferenceService over the same models, slots and metrics as the
// HTTP server: a ModelInfer call is computed as a REST infer call is. Raw
// inputs get raw_output_contents back, typed inputs typed contents. The
// ORCA load report rides in the endpoint-load-metrics header metadata.
// The caller owns the server (Serve, GracefulStop); it reports not ready
// once Shutdown has begun.
func (s *Server) NewGRPCServer(opts ...grpc.ServerOption) *grpc.Server {
	opts = append([]grpc.ServerOption{
		grpc.MaxRecvMsgSize(s.cfg.MaxBodyBytes),
		grpc.MaxSendMsgSize(s.cfg.MaxBodyBytes),
	}, opts...)
	g := grpc.NewServer(opts...)
	grpcapi.RegisterGRPCInferenceServiceServer(g, grpcRuntime{s: s})
	return g
}

type grpcRuntime struct {
	grpcapi.UnimplementedGRPCInferenceServiceServer
	s *Server
}

func (grpcRuntime) ServerLive(context.Context, *grpcapi.ServerLiveRequest) (*grpcapi.ServerLiveResponse, error) {
	return &grpcapi.ServerLiveResponse{Live: true}, nil
}

func (g grpcRuntime) ServerReady(context.Context, *grpcapi.ServerReadyRequest) (*grpcapi.ServerReadyResponse, error) {
	return &grpcapi.ServerReadyResponse{Ready: g.s.Ready()}, nil
}

func (g grpcRuntime) ModelReady(_ context.Context, in *grpcapi.ModelReadyRequest) (*grpcapi.ModelReadyResponse, error) {
	if _, err := g.s.model(codec.Route{Model: in.GetName(), Version: in.GetVersion()}); err != nil {
		return nil, grpcStatus(err)
	}
	return &grpcapi.ModelReadyResponse{Ready: g.s.Ready()}, nil
}

func (g grpcRuntime) ServerMetadata(context.Context, *grpcapi.ServerMetadataRequest) (*grpcapi.ServerMetadataResponse, error) {
	return &grpcapi.ServerMetadataResponse{Name: "batchmesh-model", Version: g.s.cfg.Version, Extensions: []string{codec.ExtensionBinaryTensorData}}, nil
}

func (g grpcRuntime) ModelMetadata(_ context.Context, in *grpcapi.ModelMetadataRequest) (*grpcapi.ModelMetadataResponse, error) {
	m, err := g.s.model(codec.Route{Model: in.GetName(), Version: in.GetVersion()})
	if err != nil {
		return nil, grpcStatus(err)
	}
	md := g.s.metadata(in.GetName(), m)
	out := &grpcapi.ModelMetadataResponse{Name: md.Name, Versions: md.Versions, Platform: md.Platform}
	for _, t := range md.Inputs {
		out.Inputs = append(out.Inputs, &grpcapi.ModelMetadataResponse_TensorMetadata{Name: t.Name, Datatype: t.Datatype, Shape: t.Shape})
	}
	for _, t := range md.Outputs {
		out.Outputs = append(out.Outputs, &grpcapi.ModelMetadataResponse_TensorMetadata{Name: t.Name, Datatype: t.Datatype, Shape: t.Shape})
	}
	return out, nil
}

func (g grpcRuntime) ModelInfer(ctx context.Context, in *grpcapi.ModelInferRequest) (*grpcapi.ModelInferResponse, error) {
	s := g.s
	if !s.Ready() {
		return nil, status.Error(codes.Unavailable, "modelrt: not ready")
	}
	m, err := s.model(codec.Route{Model: in.GetModelName(), Version: in.GetModelVersion()})
	if err != nil {
		return nil, grpcStatus(err)
	}
	req, raw, err := codec.DecodeGRPCRequest(in)
	if err != nil {
		return nil, grpcStatus(err)
	}
	md, _ := metadata.FromIncomingContext(ctx)
	resp, err := s.compute(ctx, mdCarrier(md), in.GetModelName(), m, &req)
	if err != nil {
		return nil, grpcStatus(err)
	}
	out, err := codec.EncodeGRPCResponse(&resp, raw)
	if err != nil {
		return nil, grpcStatus(err)
	}
	_ = grpc.SetHeader(ctx, metadata.Pairs("endpoint-load-metrics", s.load.orca(s.cfg.Slots, len(s.slots), s.backlog())))
	return out, nil
}

// grpcStatus maps an error kind to the gRPC code that stands for its HTTP
// status.
func grpcStatus(err error) error {
	c := codes.Internal
	switch inference.KindOf(err) {
	case inference.KindInvalid:
		c = codes.InvalidArgument
	case inference.KindNotFound:
		c = codes.NotFound
	case inference.KindTooLarge, inference.KindOverloaded:
		c = codes.ResourceExhausted
	case inference.KindUpstream, inference.KindUnavailable:
		c = codes.Unavailable
	case inference.KindDeadline:
		c = codes.DeadlineExceeded
	}
	if errors.Is(err, context.Canceled) {
		c = codes.Canceled
	}
	return status.Error(c, err.Error())
}

// mdCarrier reads W3C trace context from incoming gRPC metadata.
type mdCarrier metadata.MD

func (c mdCarrier) Get(key string) string {
	if vs := metadata.MD(c).Get(key); len(vs) > 0 {
		return vs[0]
	}
	return ""
}
func (c mdCarrier) Set(key, value string) { metadata.MD(c).Set(key, value) }
func (c mdCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
