package config

import (
	"errors"
	"strings"
	"testing"
)

// TestParseErrors checks that each bad file fails with errors that name the
// file, the line, the key path and the reason.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		file string
		want []string // each a substring of the error
	}{
		{
			name: "empty file",
			file: "",
			want: []string{"bad.yaml:1: the file is empty"},
		},
		{
			name: "only comments",
			file: "# nothing here\n",
			want: []string{"bad.yaml:1: the file is empty"},
		},
		{
			name: "invalid YAML",
			file: "models:\n  - name: a\n    versions: [1, 2\n",
			want: []string{"bad.yaml:3: invalid YAML: did not find expected ',' or ']'"},
		},
		{
			name: "invalid YAML indentation",
			file: "models:\n  - name: a\n   protocol: v2\n",
			want: []string{"bad.yaml:2: invalid YAML: did not find expected '-' indicator"},
		},
		{
			name: "invalid YAML on the first line",
			file: "models: ]\n",
			want: []string{"bad.yaml:1: invalid YAML: did not find expected node content"},
		},
		{
			name: "unclosed quote",
			file: "models:\n  - name: 'a\n",
			want: []string{"bad.yaml:2: invalid YAML: found unexpected end of stream"},
		},
		{
			name: "scanner error",
			file: "models:\n  - name: a\n\tprotocol: v2\n",
			want: []string{"bad.yaml:2: invalid YAML: found a tab character that violates indentation"},
		},
		{
			name: "control character",
			file: "models:\n  - name: a\x01\n",
			want: []string{"bad.yaml:2: invalid YAML: control characters are not allowed"},
		},
		{
			name: "invalid UTF-8",
			file: "models:\n\n  - name: \xff\n",
			want: []string{"bad.yaml:3: invalid YAML: invalid leading UTF-8 octet"},
		},
		{
			name: "unknown anchor",
			file: "weights: static\nmodels: *nope\n",
			want: []string{"bad.yaml:2: invalid YAML: unknown anchor 'nope' referenced"},
		},
		{
			name: "two documents",
			file: "models: []\n---\nmodels: []\n",
			want: []string{"bad.yaml:2: a second YAML document"},
		},
		{
			name: "top level is a list",
			file: "- name: a\n",
			want: []string{"bad.yaml:1: expected a mapping, got a list"},
		},
		{
			name: "no models",
			file: "weights: static\n",
			want: []string{"bad.yaml:1: models: at least one model is required"},
		},
		{
			name: "empty models",
			file: "weights: static\nmodels: []\n",
			want: []string{"bad.yaml:2: models: at least one model is required"},
		},
		{
			name: "unknown top-level key",
			file: "cache_byte: 1MiB\n" + oneModel,
			want: []string{"bad.yaml:1: cache_byte: unknown key; did you mean cache_bytes? allowed keys: cache_bytes, weights, outlier_detection, models"},
		},
		{
			name: "unknown key in batching",
			file: modelHead + "    batching:\n      max_batch: 8\n" + versionsTail,
			want: []string{"bad.yaml:4: models[0].batching.max_batch: unknown key; allowed keys: max_batch_size, max_queue_delay, max_queue_size, batch_policy, timeout"},
		},
		{
			name: "unknown batch policy",
			file: modelHead + "    batching:\n      batch_policy: fifo\n" + versionsTail,
			want: []string{"bad.yaml:4: models[0].batching.batch_policy: \"fifo\" is not a batch policy; must be cohort or transit"},
		},
		{
			name: "unknown key in endpoint",
			file: modelHead + "    versions:\n      - version: \"1\"\n        endpoints:\n          - address: h:1\n            port: 80\n",
			want: []string{"bad.yaml:7: models[0].versions[0].endpoints[0].port: unknown key; allowed keys: address, weight, slots, zone"},
		},
		{
			name: "duplicate key",
			file: modelHead + "    protocol: v2\n    protocol: openai\n" + versionsTail,
			want: []string{"bad.yaml:4: models[0].protocol: duplicate key; first set at line 3"},
		},
		{
			name: "duration with a space",
			file: modelHead + "    batching: {max_queue_delay: 2 ms}\n" + versionsTail,
			want: []string{`bad.yaml:3: models[0].batching.max_queue_delay: "2 ms" is not a Go duration`},
		},
		{
			name: "duration without unit",
			file: modelHead + "    batching: {timeout: 5}\n" + versionsTail,
			want: []string{"bad.yaml:3: models[0].batching.timeout: 5 has no unit; write e.g. 5ms or 5s"},
		},
		{
			name: "negative max_batch_size",
			file: modelHead + "    batching:\n      max_batch_size: -3\n" + versionsTail,
			want: []string{"bad.yaml:4: models[0].batching.max_batch_size: -3 is negative; must be 0 (no batching) or more"},
		},
		{
			name: "max_queue_size 0 while batching",
			file: modelHead + "    batching:\n      max_queue_size: 0\n" + versionsTail,
			want: []string{"bad.yaml:4: models[0].batching.max_queue_size: 0 leaves no room to queue; must be 1 or more"},
		},
		{
			name: "negative max_queue_delay",
			file: modelHead + "    batching: {max_queue_delay: -1ms}\n" + versionsTail,
			want: []string{"bad.yaml:3: models[0].batching.max_queue_delay: -1ms is negative; must be 0 or more"},
		},
		{
			name: "zero timeout",
			file: modelHead + "    batching:\n      timeout: 0s\n" + versionsTail,
			want: []string{"bad.yaml:4: models[0].batching.timeout: 0s is too short; must be more than 0"},
		},
		{
			name: "zero cache ttl",
			file: modelHead + "    cache: {enabled: true, ttl: 0}\n" + versionsTail,
			want: []string{"bad.yaml:3: models[0].cache.ttl: 0s is too short; must be more than 0"},
		},
		{
			name: "bad cache granularity and scope",
			file: modelHead + "    cache:\n      granularity: batch\n      scope: user\n" + versionsTail,
			want: []string{
				`bad.yaml:4: models[0].cache.granularity: "batch" is not a cache granularity; must be row or request`,
				`bad.yaml:5: models[0].cache.scope: "user" is not a cache scope; must be shared or tenant`,
			},
		},
		{
			name: "cache on without cache bytes",
			file: "cache_bytes: 0\n" + modelHead + "    cache: {enabled: true}\n" + versionsTail,
			want: []string{"bad.yaml:4: models[0].cache.enabled: the cache is on, but cache_bytes is 0"},
		},
		{
			name: "enabled is not a boolean",
			file: modelHead + "    cache: {enabled: yes}\n" + versionsTail,
			want: []string{`bad.yaml:3: models[0].cache.enabled: expected a boolean (true or false), got string "yes"`},
		},
		{
			name: "version weights sum to zero",
			file: modelHead + "    versions:\n      - version: \"1\"\n        weight: 0\n        endpoints: [{address: \"h:1\"}]\n      - version: \"2\"\n        weight: 0\n        endpoints: [{address: \"h:1\"}]\n",
			want: []string{"bad.yaml:3: models[0].versions: the version weights sum to 0; give at least one version a weight above 0"},
		},
		{
			name: "endpoint weights sum to zero",
			file: modelHead + "    versions:\n      - version: \"1\"\n        endpoints:\n          - {address: \"h:1\", weight: 0}\n          - {address: \"h:2\", weight: 0}\n",
			want: []string{"bad.yaml:5: models[0].versions[0].endpoints: the endpoint weights sum to 0; give at least one endpoint a weight above 0"},
		},
		{
			name: "negative weights",
			file: modelHead + "    versions:\n      - version: \"1\"\n        weight: -1\n        endpoints:\n          - {address: \"h:1\", weight: -2}\n",
			want: []string{
				"bad.yaml:5: models[0].versions[0].weight: -1 is negative; must be 0 or more",
				"bad.yaml:7: models[0].versions[0].endpoints[0].weight: -2 is negative; must be 0 or more",
			},
		},
		{
			name: "weights sum too large",
			file: modelHead + "    versions:\n      - version: \"1\"\n        endpoints:\n          - {address: \"h:1\", weight: 4294967295}\n          - {address: \"h:2\", weight: 1}\n",
			want: []string{"bad.yaml:5: models[0].versions[0].endpoints: the endpoint weights sum to 4294967296; the sum must be at most 4294967295"},
		},
		{
			name: "zero slots",
			file: modelHead + "    versions:\n      - version: \"1\"\n        endpoints:\n          - {address: \"h:1\", slots: 0}\n",
			want: []string{"bad.yaml:6: models[0].versions[0].endpoints[0].slots: 0 is too few; must be 1 or more"},
		},
		{
			name: "endpoint without address",
			file: modelHead + "    versions:\n      - version: \"1\"\n        endpoints:\n          - zone: a\n",
			want: []string{"bad.yaml:6: models[0].versions[0].endpoints[0].address: required"},
		},
		{
			name: "address without port",
			file: modelHead + "    versions:\n      - version: \"1\"\n        endpoints:\n          - address: localhost\n",
			want: []string{`bad.yaml:6: models[0].versions[0].endpoints[0].address: "localhost" is not host:port: missing port in address`},
		},
		{
			name: "port 0",
			file: modelHead + "    versions:\n      - version: \"1\"\n        endpoints:\n          - address: 127.0.0.1:0\n",
			want: []string{`bad.yaml:6: models[0].versions[0].endpoints[0].address: "127.0.0.1:0": the port "0" is out of range; must be 1-65535`},
		},
		{
			name: "port 70000",
			file: modelHead + "    versions:\n      - version: \"1\"\n        endpoints:\n          - address: 127.0.0.1:70000\n",
			want: []string{`bad.yaml:6: models[0].versions[0].endpoints[0].address: "127.0.0.1:70000": the port "70000" is out of range; must be 1-65535`},
		},
		{
			name: "named port",
			file: modelHead + "    versions:\n      - version: \"1\"\n        endpoints:\n          - address: runtime:http\n",
			want: []string{`the port "http" is not a number; must be 1-65535`},
		},
		{
			name: "no host",
			file: modelHead + "    versions:\n      - version: \"1\"\n        endpoints:\n          - address: \":8000\"\n",
			want: []string{`bad.yaml:6: models[0].versions[0].endpoints[0].address: ":8000" has no host`},
		},
		{
			name: "duplicate address",
			file: modelHead + "    versions:\n      - version: \"1\"\n        endpoints:\n          - address: h:1\n          - address: h:1\n",
			want: []string{`bad.yaml:7: models[0].versions[0].endpoints[1].address: duplicate address "h:1"; models[0].versions[0].endpoints[0] (line 6) has it too`},
		},
		{
			name: "duplicate model name",
			file: oneModel + "  - name: bert-base\n    versions: [{version: \"1\", endpoints: [{address: \"h:1\"}]}]\n",
			want: []string{`bad.yaml:4: models[1].name: duplicate model name "bert-base"; models[0] (line 2) has it too`},
		},
		{
			name: "model without name",
			file: "models:\n  - protocol: v2\n    versions: [{version: \"1\", endpoints: [{address: \"h:1\"}]}]\n",
			want: []string{"bad.yaml:2: models[0].name: required"},
		},
		{
			name: "model name with a slash",
			file: "models:\n  - name: org/bert\n    versions: [{version: \"1\", endpoints: [{address: \"h:1\"}]}]\n",
			want: []string{`bad.yaml:2: models[0].name: "org/bert" has '/'; a name may hold only A-Z, a-z, 0-9, '.', '_' and '-'`},
		},
		{
			name: "model name that is a number",
			file: "models:\n  - name: 7\n    versions: [{version: \"1\", endpoints: [{address: \"h:1\"}]}]\n",
			want: []string{"bad.yaml:2: models[0].name: expected a string, got integer 7; quote it to make it a string"},
		},
		{
			name: "duplicate version",
			file: modelHead + "    versions:\n      - version: 1\n        endpoints: [{address: \"h:1\"}]\n      - version: \"1\"\n        endpoints: [{address: \"h:1\"}]\n",
			want: []string{`bad.yaml:6: models[0].versions[1].version: duplicate version "1"; models[0].versions[0] (line 4) has it too`},
		},
		{
			name: "version with a pipe",
			file: modelHead + "    versions:\n      - version: a|b\n        endpoints: [{address: \"h:1\"}]\n",
			want: []string{`bad.yaml:4: models[0].versions[0].version: "a|b" has '|'`},
		},
		{
			name: "no versions",
			file: modelHead + "    versions: []\n",
			want: []string{"bad.yaml:3: models[0].versions: at least one version is required"},
		},
		{
			name: "no endpoints",
			file: modelHead + "    versions:\n      - version: \"1\"\n        endpoints: []\n",
			want: []string{"bad.yaml:5: models[0].versions[0].endpoints: at least one endpoint is required"},
		},
		{
			name: "bad protocol",
			file: modelHead + "    protocol: grpc\n" + versionsTail,
			want: []string{`bad.yaml:3: models[0].protocol: "grpc" is not a protocol; must be v2, openai or tfserving`},
		},
		{
			name: "bad weights mode",
			file: "weights: dynamic\n" + oneModel,
			want: []string{`bad.yaml:1: weights: "dynamic" is not a weights mode; must be static or adaptive`},
		},
		{
			name: "bad size",
			file: "cache_bytes: 12XB\n" + oneModel,
			want: []string{`bad.yaml:1: cache_bytes: "12XB" is not a size: unknown unit "XB"; use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB`},
		},
		{
			name: "negative size",
			file: "cache_bytes: -3\n" + oneModel,
			want: []string{"bad.yaml:1: cache_bytes: -3 is negative; must be 0 or more"},
		},
		{
			name: "float size",
			file: "cache_bytes: 1.5\n" + oneModel,
			want: []string{"bad.yaml:1: cache_bytes: expected a size such as 268435456 or 256MiB, got number 1.5"},
		},
		{
			name: "integer out of range",
			file: modelHead + "    batching: {max_batch_size: 99999999999999999999}\n" + versionsTail,
			want: []string{"bad.yaml:3: models[0].batching.max_batch_size: 99999999999999999999 is out of range"},
		},
		{
			name: "list where a mapping is expected",
			file: modelHead + "    batching:\n      - max_batch_size: 8\n" + versionsTail,
			want: []string{"bad.yaml:4: models[0].batching: expected a mapping, got a list"},
		},
		{
			name: "mapping where a list is expected",
			file: modelHead + "    versions:\n      version: \"1\"\n",
			want: []string{"bad.yaml:4: models[0].versions: expected a list of versions, got a mapping"},
		},
		{
			name: "string where an integer is expected",
			file: modelHead + "    batching: {max_batch_size: \"64\"}\n" + versionsTail,
			want: []string{`bad.yaml:3: models[0].batching.max_batch_size: expected an integer, got string "64"`},
		},
		{
			name: "merge of a non-mapping",
			file: modelHead + "    batching:\n      <<: [1]\n" + versionsTail,
			want: []string{"models[0].batching: a merge key (<<) needs a mapping or a list of mappings; got integer 1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("bad.yaml", []byte(tt.file))
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", c)
			}
			if c != nil {
				t.Errorf("Parse returned a config with an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%v\ndoes not contain\n%s", err, w)
				}
			}
			var e *Error
			if !errors.As(err, &e) || e.File != "bad.yaml" {
				t.Errorf("errors.As(*Error) = %+v, want an *Error with File bad.yaml", e)
			}
		})
	}
}

