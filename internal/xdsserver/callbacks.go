package xdsserver

import (
	"context"
	"slices"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
)

func (s *Server) callbacks() server.CallbackFuncs {
	return server.CallbackFuncs{
		StreamRequestFunc:  s.onStreamRequest,
		StreamResponseFunc: s.onStreamResponse,
		StreamClosedFunc: func(id int64, _ *core.Node) {
			s.streamMu.Lock()
			delete(s.sent, id)
			delete(s.asked, id)
			s.streamMu.Unlock()
		},
		StreamDeltaRequestFunc:  s.onDeltaRequest,
		StreamDeltaResponseFunc: s.onDeltaResponse,
		DeltaStreamClosedFunc: func(id int64, _ *core.Node) {
			s.streamMu.Lock()
			delete(s.deltaSent, id)
			delete(s.deltaNodes, id)
			s.streamMu.Unlock()
		},
	}
}

// onStreamRequest runs on the stream's goroutine before the request reaches
// the cache.
//
// A NACK carries the last version the client accepted, and a cache answers
// a request of a version it does not know with everything again
// (go-control-plane#962; v0.14.0 still reads no error_detail). So a NACK is
// rewritten to carry the rejected version: the cache then sees a client
// that is up to date and parks the watch until the resources change.
//
// A request that names the nonce and version of the last response of its
// type, without error_detail, is that response's ACK: the time since the
// response is recorded as push-to-ACK latency.
//
// A request that newly names a resource that does not exist is logged at
// debug; for listeners and clusters its version is cleared, so that the
// cache answers at once with the full state, which lacks that resource:
// gRPC then reports "resource does not exist" instead of waiting for its
// timer.
func (s *Server) onStreamRequest(id int64, req *discovery.DiscoveryRequest) error {
	typ := req.GetTypeUrl()
	now := time.Now()
	s.streamMu.Lock()
	last := s.sent[id][typ]
	added := s.newNames(id, typ, req.GetResourceNames())
	if req.GetErrorDetail() == nil {
		acked := last.ackOf(req.GetResponseNonce(), req.GetVersionInfo(), true)
		if acked {
			last.acked = true
		}
		s.streamMu.Unlock()
		if acked {
			s.in.pushAck.Record(context.Background(), now.Sub(last.at).Seconds(), s.in.attrs(typ))
		}
		if s.missing(req.GetNode(), typ, added) && cache.ResourceRequiresFullStateInSotw(typ) {
			req.VersionInfo = ""
		}
		return nil
	}
	s.nacks[typ]++
	var rejected string
	if last != nil {
		rejected = last.version
		if req.GetResponseNonce() == last.nonce {
			last.acked = true
		}
	}
	s.streamMu.Unlock()
	s.in.nacks.Add(context.Background(), 1, s.in.attrs(typ))
	s.log.Warn("xds NACK",
		"node", req.GetNode().GetId(), "cluster", req.GetNode().GetCluster(), "type", typ,
		"rejected", rejected, "kept", req.GetVersionInfo(), "nonce", req.GetResponseNonce(),
		"reason", req.GetErrorDetail().GetMessage())
	if rejected != "" {
		req.VersionInfo = rejected
	}
	return nil
}

// newNames records the names of a SotW request and returns those its
// stream did not name in its last request of the type. s.streamMu must be
// held.
func (s *Server) newNames(id int64, typ string, names []string) []string {
	m := s.asked[id]
	if m == nil {
		m = map[string][]string{}
		s.asked[id] = m
	}
	prev := m[typ]
	m[typ] = names
	if slices.Equal(prev, names) { // an ACK, the common case
		return nil
	}
	had := make(map[string]bool, len(prev))
	for _, n := range prev {
		had[n] = true
	}
	var added []string
	for _, n := range names {
		if !had[n] {
			added = append(added, n)
		}
	}
	return added
}

// missing logs, at debug, the names of a request that name no resource of
// type typ, and reports whether there were any. Before the first Update
// nothing is missing: the request waits for it.
func (s *Server) missing(node *core.Node, typ string, names []string) bool {
	have := s.resourcesOf(typ)
	if have == nil {
		return false
	}
	var absent []string
	for _, n := range names {
		if _, ok := have[n]; !ok && n != "*" {
			absent = append(absent, n)
		}
	}
	if len(absent) == 0 {
		return false
	}
	s.log.Debug("xds resource does not exist", "node", node.GetId(), "cluster", node.GetCluster(),
		"type", typeLabel(typ), "names", absent)
	return true
}

// onStreamResponse runs just before a SotW response is sent.
func (s *Server) onStreamResponse(_ context.Context, id int64, _ *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
	s.record(s.sent, id, resp.GetTypeUrl(), &sentResponse{version: resp.GetVersionInfo(), nonce: resp.GetNonce(), at: time.Now()})
}

// onDeltaResponse runs just before a delta response is sent.
func (s *Server) onDeltaResponse(id int64, _ *discovery.DeltaDiscoveryRequest, resp *discovery.DeltaDiscoveryResponse) {
	s.record(s.deltaSent, id, resp.GetTypeUrl(), &sentResponse{nonce: resp.GetNonce(), at: time.Now()})
}

// record keeps r as the last response of its type on stream id, and
// counts it.
func (s *Server) record(sent map[int64]map[string]*sentResponse, id int64, typ string, r *sentResponse) {
	s.streamMu.Lock()
	m := sent[id]
	if m == nil {
		m = map[string]*sentResponse{}
		sent[id] = m
	}
	m[typ] = r
	s.streamMu.Unlock()
	s.in.updates.Add(context.Background(), 1, s.in.attrs(typ))
}

// onDeltaRequest counts and logs delta NACKs, and logs subscriptions to
// resources that do not exist. The cache tracks the resource versions it
// sent, not the ones the client accepted, so it does not re-send a
// rejected resource until it changes.
func (s *Server) onDeltaRequest(id int64, req *discovery.DeltaDiscoveryRequest) error {
	s.streamMu.Lock()
	node := req.GetNode()
	if node != nil {
		s.deltaNodes[id] = node
	} else {
		node = s.deltaNodes[id]
	}
	s.streamMu.Unlock()
	typ := req.GetTypeUrl()
	s.missing(node, typ, req.GetResourceNamesSubscribe())
	now := time.Now()
	s.streamMu.Lock()
	last := s.deltaSent[id][typ]
	if req.GetErrorDetail() == nil {
		acked := last.ackOf(req.GetResponseNonce(), "", false)
		if acked {
			last.acked = true
		}
		s.streamMu.Unlock()
		if acked {
			s.in.pushAck.Record(context.Background(), now.Sub(last.at).Seconds(), s.in.attrs(typ))
		}
		return nil
	}
	s.nacks[typ]++
	if last != nil && req.GetResponseNonce() == last.nonce {
		last.acked = true
	}
	s.streamMu.Unlock()
	s.in.nacks.Add(context.Background(), 1, s.in.attrs(typ))
	s.log.Warn("xds delta NACK",
		"node", node.GetId(), "cluster", node.GetCluster(), "type", req.GetTypeUrl(),
		"nonce", req.GetResponseNonce(), "reason", req.GetErrorDetail().GetMessage())
	return nil
}
