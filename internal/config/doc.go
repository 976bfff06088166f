// Package config is the YAML schema shared by the sidecar's static mode and
// the control plane: the models served, their batching and cache settings,
// their versions and the endpoints that serve each version.
//
//	cache_bytes: 256MiB          # the sidecar's row cache bound (default 256MiB)
//	weights: static              # static | adaptive (default static)
//	models:
//	  - name: bert-base          # required, unique, [A-Za-z0-9._-]+
//	    protocol: v2             # v2 | openai | tfserving (default v2)
//	    batching:
//	      max_batch_size: 64     # default 64; 0 = pass-through, no batching
//	      max_queue_delay: 2ms   # default 2ms
//	      max_queue_size: 4096   # default 4096
//	      batch_policy: cohort   # cohort | transit (default cohort)
//	      timeout: 1s            # default 1s
//	    cache: {enabled: true, ttl: 10m, granularity: row, scope: shared}
//	    versions:
//	      - version: "1"
//	        weight: 90           # default 1
//	        endpoints:
//	          - {address: 127.0.0.1:8000, weight: 1, slots: 1, zone: a}
//
// Parse and Load walk the YAML nodes themselves, so that every problem is
// reported with its file, line and key path, e.g.
//
//	sidecar.yaml:12: models[0].batching.max_batch_size: -3 is negative; must be 0 (no batching) or more
//
// Unknown keys, values of the wrong YAML type, values out of range, unknown
// protocols and modes, bad addresses, duplicate names and weights that sum
// to zero are errors. All of them are reported at once, sorted by line.
// A key whose value is null ("key:" or "key: ~") counts as absent. Anchors,
// aliases and merge keys (<<) work as in YAML; a file holds one document.
//
// Presence matters: an absent max_batch_size means 64 and an explicit 0
// means pass-through; an absent weight means 1 and an explicit 0 means no
// traffic. The Config that Parse returns holds resolved values, with every
// default applied, so its users never interpret zero values; Validate
// applies the same checks to a Config built in code.
//
// Durations are Go durations (time.ParseDuration). Sizes are integers with
// an optional unit (see ParseSize).
//
// The functions are safe for concurrent use and keep nothing after they
// return. This package exports no metrics.
package config
