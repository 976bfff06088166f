#!/usr/bin/env bash
# The batching and pass-through comparison of docs/batching.md, all in one
# run on one machine, so that its ratios are fair even on a busy machine:
#
#   examples/bench/batching.sh            # the whole table (about 13 minutes)
#   DURATION=3s ROUNDS=1 examples/bench/batching.sh closed open   # some parts, once
#
# Parts: closed (closed-loop one-row clients 1, 16, 64), open (Poisson
# arrivals at 1000, 2000, 2600 rows/s), bert (sim:h200/bert-base, 256
# clients, vs the runtime's own best batched rate), pass (batching off, a
# zero-cost runtime, vs nginx when installed and two relays that do no
# work, examples/bench/relay: the floor of a proxy on the machine).
# Systems in front of one simulated runtime (5ms + 0.2ms per row, one batch at a time): direct
# calls, the textbook batcher (examples/bench/textbook: max 32 rows, 10ms),
# and the sidecar with max_batch_size 64 under batch_policy transit (the
# earlier rule) and cohort (the default). Each row is the median of ROUNDS
# (3) runs, taken in turns with the other systems of its group. Builds
# what it needs; listens on
# 127.0.0.1 only; stops everything it started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

DURATION=${DURATION:-5s}
BIN=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$BIN"' EXIT
go build -o "$BIN/" ./model ./sidecar ./examples/bench ./examples/bench/textbook ./examples/bench/relay
RT=127.0.0.1:18830 RT0=127.0.0.1:18831 RTB=127.0.0.1:18832
TB=127.0.0.1:18840 NGX=127.0.0.1:18841 RELAY=127.0.0.1:18842 ELOOP=127.0.0.1:18844
declare -A PID=()
ROUNDS=${ROUNDS:-3}
CPU_ROWS=()
declare -A SC=([transit]=127.0.0.1:18850 [cohort]=127.0.0.1:18852 [pass]=127.0.0.1:18854 [bert]=127.0.0.1:18856)

wait_ready() { # URL
	for _ in $(seq 150); do
		curl -fs "$1" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "not ready: $1" >&2
	return 1
}

