#!/usr/bin/env bash
# The sidecar benchmarks of the README, each measured as a ratio in one run:
# the same closed-loop load through the sidecar and straight at the runtime.
#
#   examples/bench/scenarios.sh [SCENARIO ...] (default: all)
#
# Scenarios: bert (sim:h200/bert-base, 256 clients), linear (5ms+0.2ms/row,
# 64 clients, and concurrency 1), mlp (the Go MLP on CPU, 64 clients),
# passthrough (batching off, concurrency 1), cache (hit path, and a
# 50%-repeated workload with the cache on vs off), tracing (off vs on at 1%
# sampling). DURATION (default 10s) sets each
# run's length. Everything listens on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

DURATION=${DURATION:-10s}
BIN=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$BIN"' EXIT
go build -o "$BIN/" ./model ./sidecar ./examples/bench ./examples/otlpsink
RT=127.0.0.1:18800 SC=127.0.0.1:18801 ADMIN=127.0.0.1:18802

wait_ready() { # URL
	for _ in $(seq 100); do
		curl -fs "$1" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "not ready: $1" >&2
	return 1
}

start() { # MODEL_FLAG SLOTS MAX_BATCH MAX_QUEUE_DELAY
	"$BIN/model" -listen "$RT" -model "m=$1" -slots "$2" >"$BIN/model.log" 2>&1 &
	wait_ready "http://$RT/v2/health/ready"
	cat >"$BIN/sidecar.yaml" <<YAML
models:
  - name: m
    batching: {max_batch_size: $3, max_queue_delay: $4, timeout: 10s}
    versions: [{version: "1", endpoints: [{address: "$RT", slots: $2}]}]
YAML
	"$BIN/sidecar" -config "$BIN/sidecar.yaml" -listen "$SC" -admin "$ADMIN" -log-level warn >"$BIN/sidecar.log" 2>&1 &
	wait_ready "http://$ADMIN/readyz"
}

stop() {
	kill $(jobs -p) 2>/dev/null || true
	wait 2>/dev/null || true
}

compare() { # TITLE CLIENTS [bench flags...]
	local title=$1 clients=$2
	shift 2
	echo "== $title"
	"$BIN/bench" -target "http://$SC/v2/models/m/infer" -compare "http://$RT/v2/models/m/infer" \
		-clients "$clients" -duration "$DURATION" "$@" 2>/dev/null
	echo
}

run_bert() {
	start sim:h200/bert-base 1 64 2ms
	compare "sim:h200/bert-base, 1 slot, max_batch_size 64, 256 one-row clients (sidecar vs direct)" 256
	echo "== the runtime's own best batched rate: 64-row requests, 2 clients, straight at it"
	"$BIN/bench" -target "http://$RT/v2/models/m/infer" -rows 64 -clients 2 -duration "$DURATION" 2>/dev/null
	echo
	stop
}

run_linear() {
	start sim:linear/5ms+200us 1 64 2ms
	compare "sim:linear/5ms+200us, 1 slot, 64 one-row clients" 64
	compare "sim:linear/5ms+200us, concurrency 1" 1
	stop
}

run_mlp() {
	"$BIN/model" gen-weights -o "$BIN/mlp.safetensors"
	start "mlp:$BIN/mlp.safetensors" 1 64 2ms
	compare "mlp on CPU (512-1024-512-16), 1 slot, 64 one-row clients" 64 -cols 512
	stop
}

