package codec

import "strings"

// RouteKind names a route of the v2 REST surface.
type RouteKind uint8

// The v2 routes. RouteUnknown is any other path.
const (
	RouteUnknown      RouteKind = iota
	RouteServer                 // GET /v2
	RouteLive                   // GET /v2/health/live
	RouteReady                  // GET /v2/health/ready
	RouteModel                  // GET /v2/models/{m}[/versions/{v}]
	RouteModelReady             // GET /v2/models/{m}[/versions/{v}]/ready
	RouteInfer                  // POST /v2/models/{m}[/versions/{v}]/infer
	RouteEmbeddings             // POST /v1/embeddings or /embeddings (OpenAI; the model is in the body)
	RouteOpenAIModels           // GET /v1/models or /models (OpenAI's model list)
	RoutePredict                // POST /v1/models/{m}[/versions/{v}]:predict (TF Serving)
	RouteTFModel                // GET /v1/models/{m}[/versions/{v}] (TF Serving model status)
)

// Route is a parsed path of the v2, OpenAI or TF Serving surface.
type Route struct {
	Kind    RouteKind
	Model   string
	Version string // "" when the path names no version
}

// ParseRoute parses a decoded URL path of the v2 REST surface. Any other
// path, and a model route with an empty name or version, is RouteUnknown.
func ParseRoute(path string) Route {
	switch path {
	case "/v2", "/v2/":
		return Route{Kind: RouteServer}
	case "/v2/health/live":
		return Route{Kind: RouteLive}
	case "/v2/health/ready":
		return Route{Kind: RouteReady}
	case "/v1/embeddings", "/embeddings":
		return Route{Kind: RouteEmbeddings}
	case "/v1/models", "/models":
		return Route{Kind: RouteOpenAIModels}
	}
	if rest, ok := strings.CutPrefix(path, "/v1/models/"); ok {
		return parseTFRoute(rest)
	}
	rest, ok := strings.CutPrefix(path, "/v2/models/")
	if !ok {
		return Route{}
	}
	// Cut rather than Split: an inference request parses its route without
	// allocating.
	model, rest, more := strings.Cut(rest, "/")
	if model == "" {
		return Route{}
	}
	r := Route{Model: model}
	if after, ok := strings.CutPrefix(rest, "versions/"); more && ok {
		r.Version, rest, more = strings.Cut(after, "/")
		if r.Version == "" {
			return Route{}
		}
	}
	switch {
	case !more:
		r.Kind = RouteModel
	case rest == "ready":
		r.Kind = RouteModelReady
	case rest == "infer":
		r.Kind = RouteInfer
	default:
		return Route{}
	}
	return r
}

// parseTFRoute parses what follows /v1/models/: {m}[/versions/{v}][:predict].
func parseTFRoute(rest string) Route {
	kind := RouteTFModel
	if r, ok := strings.CutSuffix(rest, ":predict"); ok {
		rest, kind = r, RoutePredict
	}
	model, rest, more := strings.Cut(rest, "/")
	if model == "" || strings.Contains(model, ":") {
		return Route{}
	}
	r := Route{Kind: kind, Model: model}
	if more {
		v, ok := strings.CutPrefix(rest, "versions/")
		if !ok || v == "" || strings.ContainsAny(v, "/:") {
			return Route{}
		}
		r.Version = v
	}
	return r
}
