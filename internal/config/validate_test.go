package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// validConfig returns a small valid Config built in code.
func validConfig() *Config {
	return &Config{
		CacheBytes: DefaultCacheBytes,
		Weights:    WeightsStatic,
		Models: []Model{{
			Name:     "bert-base",
			Protocol: ProtocolV2,
			Batching: DefaultBatching(),
			Cache:    DefaultCache(),
			Versions: []Version{{
				Version:   "1",
				Weight:    1,
				Endpoints: []Endpoint{{Address: "127.0.0.1:8000", Weight: 1, Slots: 1}},
			}},
		}},
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(c *Config)
		want   []string // each a substring of the error; none for a valid config
	}{
		{name: "valid", change: func(*Config) {}},
		{name: "outlier detection defaults", change: func(c *Config) { c.OutlierDetection = DefaultOutlierDetection() }},
		{name: "outlier detection off", change: func(c *Config) {
			c.OutlierDetection = DefaultOutlierDetection()
			c.OutlierDetection.ConsecutiveFailures = 0
		}},
		{
			name: "outlier detection out of range",
			change: func(c *Config) {
				c.OutlierDetection = DefaultOutlierDetection()
				c.OutlierDetection.ConsecutiveFailures, c.OutlierDetection.BaseEjectionTime, c.OutlierDetection.MaxEjectionTime, c.OutlierDetection.MaxEjectionPercent = -1, time.Minute, time.Second, 101
			},
			want: []string{
				"outlier_detection.consecutive_failures: -1 is negative; must be 1 or more, or 0 to turn ejection on consecutive failures off",
				"outlier_detection.max_ejection_time: 1s is shorter than base_ejection_time (1m0s); must be at least as long",
				"outlier_detection.max_ejection_percent: 101 is not a percentage; must be 1 to 100",
			},
		},
		{name: "circuit breakers and hedging defaults", change: func(c *Config) {
			c.Models[0].CircuitBreakers, c.Models[0].Hedging = DefaultCircuitBreakers(), DefaultHedging()
		}},
		{name: "hedging off", change: func(c *Config) { c.Models[0].Hedging = Hedging{MinDelay: time.Millisecond} }},
		{
			name: "circuit breakers out of range",
			change: func(c *Config) {
				c.Models[0].CircuitBreakers = CircuitBreakers{MaxBatches: -1, EndpointMaxRows: -2, RetryBudgetPercent: 0, MinRetryConcurrency: 0}
			},
			want: []string{
				"models[0].circuit_breakers.max_batches: -1 is negative; must be 1 or more, or 0 for no bound",
				"models[0].circuit_breakers.endpoint_max_rows: -2 is negative; must be 1 or more, or 0 for no bound",
				"models[0].circuit_breakers.retry_budget_percent: 0 is not a percentage; must be 1 to 100",
				"models[0].circuit_breakers.min_retry_concurrency: 0 must be 1 or more",
			},
		},
		{name: "service addresses", change: func(c *Config) {
			c.Models[0].Versions[0].ServiceAddresses = []string{"10.96.0.10:8000", "[fd00::10]:8000"}
		}},
		{
			name: "service addresses that are not ip:port",
			change: func(c *Config) {
				c.Models[0].Versions[0].ServiceAddresses = []string{"bert.ml.svc:8000", "10.96.0.10:0", "10.96.0.10"}
			},
			want: []string{
				`models[0].versions[0].service_addresses[0]: "bert.ml.svc:8000": the host "bert.ml.svc" is not an IP address; a service address is ip:port`,
				`models[0].versions[0].service_addresses[1]: "10.96.0.10:0": the port "0" is out of range; must be 1-65535`,
				`models[0].versions[0].service_addresses[2]: "10.96.0.10" is not host:port`,
			},
		},
		{
			name:   "hedging out of range",
			change: func(c *Config) { c.Models[0].Hedging = Hedging{P99Multiple: -3} },
			want: []string{
				"models[0].hedging.p99_multiple: -3 is negative; must be 1 or more, or 0 to turn hedging off",
				"models[0].hedging.min_delay: 0s is too short; must be more than 0",
			},
		},
		{
			name: "outlier detection base ejection time",
			change: func(c *Config) {
				c.OutlierDetection = DefaultOutlierDetection()
				c.OutlierDetection.BaseEjectionTime = 0
			},
			want: []string{"outlier_detection.base_ejection_time: 0s is too short; must be more than 0"},
		},
		{
			name: "failure percentage out of range",
			change: func(c *Config) {
				c.OutlierDetection = OutlierDetection{ConsecutiveFailures: 5, BaseEjectionTime: time.Second, MaxEjectionTime: time.Second, MaxEjectionPercent: 10,
					Interval: -time.Second, FailurePercentageThreshold: 0, FailurePercentageMinimumHosts: 0, FailurePercentageRequestVolume: -1, EnforcingFailurePercentage: 101}
			},
			want: []string{
				"outlier_detection.interval: -1s is negative; must be more than 0",
				"outlier_detection.failure_percentage_threshold: 0 is not a percentage; must be 1 to 100",
				"outlier_detection.failure_percentage_minimum_hosts: 0 is too few; must be 1 or more",
				"outlier_detection.failure_percentage_request_volume: -1 is too few; must be 1 or more",
				"outlier_detection.enforcing_failure_percentage: 101 is not a percentage; must be 0 (off) to 100",
			},
		},
		{name: "failure percentage off", change: func(c *Config) {
			c.OutlierDetection = DefaultOutlierDetection()
			c.OutlierDetection.EnforcingFailurePercentage = 0
		}},
		{
			name:   "pass-through needs no queue",
			change: func(c *Config) { c.Models[0].Batching.MaxBatchSize, c.Models[0].Batching.MaxQueueSize = 0, 0 },
		},
		{
			name:   "zero value",
			change: func(c *Config) { *c = Config{} },
			want: []string{
				`config: weights: "" is not a weights mode; must be static or adaptive`,
				"config: models: at least one model is required",
			},
		},
		{
			name:   "zero model",
			change: func(c *Config) { c.Models[0] = Model{} },
			want: []string{
				"config: models[0].name: required",
				`config: models[0].protocol: "" is not a protocol`,
				"config: models[0].batching.timeout: 0s is too short",
				"config: models[0].cache.ttl: 0s is too short",
				`config: models[0].cache.granularity: "" is not a cache granularity`,
				"config: models[0].versions: at least one version is required",
			},
		},
		{
			name: "batching",
			change: func(c *Config) {
				c.Models[0].Batching = Batching{MaxBatchSize: -1, MaxQueueSize: -1, MaxQueueDelay: -time.Millisecond, Timeout: -time.Second}
			},
			want: []string{
				"config: models[0].batching.max_batch_size: -1 is negative; must be 0 (no batching) or more",
				"config: models[0].batching.max_queue_size: -1 is negative; must be 1 or more",
				"config: models[0].batching.max_queue_delay: -1ms is negative; must be 0 or more",
				"config: models[0].batching.timeout: -1s is negative; must be more than 0",
			},
		},
		{
			name: "duplicates",
			change: func(c *Config) {
				v := &c.Models[0].Versions[0]
				v.Endpoints = append(v.Endpoints, v.Endpoints[0])
				c.Models[0].Versions = append(c.Models[0].Versions, *v)
				c.Models = append(c.Models, c.Models[0])
			},
			want: []string{
				`config: models[0].versions[0].endpoints[1].address: duplicate address "127.0.0.1:8000"; models[0].versions[0].endpoints[0] has it too`,
				`config: models[0].versions[1].version: duplicate version "1"; models[0].versions[0] has it too`,
				`config: models[1].name: duplicate model name "bert-base"; models[0] has it too`,
			},
		},
		{
			name: "weights",
			change: func(c *Config) {
				c.Models[0].Versions[0].Weight = 0
				c.Models[0].Versions[0].Endpoints[0].Weight = 0
			},
			want: []string{
				"config: models[0].versions: the version weights sum to 0",
				"config: models[0].versions[0].endpoints: the endpoint weights sum to 0",
			},
		},
		{
			name:   "version with a slash",
			change: func(c *Config) { c.Models[0].Versions[0].Version = "1/2" },
			want:   []string{`config: models[0].versions[0].version: "1/2" has '/'`},
		},
		{
			name:   "version with a space",
			change: func(c *Config) { c.Models[0].Versions[0].Version = "1 2" },
			want:   []string{`config: models[0].versions[0].version: "1 2" has the character U+0020`},
		},
		{
			name:   "model name ..",
			change: func(c *Config) { c.Models[0].Name = ".." },
			want:   []string{`config: models[0].name: ".." is not a name`},
		},
		{
			name:   "ipv6 without brackets",
			change: func(c *Config) { c.Models[0].Versions[0].Endpoints[0].Address = "::1:8000" },
			want:   []string{`config: models[0].versions[0].endpoints[0].address: "::1:8000" is not host:port: too many colons in address`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.change(c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate succeeded on %+v", c)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%v\ndoes not contain\n%s", err, w)
				}
			}
			var e *Error
			if !errors.As(err, &e) || e.File != "" || e.Line != 0 {
				t.Errorf("errors.As(*Error) = %+v, want an *Error without file or line", e)
			}
		})
	}
}

