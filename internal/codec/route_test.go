package codec

import (
	"strings"
	"testing"
)

func TestParseRoute(t *testing.T) {
	tests := []struct {
		path string
		want Route
	}{
		{"/v2", Route{Kind: RouteServer}},
		{"/v2/", Route{Kind: RouteServer}},
		{"/v2/health/live", Route{Kind: RouteLive}},
		{"/v2/health/ready", Route{Kind: RouteReady}},
		{"/v2/models/resnet", Route{Kind: RouteModel, Model: "resnet"}},
		{"/v2/models/resnet/ready", Route{Kind: RouteModelReady, Model: "resnet"}},
		{"/v2/models/resnet/infer", Route{Kind: RouteInfer, Model: "resnet"}},
		{"/v2/models/resnet/versions/3", Route{Kind: RouteModel, Model: "resnet", Version: "3"}},
		{"/v2/models/resnet/versions/3/ready", Route{Kind: RouteModelReady, Model: "resnet", Version: "3"}},
		{"/v2/models/resnet/versions/3/infer", Route{Kind: RouteInfer, Model: "resnet", Version: "3"}},
		{"/v2/models/my-model_v1.2/versions/2024-01/infer", Route{Kind: RouteInfer, Model: "my-model_v1.2", Version: "2024-01"}},
		{"/v2/models/infer", Route{Kind: RouteModel, Model: "infer"}},
		{"/v2/models/versions/infer", Route{Kind: RouteInfer, Model: "versions"}},
		{"/v2/models/m/versions/ready", Route{Kind: RouteModel, Model: "m", Version: "ready"}},
		{"/v2/models/é/infer", Route{Kind: RouteInfer, Model: "é"}},

		{"", Route{}},
		{"/", Route{}},
		{"/v2x", Route{}},
		{"/v1/models/m:predict", Route{Kind: RoutePredict, Model: "m"}},
		{"/v1/models/m/versions/3:predict", Route{Kind: RoutePredict, Model: "m", Version: "3"}},
		{"/v1/models/m", Route{Kind: RouteTFModel, Model: "m"}},
		{"/v1/models/m/versions/3", Route{Kind: RouteTFModel, Model: "m", Version: "3"}},
		{"/v1/models/m/versions/:predict", Route{}},
		{"/v1/models/:predict", Route{}},
		{"/v1/models/m/x:predict", Route{}},
		{"/v1/embeddings", Route{Kind: RouteEmbeddings}},
		{"/embeddings", Route{Kind: RouteEmbeddings}},
		{"/v1/models", Route{Kind: RouteOpenAIModels}},
		{"/v2/health", Route{}},
		{"/v2/health/live/", Route{}},
		{"/v2/health/started", Route{}},
		{"/v2/models", Route{}},
		{"/v2/models/", Route{}},
		{"/v2/models//infer", Route{}},
		{"/v2/models/m/", Route{}},
		{"/v2/models/m/infer/", Route{}},
		{"/v2/models/m/versions", Route{}},
		{"/v2/models/m/versions/", Route{}},
		{"/v2/models/m/versions//infer", Route{}},
		{"/v2/models/m/versions/1/", Route{}},
		{"/v2/models/m/versions/1/2/infer", Route{}},
		{"/v2/models/m/metadata", Route{}},
		{"/v2/models/m/infer/extra", Route{}},
		{"/v2/models/m/generate", Route{}},
		{"v2/models/m/infer", Route{}},
		{"/V2/models/m/infer", Route{}},
		{"/v2/repository/index", Route{}},
	}
	for _, tt := range tests {
		if got := ParseRoute(tt.path); got != tt.want {
			t.Errorf("ParseRoute(%q) = %+v, want %+v", tt.path, got, tt.want)
		}
		if got := parseRouteSplit(tt.path); got != tt.want {
			t.Errorf("parseRouteSplit(%q) = %+v, want %+v", tt.path, got, tt.want)
		}
	}
}

func TestParseRouteAllocs(t *testing.T) {
	for _, path := range []string{"/v2/health/ready", "/v2/models/m/infer", "/v2/models/m/versions/2/infer"} {
		if n := testing.AllocsPerRun(100, func() { ParseRoute(path) }); n != 0 {
			t.Errorf("ParseRoute(%q): %v allocs, want 0", path, n)
		}
	}
}

// parseRouteSplit is ParseRoute as first written, with strings.Split; the
// fuzz target checks that the allocation-free version agrees with it.
func parseRouteSplit(path string) Route {
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
		kind := RouteTFModel
		if r, ok := strings.CutSuffix(rest, ":predict"); ok {
			rest, kind = r, RoutePredict
		}
		parts := strings.Split(rest, "/")
		if parts[0] == "" || strings.Contains(parts[0], ":") {
			return Route{}
		}
		switch {
		case len(parts) == 1:
			return Route{Kind: kind, Model: parts[0]}
		case len(parts) == 3 && parts[1] == "versions" && parts[2] != "" && !strings.Contains(parts[2], ":"):
			return Route{Kind: kind, Model: parts[0], Version: parts[2]}
		}
		return Route{}
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