// A valid file is built from these pieces; modelHead ends where a test
// adds keys to models[0] (line 3).
const (
	modelHead    = "models:\n  - name: bert-base\n"
	versionsTail = "    versions: [{version: \"1\", endpoints: [{address: \"h:1\"}]}]\n"
	oneModel     = modelHead + versionsTail
)

// TestParseAllErrors checks that every problem in a file is reported at
// once, sorted by line, and nothing follows from a value that failed to
// decode.
func TestParseAllErrors(t *testing.T) {
	const file = `cache_bytes: 12XB
models:
  - name: bert/base
    batching:
      max_batch_size: -3
      max_queue_delay: 2 ms
      timeout: 0s
      max_batch_sise: 3
    versions:
      - version: "1"
        endpoints:
          - {address: localhost}
          - {address: "127.0.0.1:0", weight: 0}
      - version: 1
        endpoints: {address: "h:1"}
weights: dynamic
`
	_, err := Parse("sidecar.yaml", []byte(file))
	want := `sidecar.yaml:1: cache_bytes: "12XB" is not a size: unknown unit "XB"; use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB
sidecar.yaml:3: models[0].name: "bert/base" has '/'; a name may hold only A-Z, a-z, 0-9, '.', '_' and '-'
sidecar.yaml:5: models[0].batching.max_batch_size: -3 is negative; must be 0 (no batching) or more
sidecar.yaml:6: models[0].batching.max_queue_delay: "2 ms" is not a Go duration; write e.g. 2ms, 1.5s or 10m
sidecar.yaml:7: models[0].batching.timeout: 0s is too short; must be more than 0
sidecar.yaml:8: models[0].batching.max_batch_sise: unknown key; did you mean max_batch_size? allowed keys: max_batch_size, max_queue_delay, max_queue_size, batch_policy, timeout
sidecar.yaml:12: models[0].versions[0].endpoints[0].address: "localhost" is not host:port: missing port in address
sidecar.yaml:13: models[0].versions[0].endpoints[1].address: "127.0.0.1:0": the port "0" is out of range; must be 1-65535
sidecar.yaml:14: models[0].versions[1].version: duplicate version "1"; models[0].versions[0] (line 10) has it too
sidecar.yaml:15: models[0].versions[1].endpoints: expected a list of endpoints, got a mapping
sidecar.yaml:16: weights: "dynamic" is not a weights mode; must be static or adaptive`
	if err == nil || err.Error() != want {
		t.Errorf("got\n%v\nwant\n%s", err, want)
	}
	var n int
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		n = len(j.Unwrap())
	}
	if n != 11 {
		t.Errorf("got %d joined errors, want 11", n)
	}
}

