package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestLoadFull(t *testing.T) {
	got, err := Load(filepath.Join("testdata", "full.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		CacheBytes: 512 << 20,
		Weights:    WeightsAdaptive,
		OutlierDetection: OutlierDetection{
			ConsecutiveFailures: 3, BaseEjectionTime: 10 * time.Second, MaxEjectionTime: time.Minute, MaxEjectionPercent: 50,
			Interval: 5 * time.Second, FailurePercentageThreshold: 90, FailurePercentageMinimumHosts: 3, FailurePercentageRequestVolume: 20,
		},
		Models: []Model{
			{
				Name:     "bert-base",
				Protocol: ProtocolV2,
				Batching: Batching{MaxBatchSize: 32, MaxQueueSize: 1024, MaxQueueDelay: 5 * time.Millisecond, Policy: BatchPolicyTransit, Timeout: 2 * time.Second},
				Cache:    Cache{Enabled: true, TTL: 5 * time.Minute, Granularity: GranularityRequest, Scope: ScopeTenant},
				CircuitBreakers: CircuitBreakers{MaxBatches: 8, MaxRows: 512, EndpointMaxBatches: 3, EndpointMaxRows: 192,
					RetryBudgetPercent: 50, MinRetryConcurrency: 3},
				Hedging: Hedging{P99Multiple: 4, MinDelay: 50 * time.Millisecond},
				Versions: []Version{
					{Version: "1", Weight: 90, Endpoints: []Endpoint{
						{Address: "127.0.0.1:8000", Weight: 3, Slots: 2, Zone: "a"},
						{Address: "[::1]:8001", Weight: 0, Slots: 1, Zone: "b"},
					}},
					{Version: "2", Weight: 10, Endpoints: []Endpoint{
						{Address: "runtime-2.models.svc:8000", Weight: 1, Slots: 1},
					}},
				},
			},
			{
				Name:            "minilm_L6.v2",
				Protocol:        ProtocolOpenAI,
				Batching:        Batching{MaxBatchSize: 0, MaxQueueSize: 4096, MaxQueueDelay: 0, Policy: BatchPolicyCohort, Timeout: time.Second},
				Cache:           DefaultCache(),
				CircuitBreakers: DefaultCircuitBreakers(), Hedging: DefaultHedging(),
				Versions: []Version{
					{Version: "v1", Weight: 1, Endpoints: []Endpoint{{Address: "10.0.0.7:9000", Weight: 1, Slots: 1}}},
				},
			},
			{
				Name:            "resnet-50",
				Protocol:        ProtocolTFServing,
				Batching:        Batching{MaxBatchSize: 16, MaxQueueSize: 4096, MaxQueueDelay: 2 * time.Millisecond, Policy: BatchPolicyCohort, Timeout: 500 * time.Millisecond},
				Cache:           DefaultCache(),
				CircuitBreakers: DefaultCircuitBreakers(), Hedging: DefaultHedging(),
				Versions: []Version{
					{Version: "2024.06", Weight: 0, Endpoints: []Endpoint{{Address: "10.0.0.8:8501", Weight: 1, Slots: 1}}},
					{Version: "3", Weight: 1, Endpoints: []Endpoint{{Address: "10.0.0.9:8501", Weight: 1, Slots: 1}}},
				},
			},
		},
	}
	assertEqual(t, got, want)
	if err := got.Validate(); err != nil {
		t.Errorf("Validate of a parsed config: %v", err)
	}
	if !got.Models[0].Batching.Enabled() || got.Models[1].Batching.Enabled() {
		t.Errorf("Enabled: got %v, %v; want true, false", got.Models[0].Batching.Enabled(), got.Models[1].Batching.Enabled())
	}
}

func TestLoadDefaults(t *testing.T) {
	got, err := Load(filepath.Join("testdata", "minimal.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		CacheBytes:       256 << 20,
		Weights:          WeightsStatic,
		OutlierDetection: DefaultOutlierDetection(),
		Models: []Model{{
			Name:            "bert-base",
			Protocol:        ProtocolV2,
			Batching:        Batching{MaxBatchSize: 64, MaxQueueSize: 4096, MaxQueueDelay: 2 * time.Millisecond, Policy: BatchPolicyCohort, Timeout: time.Second},
			Cache:           Cache{Enabled: false, TTL: 10 * time.Minute, Granularity: GranularityRow, Scope: ScopeShared},
			CircuitBreakers: DefaultCircuitBreakers(), Hedging: DefaultHedging(),
			Versions: []Version{{Version: "1", Weight: 1, Endpoints: []Endpoint{{Address: "127.0.0.1:8000", Weight: 1, Slots: 1}}}},
		}},
	}
	assertEqual(t, got, want)
}

// TestParsePresence checks that an explicit zero is kept and an absent key
// or a null value gets its default.
func TestParsePresence(t *testing.T) {
	const file = `
cache_bytes: 0
models:
  - name: a
    batching: {max_batch_size: 0, max_queue_size: 0, max_queue_delay: 0}
    versions:
      - version: "1"
        weight: 0
        endpoints: [{address: "h:1", weight: 0}, {address: "h:2"}]
      - version: "2"
        endpoints: [{address: "h:1"}]
  - name: b
    batching:
      max_batch_size: ~
      timeout:
    cache: ~
    versions: [{version: "1", weight: ~, endpoints: [{address: "h:1", weight: ~, slots: ~}]}]
`
	c, err := Parse("p.yaml", []byte(file))
	if err != nil {
		t.Fatal(err)
	}
	a, b := c.Model("a"), c.Model("b")
	checks := []struct {
		name      string
		got, want any
	}{
		{"cache_bytes 0", c.CacheBytes, int64(0)},
		{"a max_batch_size 0", a.Batching.MaxBatchSize, 0},
		{"a max_queue_size 0", a.Batching.MaxQueueSize, 0},
		{"a max_queue_delay 0", a.Batching.MaxQueueDelay, time.Duration(0)},
		{"a version weight 0", a.Versions[0].Weight, 0},
		{"a version weight absent", a.Versions[1].Weight, 1},
		{"a endpoint weight 0", a.Versions[0].Endpoints[0].Weight, 0},
		{"a endpoint weight absent", a.Versions[0].Endpoints[1].Weight, 1},
		{"b max_batch_size null", b.Batching.MaxBatchSize, DefaultMaxBatchSize},
		{"b timeout null", b.Batching.Timeout, DefaultTimeout},
		{"b cache null", b.Cache, DefaultCache()},
		{"b version weight null", b.Versions[0].Weight, 1},
		{"b endpoint weight null", b.Versions[0].Endpoints[0].Weight, 1},
		{"b endpoint slots null", b.Versions[0].Endpoints[0].Slots, 1},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s: got %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

func TestParseAliasesAndMerge(t *testing.T) {
	const file = `
models:
  - name: a
    batching: &fast {max_batch_size: 8, timeout: 100ms}
    versions: &vs
      - version: 1
        endpoints: [{address: "h:1"}]
  - name: b
    batching:
      <<: *fast
      timeout: 200ms
    versions: *vs
`
	c, err := Parse("m.yaml", []byte(file))
	if err != nil {
		t.Fatal(err)
	}
	b := c.Model("b")
	want := Batching{MaxBatchSize: 8, MaxQueueSize: DefaultMaxQueueSize, MaxQueueDelay: DefaultMaxQueueDelay, Policy: DefaultBatchPolicy, Timeout: 200 * time.Millisecond}
	if b.Batching != want {
		t.Errorf("merged batching: got %+v, want %+v", b.Batching, want)
	}
	assertEqual(t, b.Versions, c.Model("a").Versions)
}

// TestParseAliasBomb checks that aliases cannot expand a small file into a
// huge Config.
func TestParseAliasBomb(t *testing.T) {
	// 128 models × 128 versions × 128 endpoints from a 3 KB file.
	const n = 128
	aliases := func(name string) string {
		return "[" + strings.Repeat("*"+name+", ", n-1) + "*" + name + "]"
	}
	file := "e: &e {address: \"h:1\"}\n" +
		"v: &v {version: 1, endpoints: " + aliases("e") + "}\n" +
		"m: &m {name: a, versions: " + aliases("v") + "}\n" +
		"models: " + aliases("m") + "\n"
	_, err := Parse("bomb.yaml", []byte(file))
	want := fmt.Sprintf("bomb.yaml: aliases expand the file to more than %d YAML nodes", 2*len(file)+aliasNodes)
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %s", err, want)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) || !strings.HasPrefix(err.Error(), "config: ") {
		t.Fatalf("got %v, want a config: error wrapping os.ErrNotExist", err)
	}
}

func TestModel(t *testing.T) {
	c := validConfig()
	c.Models = append(c.Models, c.Models[0])
	c.Models[1].Name = "other"
	if m := c.Model("other"); m != &c.Models[1] {
		t.Errorf("Model(other) = %p, want %p", m, &c.Models[1])
	}
	if m := c.Model("missing"); m != nil {
		t.Errorf("Model(missing) = %+v, want nil", m)
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{in: "0", want: 0},
		{in: "268435456", want: 268435456},
		{in: "12B", want: 12},
		{in: "1KB", want: 1000},
		{in: "1KiB", want: 1024},
		{in: "256MiB", want: 256 << 20},
		{in: "3MB", want: 3e6},
		{in: "2GiB", want: 2 << 30},
		{in: "2GB", want: 2e9},
		{in: "1TiB", want: 1 << 40},
		{in: "8388607TiB", want: 8388607 << 40},
		{in: "", wantErr: "empty size"},
		{in: "12XB", wantErr: `unknown unit "XB"`},
		{in: "12 MiB", wantErr: `unknown unit " MiB"`},
		{in: "12mib", wantErr: "unknown unit"},
		{in: "1.5GiB", wantErr: "unknown unit"},
		{in: "MiB", wantErr: "not a size"},
		{in: "-1", wantErr: "negative"},
		{in: "+1", wantErr: "not a size"},
		{in: "8388608TiB", wantErr: "too large"},
		{in: "99999999999999999999", wantErr: "too large"},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "config: ") {
				t.Errorf("ParseSize(%q) = %d, %v; want an error with %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func assertEqual(t *testing.T, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got\n%s\nwant\n%s", dump(got), dump(want))
	}
}

// dump prints v one field per line, so that a failing comparison is easy
// to diff by eye.
func dump(v any) string {
	s := fmt.Sprintf("%+v", v)
	r := strings.NewReplacer("{", "{\n", "} ", "}\n", " ", "\n")
	return r.Replace(s)
}

func TestLoadPartial(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	settings := write("settings.yaml", "models:\n  - name: a\n    batching: {max_batch_size: 8}\n  - name: b\n    versions: [{version: 1, endpoints: [{address: 10.0.0.1:80}]}]\n")
	c, err := LoadPartial(settings)
	if err != nil {
		t.Fatalf("LoadPartial: %v", err)
	}
	if len(c.Models) != 2 || len(c.Models[0].Versions) != 0 || c.Models[0].Batching.MaxBatchSize != 8 || len(c.Models[1].Versions) != 1 {
		t.Errorf("LoadPartial = %+v", c)
	}
	if _, err := Load(settings); err == nil || !strings.Contains(err.Error(), "models[0].versions") {
		t.Errorf("Load of a model without versions: %v; want models[0].versions refused", err)
	}
	none, err := LoadPartial(write("none.yaml", "weights: adaptive\n"))
	if err != nil || len(none.Models) != 0 || none.Weights != WeightsAdaptive {
		t.Errorf("LoadPartial of a file without models = %+v, %v", none, err)
	}
	// Everything listed is still checked.
	for _, bad := range []struct{ data, want string }{
		{"models: [{name: a, batching: {timeout: 0s}}]\n", "models[0].batching.timeout"},
		{"models: [{name: a, versions: [{version: 1}]}]\n", "models[0].versions[0].endpoints"},
		{"models: [{name: a}, {name: a}]\n", "duplicate model name"},
	} {
		if _, err := LoadPartial(write("bad.yaml", bad.data)); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("LoadPartial(%q): %v; want an error naming %s", bad.data, err, bad.want)
		}
	}
	if _, err := LoadPartial(filepath.Join(dir, "absent.yaml")); err == nil {
		t.Error("LoadPartial of a missing file: no error")
	}
}
