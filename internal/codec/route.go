package codec

import "strings"

// RouteKind names a route of the v2 REST surface.
type RouteKind uint8

// The v2 routes. RouteUnknown is any other path.
const (
	RouteUnknown    RouteKind = iota
	RouteServer               // GET /v2
	RouteLive                 // GET /v2/health/live
	RouteReady                // GET /v2/health/ready
	RouteModel                // GET /v2/models/{m}[/versions/{v}]
	RouteModelReady           // GET /v2/models/{m}[/versions/{v}]/ready
	RouteInfer                // POST /v2/models/{m}[/versions/{v}]/infer
)

// Route is a parsed v2 path.
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
	}
	rest, ok := strings.CutPrefix(path, "/v2/models/")
	if !ok {
		return Route{}
	}
	parts := strings.Split(rest, "/")
	if parts[0] == "" {
		return Route{}
	}
	r := Route{Model: parts[0]}
	parts = parts[1:]
	if len(parts) >= 2 && parts[0] == "versions" {
		if parts[1] == "" {
			return Route{}
		}
		r.Version = parts[1]
		parts = parts[2:]
	}
	switch {
	case len(parts) == 0:
		r.Kind = RouteModel
	case len(parts) == 1 && parts[0] == "ready":
		r.Kind = RouteModelReady
	case len(parts) == 1 && parts[0] == "infer":
		r.Kind = RouteInfer
	default:
		return Route{}
	}
	return r
}