func TestParseVersionNumbers(t *testing.T) {
	const file = "models:\n  - name: a\n    versions:\n" +
		"      - {version: 1, endpoints: [{address: \"h:1\"}]}\n" +
		"      - {version: 2.10, endpoints: [{address: \"h:1\"}]}\n" +
		"      - {version: \"007\", endpoints: [{address: \"h:1\"}]}\n"
	c, err := Parse("v.yaml", []byte(file))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range c.Models[0].Versions {
		got = append(got, v.Version)
	}
	assertEqual(t, got, []string{"1", "2.10", "007"})
}

func TestParseServiceAddresses(t *testing.T) {
	const file = "models:\n  - name: a\n    versions:\n" +
		"      - version: 1\n        endpoints: [{address: \"10.0.0.1:8000\"}]\n" +
		"        service_addresses: [\"10.96.0.10:8000\", \"[fd00::10]:8000\"]\n"
	c, err := Parse("v.yaml", []byte(file))
	if err != nil {
		t.Fatal(err)
	}
	assertEqual(t, c.Models[0].Versions[0].ServiceAddresses, []string{"10.96.0.10:8000", "[fd00::10]:8000"})

	for bad, want := range map[string]string{
		"service_addresses: 10.96.0.10:8000":        `s.yaml:6: models[0].versions[0].service_addresses: expected a list of service_addresses, got`,
		"service_addresses: [\"bert.ml.svc:8000\"]": `s.yaml:6: models[0].versions[0].service_addresses[0]: "bert.ml.svc:8000": the host "bert.ml.svc" is not an IP address`,
		"service_addresses: [[1]]":                  `s.yaml:6: models[0].versions[0].service_addresses[0]: expected a string`,
	} {
		_, err := Parse("s.yaml", []byte(strings.Replace(file, `service_addresses: ["10.96.0.10:8000", "[fd00::10]:8000"]`, bad, 1)))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want it to contain %q", bad, err, want)
		}
	}
}