run_passthrough() {
	start sim:linear/0s+0s 1 0 0s
	compare "pass-through (max_batch_size 0), zero-cost runtime, concurrency 1" 1
	if command -v nginx >/dev/null; then
		# nginx in front of the same runtime, for the "no worse than nginx" target.
		mkdir -p "$BIN/nginx"
		cat >"$BIN/nginx/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $BIN/nginx/nginx.pid;
error_log $BIN/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  upstream rt { server $RT; keepalive 32; }
  server {
    listen 127.0.0.1:18803;
    location / { proxy_pass http://rt; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGINX
		nginx -c "$BIN/nginx/nginx.conf" -p "$BIN/nginx" &
		wait_ready "http://127.0.0.1:18803/v2/health/ready"
		echo "== concurrency 1, p50 in microseconds over ${ROUNDS:-6} interleaved 2s rounds: direct, sidecar (pass-through), nginx"
		for _ in $(seq "${ROUNDS:-6}"); do
			for t in "$RT" "$SC" 127.0.0.1:18803; do
				"$BIN/bench" -target "http://$t/v2/models/m/infer" -clients 1 -duration 2s -json 2>/dev/null |
					sed -n 's/.*"p50_ns": *\([0-9]*\).*/\1/p' | head -1
			done | paste -sd' '
		done >"$BIN/p50s"
		med() { cut -d' ' -f"$1" "$BIN/p50s" | sort -n | awk '{v[NR]=$1} END {print int(v[int((NR+1)/2)]/1000)}'; }
		d=$(med 1) s=$(med 2) n=$(med 3)
		echo "median p50: direct ${d}µs, sidecar ${s}µs (+$((s - d))µs), nginx ${n}µs (+$((n - d))µs)"
		echo
	else
		echo "(nginx is not installed: apt-get install nginx-light to compare with it)"
	fi
	stop
}

# The row cache: one sidecar with cache on, one with it off, same runtime.
start_cached() { # MODEL_FLAG
	"$BIN/model" -listen "$RT" -model "m=$1" >"$BIN/model.log" 2>&1 &
	wait_ready "http://$RT/v2/health/ready"
	for c in on off; do
		local enabled=true listen=$SC admin=$ADMIN
		[ $c = off ] && enabled=false listen=127.0.0.1:18804 admin=127.0.0.1:18805
		cat >"$BIN/sidecar-$c.yaml" <<YAML
models:
  - name: m
    batching: {max_batch_size: 64, max_queue_delay: 2ms, timeout: 10s}
    cache: {enabled: $enabled, ttl: 10m}
    versions: [{version: "1", endpoints: [{address: "$RT"}]}]
YAML
		"$BIN/sidecar" -config "$BIN/sidecar-$c.yaml" -listen "$listen" -admin "$admin" -log-level warn >"$BIN/sidecar-$c.log" 2>&1 &
		wait_ready "http://$admin/readyz"
	done
}

run_cache() {
	start_cached sim:h200/bert-base
	echo "== cache hits: 8 clients repeating 8 bodies (all hits after the first 8)"
	"$BIN/bench" -target "http://$SC/v2/models/m/infer" -clients 8 -repeat 1 -duration "$DURATION" 2>/dev/null
	echo
	echo "== 50%-repeated one-row workload on sim:h200/bert-base, 256 clients: cache on vs cache off"
	"$BIN/bench" -target "http://$SC/v2/models/m/infer" -compare "http://127.0.0.1:18804/v2/models/m/infer" \
		-clients 256 -repeat 0.5 -distinct 400000 -duration "$DURATION" 2>/dev/null
	echo
	stop
}

# Tracing overhead: the same sidecar binary with tracing off, and on with 1%
# sampling exporting to otlpsink; a runtime with two slots so that the
# sidecar's CPU, not the runtime, is what limits. BASELINE_SIDECAR=path adds
# a third sidecar binary (e.g. built before tracing existed).
run_tracing() {
	"$BIN/model" -listen "$RT" -model m=sim:h200/bert-base -slots 2 >"$BIN/model.log" 2>&1 &
	wait_ready "http://$RT/v2/health/ready"
	"$BIN/otlpsink" -listen 127.0.0.1:18809 >"$BIN/sink.log" 2>&1 &
	cat >"$BIN/sidecar.yaml" <<YAML
models:
  - name: m
    batching: {max_batch_size: 64, max_queue_delay: 2ms, timeout: 10s}
    versions: [{version: "1", endpoints: [{address: "$RT", slots: 2}]}]
YAML
	"$BIN/sidecar" -config "$BIN/sidecar.yaml" -listen 127.0.0.1:18811 -admin 127.0.0.1:18812 -log-level warn &
	OTEL_TRACES_EXPORTER=otlp OTEL_EXPORTER_OTLP_PROTOCOL=grpc OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:18809 \
		OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.01 \
		"$BIN/sidecar" -config "$BIN/sidecar.yaml" -listen 127.0.0.1:18813 -admin 127.0.0.1:18814 -log-level warn &
	local targets=(127.0.0.1:18811 127.0.0.1:18813) names=(off on-1%) admins=(127.0.0.1:18812 127.0.0.1:18814)
	if [ -n "${BASELINE_SIDECAR:-}" ]; then
		"$BASELINE_SIDECAR" -config "$BIN/sidecar.yaml" -listen 127.0.0.1:18815 -admin 127.0.0.1:18816 -log-level warn &
		targets+=(127.0.0.1:18815) names+=(baseline) admins+=(127.0.0.1:18816)
	fi
	for a in "${admins[@]}"; do wait_ready "http://$a/readyz"; done
	echo "== tracing overhead: sim:h200/bert-base with 2 slots, 256 clients, rows/s of ${ROUNDS:-6} interleaved 4s rounds"
	for _ in $(seq "${ROUNDS:-6}"); do
		for t in "${targets[@]}"; do
			"$BIN/bench" -target "http://$t/v2/models/m/infer" -clients 256 -duration 4s -json 2>/dev/null |
				sed -n 's/.*"rows_per_sec": *\([0-9.]*\).*/\1/p' | head -1
		done | paste -sd' '
	done >"$BIN/rates"
	for i in "${!targets[@]}"; do
		echo "${names[$i]}: median $(cut -d' ' -f$((i + 1)) "$BIN/rates" | sort -n | awk '{v[NR]=$1} END {printf "%.0f", v[int((NR+1)/2)]}') rows/s (runs: $(cut -d' ' -f$((i + 1)) "$BIN/rates" | xargs printf '%.0f '))"
	done
	echo "spans received: $(tail -1 "$BIN/sink.log")"
	echo
	stop
}

scenarios=("$@")
((${#scenarios[@]})) || scenarios=(bert linear mlp passthrough cache tracing)
for s in "${scenarios[@]}"; do
	"run_$s"
done