func TestEndpointProtocol(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, mention string
	}{
		{"grpc", "models:\n  - name: m\n    versions: [{version: \"1\", endpoints: [{address: 127.0.0.1:8001, protocol: grpc}]}]\n", ""},
		{"http", "models:\n  - name: m\n    versions: [{version: \"1\", endpoints: [{address: 127.0.0.1:8000, protocol: http}]}]\n", ""},
		{"unknown", "models:\n  - name: m\n    versions: [{version: \"1\", endpoints: [{address: 127.0.0.1:8000, protocol: h2c}]}]\n",
			`models[0].versions[0].endpoints[0].protocol: "h2c" is not an endpoint protocol; must be http or grpc`},
		{"grpc for openai", "models:\n  - name: m\n    protocol: openai\n    versions: [{version: \"1\", endpoints: [{address: 127.0.0.1:8001, protocol: grpc}]}]\n",
			`grpc serves v2 models only`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse("t.yaml", []byte(tc.yaml))
			if tc.mention == "" {
				if err != nil {
					t.Fatal(err)
				}
				if p := cfg.Models[0].Versions[0].Endpoints[0].Protocol; p != tc.name {
					t.Errorf("protocol %q, want %q", p, tc.name)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("Parse = %v, want an error mentioning %q", err, tc.mention)
			}
		})
	}
}