sidecar() { # NAME RUNTIME MAX_BATCH POLICY
	local listen=${SC[$1]} admin
	admin=${listen%:*}:$((${listen##*:} + 1))
	cat >"$BIN/$1.yaml" <<YAML
models:
  - name: m
    batching: {max_batch_size: $3, max_queue_size: 100000, batch_policy: $4, timeout: 30s}
    versions: [{version: "1", endpoints: [{address: "$2", slots: 1}]}]
YAML
	"$BIN/sidecar" -config "$BIN/$1.yaml" -listen "$listen" -admin "$admin" -log-level warn >"$BIN/$1.log" 2>&1 &
	PID[$1]=$!
	wait_ready "http://$admin/readyz"
}

# run_once HOSTPORT [bench flags...]: one bench run; prints "ROWS_PER_SEC
# ROWS TABLE_CELLS" (the cells after the label) or "0 0 (failed) |".
run_once() {
	local target=$1 out
	shift
	out=$("$BIN/bench" -target "http://$target/v2/models/m/infer" -duration "$DURATION" -timeout 30s -json "$@" 2>/dev/null) || {
		echo "0 0 (failed) |"
		return
	}
	field() { echo "$out" | sed -n "s/.*\"$1\": *\([0-9.e+-]*\).*/\1/p" | head -1; }
	awk -v r="$(field rows_per_sec)" -v n="$(field rows)" -v a="$(field p50_ns)" -v b="$(field p99_ns)" -v c="$(field p999_ns)" \
		-v e="$(field errors)" -v m="$(field mean_batch_rows)" -v o="$(field offered_per_sec)" -v d="$(field dropped)" 'BEGIN {
		printf "%f %d %s%.0f | %.2f | %.2f | %.2f | %d%s | %s |\n", r, n, (o == "" ? "" : sprintf("%.0f → ", o)), r, a / 1e6, b / 1e6, c / 1e6, e,
			(o == "" ? "" : sprintf(", %d dropped", d)), (m > 0 ? sprintf("%.1f", m) : "-") }'
}

# compare SPEC...: ROUNDS rounds of one bench run per SPEC, interleaved
# (A B C, A B C, ...) so that a change in the machine's load falls on every
# system alike; prints each SPEC's median round (by rows/s) as a table row.
# SPEC is "LABEL|HOSTPORT|PID|bench flags": with a PID, the CPU that PID
# and its children spent per row over all rounds goes to CPU_ROWS.
compare() {
	local i r spec label target pid flags t0 line
	local -a ticks=() rows=()
	for ((r = 0; r < ROUNDS; r++)); do
		i=0
		for spec in "$@"; do
			IFS='|' read -r label target pid flags <<<"$spec"
			[ -n "$pid" ] && t0=$(cpu_ticks "$pid")
			# shellcheck disable=SC2086 # flags are words
			line=$(run_once "$target" $flags)
			if [ -n "$pid" ]; then
				ticks[i]=$((${ticks[i]:-0} + $(cpu_ticks "$pid") - t0))
			fi
			rows[i]=$((${rows[i]:-0} + $(echo "$line" | cut -d' ' -f2)))
			echo "$line" >>"$BIN/round.$i"
			i=$((i + 1))
		done
	done
	i=0
	for spec in "$@"; do
		IFS='|' read -r label target pid flags <<<"$spec"
		line=$(sort -g -k1,1 "$BIN/round.$i" | sed -n "$(((ROUNDS + 1) / 2))p")
		echo "| $label | ${line#* * }"
		if [ -n "$pid" ]; then
			CPU_ROWS+=("$(awk -v l="$label" -v t="${ticks[i]}" -v hz="$(getconf CLK_TCK)" -v n="${rows[i]}" \
				'BEGIN { printf "| %s | %.1f |", l, (n > 0 ? t / hz * 1e6 / n : 0) }')")
		fi
		rm -f "$BIN/round.$i"
		i=$((i + 1))
	done
}

# cpu_ticks PID: the CPU time (user + system, in clock ticks) of PID and
# its children so far.
cpu_ticks() {
	local t=0 p
	for p in "$1" $(pgrep -P "$1"); do
		t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
	done
	echo "$t"
}

header() {
	echo
	echo "### $1"
	echo
	echo "| system | rows/s | p50 ms | p99 ms | p999 ms | errors | batch |"
	echo "|---|---|---|---|---|---|---|"
}

start_linear() {
	"$BIN/model" -listen "$RT" -grpc-listen off -model m=sim:linear/5ms+200us -slots 1 >"$BIN/model.log" 2>&1 &
	wait_ready "http://$RT/v2/health/ready"
	"$BIN/textbook" -listen "$TB" -upstream "$RT" -max-batch 32 -max-wait 10ms >"$BIN/textbook.log" 2>&1 &
	wait_ready "http://$TB/v2/health/ready"
	sidecar transit "$RT" 64 transit
	sidecar cohort "$RT" 64 cohort
}

part_closed() {
	header "Closed loop: one-row clients, sim:linear/5ms+200us, 1 slot"
	for c in 1 16 64; do
		compare "direct, $c clients|$RT||-clients $c" "textbook (32, 10ms), $c clients|$TB||-clients $c" \
			"sidecar transit, $c clients|${SC[transit]}||-clients $c" "sidecar cohort, $c clients|${SC[cohort]}||-clients $c"
	done
}

part_open() {
	header "Open loop: Poisson one-row arrivals, sim:linear/5ms+200us, 1 slot (rows/s: offered → served)"
	for r in 1000 2000 2600; do
		compare "textbook (32, 10ms), $r/s|$TB||-rate $r" "sidecar transit, $r/s|${SC[transit]}||-rate $r" \
			"sidecar cohort, $r/s|${SC[cohort]}||-rate $r"
	done
}

part_bert() {
	"$BIN/model" -listen "$RTB" -grpc-listen off -model m=sim:h200/bert-base -slots 1 >"$BIN/model-bert.log" 2>&1 &
	wait_ready "http://$RTB/v2/health/ready"
	sidecar bert "$RTB" 64 cohort
	header "sim:h200/bert-base, 1 slot: 256 one-row clients through the sidecar vs the runtime's best (64-row requests)"
	compare "sidecar cohort, 256 clients|${SC[bert]}||-clients 256" "direct, 64-row requests, 2 clients|$RTB||-clients 2 -rows 64"
}

part_pass() {
	"$BIN/model" -listen "$RT0" -grpc-listen off -model m=sim:linear/0s+0s -slots 64 >"$BIN/model0.log" 2>&1 &
	wait_ready "http://$RT0/v2/health/ready"
	sidecar pass "$RT0" 0 cohort
	local nginx=
	if command -v nginx >/dev/null; then
		mkdir -p "$BIN/nginx"
		cat >"$BIN/nginx/nginx.conf" <<NGINX
worker_processes 2;
daemon off;
pid $BIN/nginx/nginx.pid;
error_log $BIN/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $BIN/nginx/body;
  proxy_temp_path $BIN/nginx/proxy;
  keepalive_requests 1000000;
  upstream rt { server $RT0; keepalive 256; keepalive_requests 1000000; }
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  server { listen $NGX; location / { proxy_pass http://rt; } }
}
NGINX
		nginx -c "$BIN/nginx/nginx.conf" -p "$BIN/nginx" >"$BIN/nginx.log" 2>&1 &
		PID[nginx]=$!
		wait_ready "http://$NGX/v2/health/ready" && nginx=$NGX
	fi
	# The floor: relays that copy requests and answers and do nothing else
	# (examples/bench/relay), one per I/O model.
	"$BIN/relay" -listen "$RELAY" -upstream "$RT0" -mode goroutine >"$BIN/relay.log" 2>&1 &
	PID[relay]=$!
	"$BIN/relay" -listen "$ELOOP" -upstream "$RT0" -mode epoll >"$BIN/eloop.log" 2>&1 &
	PID[eloop]=$!
	wait_ready "http://$RELAY/v2/health/ready"
	wait_ready "http://$ELOOP/v2/health/ready"
	header "Pass-through: batching off, zero-cost runtime"
	for c in 64 1; do
		local floor=("relay, goroutines (no work), $c clients|$RELAY|${PID[relay]}|-clients $c"
			"relay, epoll loops (no work), $c clients|$ELOOP|${PID[eloop]}|-clients $c")
		if [ -n "$nginx" ]; then
			compare "direct, $c clients|$RT0||-clients $c" "sidecar pass-through, $c clients|${SC[pass]}|${PID[pass]}|-clients $c" \
				"nginx, $c clients|$nginx|${PID[nginx]}|-clients $c" "${floor[@]}"
		else
			compare "direct, $c clients|$RT0||-clients $c" "sidecar pass-through, $c clients|${SC[pass]}|${PID[pass]}|-clients $c" "${floor[@]}"
			echo "| nginx, $c clients | (not installed: apt-get install nginx-light) |"
		fi
	done
	echo
	echo "| proxy | CPU µs per request (from /proc/PID/stat) |"
	echo "|---|---|"
	printf '%s\n' "${CPU_ROWS[@]}"
}

parts=("$@")
((${#parts[@]})) || parts=(closed open bert pass)
echo "batching.sh: $(date -u +%FT%TZ), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), DURATION $DURATION, median of $ROUNDS rounds"
case " ${parts[*]} " in *" closed "* | *" open "*) start_linear ;; esac
for p in "${parts[@]}"; do
	"part_$p"
done
echo
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
