package upstream_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/batchmesh/batchmesh/internal/codec"
	"github.com/batchmesh/batchmesh/internal/upstream"
)

func TestForwardMetadata(t *testing.T) {
	addr := startSim(t, "linear/0s+0s", 0)
	c := upstream.New(upstream.Config{})
	defer c.Close()

	// What the runtime answers when asked directly.
	direct := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(direct)
	dreq := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(dreq)
	dreq.SetRequestURI("http://" + addr + "/v2/models/sim")
	if err := fasthttp.Do(dreq, direct); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, uri  string
		wantStatus int
	}{
		{name: "metadata", uri: "/v2/models/sim", wantStatus: http.StatusOK},
		{name: "absolute form", uri: "http://sidecar.local/v2/models/sim", wantStatus: http.StatusOK},
		{name: "unknown model passes through", uri: "/v2/models/nope", wantStatus: http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := fasthttp.AcquireRequest()
			defer fasthttp.ReleaseRequest(req)
			req.SetRequestURI(tt.uri)
			resp := fasthttp.AcquireResponse()
			defer fasthttp.ReleaseResponse(resp)
			if err := c.Forward(context.Background(), addr, req, resp); err != nil {
				t.Fatalf("Forward: %v", err)
			}
			if resp.StatusCode() != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode(), tt.wantStatus, resp.Body())
			}
			if tt.wantStatus != http.StatusOK {
				return
			}
			if string(resp.Body()) != string(direct.Body()) {
				t.Errorf("forwarded body %s, direct %s", resp.Body(), direct.Body())
			}
			var md codec.ModelMetadata
			if err := json.Unmarshal(resp.Body(), &md); err != nil || md.Name != "sim" {
				t.Errorf("body %s: %v, want the metadata of sim", resp.Body(), err)
			}
			if string(resp.Header.ContentType()) != "application/json" {
				t.Errorf("Content-Type %q", resp.Header.ContentType())
			}
		})
	}
}

// TestForwardHeaders checks what crosses the proxy each way, against an
// echo server that reports the request it saw.
func TestForwardHeaders(t *testing.T) {
	type seen struct {
		Method, URI, Host, Body string
		Headers                 map[string]string
	}
	addr := serve(t, func(ctx *fasthttp.RequestCtx) {
		s := seen{
			Method:  string(ctx.Method()),
			URI:     string(ctx.RequestURI()),
			Host:    string(ctx.Host()),
			Body:    string(ctx.PostBody()),
			Headers: map[string]string{},
		}
		for k, v := range ctx.Request.Header.All() {
			s.Headers[string(k)] = string(v)
		}
		ctx.Response.Header.Set("X-Runtime", "yes")
		ctx.Response.Header.Set("Keep-Alive", "timeout=5")
		ctx.Response.Header.Set("X-Conn-Scoped", "1")
		ctx.Response.Header.Add("Connection", "X-Conn-Scoped")
		ctx.SetStatusCode(http.StatusAccepted)
		writeBody, _ := json.Marshal(s)
		ctx.SetBody(writeBody)
	})
	c := upstream.New(upstream.Config{})
	defer c.Close()

	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.Header.SetMethod(http.MethodPost)
	req.SetRequestURI("/v2/models/sim/infer?x=1&y=2")
	req.Header.SetHost("127.0.0.1:15001")
	req.Header.Set("Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	req.Header.Set("X-Batchmesh-Tenant", "t1")
	req.Header.Set("Keep-Alive", "timeout=5")
	req.Header.Set("Proxy-Authorization", "secret")
	req.Header.Set("X-Hop", "drop me")
	req.Header.Set("Connection", "X-Hop")
	req.Header.SetContentType("application/json")
	req.SetBodyString(`{"inputs":[]}`)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)

	if err := c.Forward(context.Background(), addr, req, resp); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode() != http.StatusAccepted {
		t.Fatalf("status %d: %s", resp.StatusCode(), resp.Body())
	}
	var got seen
	if err := json.Unmarshal(resp.Body(), &got); err != nil {
		t.Fatalf("echo body %s: %v", resp.Body(), err)
	}
	if got.Method != "POST" || got.URI != "/v2/models/sim/infer?x=1&y=2" || got.Host != addr || got.Body != `{"inputs":[]}` {
		t.Errorf("runtime saw %s %s, Host %s, body %q", got.Method, got.URI, got.Host, got.Body)
	}
	for _, k := range []string{"Traceparent", "X-Batchmesh-Tenant", "Content-Type"} {
		if got.Headers[k] == "" {
			t.Errorf("header %s was not forwarded; runtime saw %v", k, got.Headers)
		}
	}
	for _, k := range []string{"Keep-Alive", "Proxy-Authorization", "X-Hop", "Connection"} {
		if v, ok := got.Headers[k]; ok {
			t.Errorf("hop-by-hop header %s: %q was forwarded", k, v)
		}
	}
	if string(resp.Header.Peek("X-Runtime")) != "yes" {
		t.Error("the runtime's X-Runtime header did not come back")
	}
	for _, k := range []string{"Keep-Alive", "X-Conn-Scoped", "Connection"} {
		if v := resp.Header.Peek(k); len(v) > 0 {
			t.Errorf("hop-by-hop response header %s: %q came back", k, v)
		}
	}
	if resp.ConnectionClose() {
		t.Error("the response asks to close the caller's connection")
	}
	// Forward edits the request in place (documented): hop-by-hop headers
	// gone, Host the endpoint, the body and the rest kept.
	if len(req.Header.Peek("X-Hop")) != 0 || string(req.Header.Host()) != addr || string(req.Body()) != `{"inputs":[]}` {
		t.Errorf("request after Forward: X-Hop %q, Host %q, body %q", req.Header.Peek("X-Hop"), req.Header.Host(), req.Body())
	}
}
