package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/valyala/fasthttp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/batchmesh/batchmesh/internal/codec"
	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/grpcapi"
	"github.com/batchmesh/batchmesh/internal/inference"
)

// NewGRPCServer returns a gRPC server of the Open Inference Protocol's
// GRPCInferenceService on the proxy: ModelInfer goes through the same
// lanes, row cache and coalescing as the REST infer route, the other calls
// answer as their REST routes do. The sidecar serves it on the inference
// listener, beside the HTTP server, for connections that start with the
// HTTP/2 preface. The caller owns the server (Serve, GracefulStop).
func (p *Proxy) NewGRPCServer(opts ...grpc.ServerOption) *grpc.Server {
	opts = append([]grpc.ServerOption{
		grpc.MaxRecvMsgSize(p.cfg.MaxBodyBytes),
		grpc.MaxSendMsgSize(p.cfg.MaxBodyBytes),
	}, opts...)
	s := grpc.NewServer(opts...)
	grpcapi.RegisterGRPCInferenceServiceServer(s, grpcService{p: p})
	return s
}

// grpcService implements GRPCInferenceService on a Proxy.
type grpcService struct {
	grpcapi.UnimplementedGRPCInferenceServiceServer
	p *Proxy
}

func (grpcService) ServerLive(context.Context, *grpcapi.ServerLiveRequest) (*grpcapi.ServerLiveResponse, error) {
	return &grpcapi.ServerLiveResponse{Live: true}, nil
}

// ServerReady is ready as GET /v2/health/ready is: every model has a
// healthy endpoint (a draining sidecar still answers its callers).
func (s grpcService) ServerReady(context.Context, *grpcapi.ServerReadyRequest) (*grpcapi.ServerReadyResponse, error) {
	why := s.p.ready()
	return &grpcapi.ServerReadyResponse{Ready: why == "" || why == "draining"}, nil
}

func (s grpcService) ServerMetadata(context.Context, *grpcapi.ServerMetadataRequest) (*grpcapi.ServerMetadataResponse, error) {
	return &grpcapi.ServerMetadataResponse{Name: "batchmesh", Version: "1", Extensions: []string{codec.ExtensionBinaryTensorData}}, nil
}

// ModelReady is true when the model (and version, if named) has a healthy
// endpoint; an unknown model or version is NotFound.
func (s grpcService) ModelReady(_ context.Context, in *grpcapi.ModelReadyRequest) (*grpcapi.ModelReadyResponse, error) {
	m, err := s.p.grpcModel(in.GetName())
	if err != nil {
		return nil, grpcError(err, 0)
	}
	_, err = s.p.pickVersion(m, in.GetVersion())
	if err != nil && inference.KindOf(err) != inference.KindUnavailable {
		return nil, grpcError(err, 0)
	}
	return &grpcapi.ModelReadyResponse{Ready: err == nil}, nil
}

// ModelMetadata asks one healthy endpoint of the model, as the REST route
// passes GET /v2/models/{m} through.
func (s grpcService) ModelMetadata(ctx context.Context, in *grpcapi.ModelMetadataRequest) (*grpcapi.ModelMetadataResponse, error) {
	m, err := s.p.grpcModel(in.GetName())
	if err != nil {
		return nil, grpcError(err, 0)
	}
	v, err := s.p.pickVersion(m, in.GetVersion())
	if err != nil {
		return nil, grpcError(err, 0)
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Batching.Timeout)
	defer cancel()
	md, err := s.p.modelMetadata(ctx, m, v)
	if err != nil {
		return nil, grpcError(err, 0)
	}
	out := &grpcapi.ModelMetadataResponse{Name: md.Name, Versions: md.Versions, Platform: md.Platform}
	for _, t := range md.Inputs {
		out.Inputs = append(out.Inputs, &grpcapi.ModelMetadataResponse_TensorMetadata{Name: t.Name, Datatype: t.Datatype, Shape: t.Shape})
	}
	for _, t := range md.Outputs {
		out.Outputs = append(out.Outputs, &grpcapi.ModelMetadataResponse_TensorMetadata{Name: t.Name, Datatype: t.Datatype, Shape: t.Shape})
	}
	return out, nil
}

// modelMetadata reads GET /v2/models/{m}/versions/{v} from one healthy
// endpoint of v.
func (p *Proxy) modelMetadata(ctx context.Context, m *model, v *version) (codec.ModelMetadata, error) {
	var md codec.ModelMetadata
	ep, err := p.pickEndpoint(v)
	if err != nil {
		return md, err
	}
	if p.isGRPC(ep) {
		return p.grpcUp.ModelMetadata(ctx, ep, m.cfg.Name, v.cfg.Version)
	}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(fasthttp.MethodGet)
	req.SetRequestURI("/v2/models/" + m.cfg.Name + "/versions/" + v.cfg.Version)
	req.Header.SetHost(ep)
	if err := p.up.Forward(ctx, ep, req, resp); err != nil {
		return md, err
	}
	if resp.StatusCode() != fasthttp.StatusOK {
		return md, inference.Errorf(inference.KindUpstream, "proxy: model metadata from %s: status %d: %.200s", ep, resp.StatusCode(), resp.Body())
	}
	if err := json.Unmarshal(resp.Body(), &md); err != nil {
		return md, inference.Errorf(inference.KindUpstream, "proxy: model metadata from %s: %w", ep, err)
	}
	return md, nil
}

// grpcModel returns the configured v2 model of that name; an unknown one,
// or one of another protocol, is KindNotFound.
func (p *Proxy) grpcModel(name string) (*model, error) {
	st := p.st.Load()
	m := st.models[name]
	if m == nil {
		return nil, inference.Errorf(inference.KindNotFound, "proxy: unknown model %q; configured models: %v", name, st.names)
	}
	if m.cfg.Protocol != config.ProtocolV2 {
		return nil, inference.Errorf(inference.KindNotFound, "proxy: model %q speaks protocol %s, not v2; gRPC serves v2 models only; %s",
			name, m.cfg.Protocol, protocolRoutes(m.cfg.Protocol))
	}
	return m, nil
}

// grpcCode maps an error kind to the gRPC status code that stands for its
// HTTP status.
func grpcCode(err error) codes.Code {
	if errors.Is(err, context.Canceled) {
		return codes.Canceled
	}
	switch inference.KindOf(err) {
	case inference.KindInvalid:
		return codes.InvalidArgument
	case inference.KindNotFound:
		return codes.NotFound
	case inference.KindMethod:
		return codes.Unimplemented
	case inference.KindTooLarge, inference.KindOverloaded:
		return codes.ResourceExhausted
	case inference.KindUpstream, inference.KindUnavailable:
		return codes.Unavailable
	case inference.KindDeadline:
		return codes.DeadlineExceeded
	}
	return codes.Internal
}

// grpcError is err as a gRPC status. A full queue (ResourceExhausted) and
// a missing runtime (Unavailable) carry a google.rpc.RetryInfo of
// retryAfter (at least a second) in the status details.
func grpcError(err error, retryAfter time.Duration) error {
	c := grpcCode(err)
	st := status.New(c, err.Error())
	k := inference.KindOf(err)
	if k != inference.KindOverloaded && k != inference.KindUnavailable {
		return st.Err()
	}
	if withInfo, derr := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(max(retryAfter, time.Second))}); derr == nil {
		st = withInfo
	}
	return st.Err()
}
