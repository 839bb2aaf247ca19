#!/usr/bin/env bash
# bench/run.sh: the side-by-side proxy benchmark of `make bench` (issue 6).
#
# On loopback and in one run it measures the same load against the same
# simulated engines three ways: direct to the engines, through the sidecar
# and through nginx (a plain reverse proxy, installed here from Debian's
# packages if missing). Then it writes bench/out/report.md with a plot.
# docs/bench.md says what each figure means.
#
# Two minimal Go proxies (bench/refproxy: fasthttp, and net/http's
# httputil.ReverseProxy) take the throughput and memory runs too, for a
# reference table: what a Go HTTP stack itself costs on the machine.
#
# Knobs (environment):
#   BENCH_QUICK=1      seconds-long runs at small scale, to check the wiring
#   BENCH_NOTE=...     a line for the report about the machine (busy? quiet?)
#   BENCH_OUT=dir      output directory (default bench/out)
#   BENCH_PORT_BASE=n  first of the loopback ports used (default 18100)
#   BENCH_DURATION, BENCH_WARMUP, BENCH_RATE, BENCH_CONCURRENCY,
#   BENCH_STREAMS, BENCH_SLOW_STREAMS override the scale below.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
GO=${GO:-go}
OUT=${BENCH_OUT:-$ROOT/bench/out}
RAW=$OUT/proxy # blitzbench JSON, logs and profile summaries of this run
NOTE=${BENCH_NOTE:-} # e.g. "quiet 2-core VM", or a warning that the machine was busy
PORT=${BENCH_PORT_BASE:-18100}

if [[ ${BENCH_QUICK:-0} == 1 ]]; then
	DURATION=${BENCH_DURATION:-2s} WARMUP=${BENCH_WARMUP:-1s} RATE=${BENCH_RATE:-200}
	CONC=${BENCH_CONCURRENCY:-32} STREAMS=${BENCH_STREAMS:-100} SLOW=${BENCH_SLOW_STREAMS:-500}
	RAMP=2s PROFTIME=200ms
else
	DURATION=${BENCH_DURATION:-15s} WARMUP=${BENCH_WARMUP:-3s} RATE=${BENCH_RATE:-1000}
	CONC=${BENCH_CONCURRENCY:-128} STREAMS=${BENCH_STREAMS:-1000} SLOW=${BENCH_SLOW_STREAMS:-10000}
	RAMP=10s PROFTIME=3s
fi
MODEL=bench
# Engine TTFT and ITL per phase (blitzscale sim --ttft --itl).
FAST_ENGINE=(1ns 1ns)    # answers at once: what is left is client, proxy, kernel
STREAM_ENGINE=(20ms 50ms) # a short prefill, 20 tokens a second
SLOW_ENGINE=(10ms 1s)    # streams that stay open, one token a second
ENGINE_PORTS=($((PORT + 1)) $((PORT + 2)))
SIDECAR_PORT=$((PORT + 89))
NGINX_PORT=$((PORT + 90))
DEBUG_PORT=$((PORT + 91))
# bench/refproxy's minimal Go proxies, for the reference table.
declare -A REF_PORTS=([ref-fasthttp]=$((PORT + 92)) [ref-httputil]=$((PORT + 93)))
REFS=()      # the reference proxies built (none when their module cannot be fetched)
REF_MEMORY=  # their memory samples: JSON members for run.json
CORES=$(nproc)

log() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

# --- processes: every one started is recorded and stopped on exit --------
TMP=$(mktemp -d /tmp/blitzbench.XXXXXX)
declare -A PIDS=() # name -> pid
CPU_TICKS=         # JSON members "scenario-target": ticks, for run.json

start() { # start NAME LOGFILE CMD...: run CMD in the background as NAME
	local name=$1 logf=$2
	shift 2
	"$@" >"$logf" 2>&1 &
	PIDS[$name]=$!
}

stop() { # stop NAME: SIGTERM, then SIGKILL after 10 s
	local name=$1 pid=${PIDS[$1]:-}
	[[ -n $pid ]] || return 0
	unset "PIDS[$name]"
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	local rc=$?
	for name in "${!PIDS[@]}"; do stop "$name"; done
	rm -rf "$TMP"
	[[ -z ${POLICY_RC:-} ]] || rm -f "$POLICY_RC"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_http() { # wait_http URL: until it answers 200, 30 s at most
	for _ in $(seq 300); do
		curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	die "$1 did not come up"
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# cpu_ticks PID: user + system CPU time of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# proxy_ticks TARGET: the CPU time the proxy has used so far: the sidecar's
# (or a reference proxy's) process, or the sum of nginx's workers; 0 for
# direct.
proxy_ticks() {
	local sum=0 pid
	case $1 in
	sidecar | ref-*) sum=$(cpu_ticks "${PIDS[$1]}") ;;
	nginx)
		for pid in $(ps -o pid= --ppid "${PIDS[nginx]}"); do
			sum=$((sum + $(cpu_ticks "$pid")))
		done
		;;
	esac
	echo "$sum"
}

# nginx_rss_kb: the summed VmRSS of nginx's workers (the master only
# supervises; its RSS is in the log).
nginx_rss_kb() {
	local sum=0 pid
	for pid in $(ps -o pid= --ppid "${PIDS[nginx]}"); do
		sum=$((sum + $(rss_kb "$pid")))
	done
	echo "$sum"
}

# --- install and build -------------------------------------------------------
ensure_nginx() {
	command -v nginx >/dev/null && return 0
	[[ -x /usr/sbin/nginx ]] && { PATH=$PATH:/usr/sbin; return 0; }
	log "installing nginx-light from Debian's packages"
	command -v apt-get >/dev/null || die "nginx is not installed and apt-get is missing: install nginx"
	# Keep the package's scripts from starting a system nginx on port 80: the
	# policy-rc.d convention tells invoke-rc.d that starting is not allowed.
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		POLICY_RC=/usr/sbin/policy-rc.d
		printf '#!/bin/sh\nexit 101\n' >"$POLICY_RC"
		chmod +x "$POLICY_RC"
	fi
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-cache show nginx-light >/dev/null 2>&1; then
		apt-get update -qq
	fi
	apt-get install -y -qq nginx-light >/dev/null || apt-get install -y -qq nginx >/dev/null
	if [[ -n ${POLICY_RC:-} ]]; then rm -f "$POLICY_RC"; POLICY_RC=; fi
	command -v nginx >/dev/null || PATH=$PATH:/usr/sbin
	command -v nginx >/dev/null || die "nginx is still missing after apt-get install"
}

build() {
	log "building bin/blitzscale, bin/blitzbench and the report tool"
	mkdir -p bin
	$GO build -trimpath -o bin/blitzscale ./cmd/blitzscale
	$GO build -trimpath -o bin/blitzbench ./cmd/blitzbench
	$GO build -trimpath -o "$TMP/proxyreport" ./bench/proxyreport
	# A sidecar with a pprof listener is profiled live under load as well.
	local help
	help=$(bin/blitzscale sidecar -h 2>&1 || true)
	HAS_DEBUG=0
	[[ $help != *-debug-addr* ]] || HAS_DEBUG=1
	# The reference proxies are a module of their own (fasthttp stays out
	# of the router's dependencies); without them the report has no
	# reference table.
	if (cd bench/refproxy && $GO build -trimpath -o "$ROOT/bin/refproxy" .); then
		REFS=(ref-fasthttp ref-httputil)
	else
		echo "bench: bench/refproxy did not build: no reference proxies in this run" >&2
	fi
}

# Each process gets as many descriptors as allowed: a proxy holds two per
# stream (client and engine side). Where the hard limit cannot hold
# SLOW streams, the memory test runs at the most it can and says so.
raise_nofile() {
	ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
	NOFILE=$(ulimit -n)
	[[ $NOFILE == unlimited ]] && NOFILE=1048576
	SLOW_WANTED=$SLOW
	local fit=$(((NOFILE - 1000) / 2))
	if ((SLOW > fit)); then
		echo "bench: open-file limit $NOFILE holds $fit proxied streams, not $SLOW: the memory test runs at $fit" >&2
		SLOW=$fit
	fi
}

# --- engines, sidecar and nginx ------------------------------------------
# start_engines TTFT ITL MAX_CONCURRENCY: two simulated engines. The prefix
# cache is off so that every request pays the same TTFT.
start_engines() {
	local i
	for i in 0 1; do
		start "engine$i" "$RAW/engine$i.log" bin/blitzscale sim --listen "127.0.0.1:${ENGINE_PORTS[i]}" \
			--id "engine$i" --model "$MODEL" --ttft "$1" --itl "$2" --max-concurrency "$3" --no-prefix-cache
	done
	for i in 0 1; do wait_http "http://127.0.0.1:${ENGINE_PORTS[i]}/health"; done
}

stop_all() { for name in "${!PIDS[@]}"; do stop "$name"; done; }

# start_sidecar: a sidecar over the two engines from a static registry. The
# per-instance cap is lifted (meta max_concurrency) so that it queues
# nothing: the engines are what is being saturated, as nginx sees them.
start_sidecar() {
	local f=$TMP/instances.yaml
	: >"$f"
	for i in 0 1; do
		printf -- '- id: engine%d\n  address: 127.0.0.1:%d\n  models: [%s]\n  meta: {max_concurrency: "1000000"}\n' \
			"$i" "${ENGINE_PORTS[i]}" "$MODEL" >>"$f"
	done
	local extra=()
	((HAS_DEBUG)) && extra=(--debug-addr "127.0.0.1:$DEBUG_PORT")
	start sidecar "$RAW/sidecar-$1.log" bin/blitzscale sidecar --listen "127.0.0.1:$SIDECAR_PORT" \
		--registry static --static-file "$f" --sidecar-id bench "${extra[@]}"
	wait_http "http://127.0.0.1:$SIDECAR_PORT/readyz"
}

start_nginx() {
	local dir=$TMP/nginx servers=
	rm -rf "$dir"
	mkdir -p "$dir"
	for p in "${ENGINE_PORTS[@]}"; do servers+="        server 127.0.0.1:$p;"$'\n'; done
	local conf=$dir/nginx.conf
	sed -e "s|@WORKERS@|$CORES|" -e "s|@NOFILE@|$NOFILE|" -e "s|@CONNS@|$((NOFILE - 200))|" \
		-e "s|@DIR@|$dir|g" -e "s|@LISTEN@|127.0.0.1:$NGINX_PORT|" bench/nginx.conf.tmpl |
		awk -v s="$servers" '{ if ($0 == "@SERVERS@") printf "%s", s; else print }' >"$conf"
	nginx -t -q -p "$dir" -e "$dir/error.log" -c "$conf" || die "nginx rejected $conf"
	start nginx "$RAW/nginx-$1.log" nginx -p "$dir" -e "$dir/error.log" -c "$conf"
	wait_tcp "$NGINX_PORT"
}

# start_refs: the reference proxies over the two engines.
start_refs() {
	local t
	for t in "${REFS[@]}"; do
		start "$t" "$RAW/$t-$1.log" bin/refproxy --impl "${t#ref-}" --listen "127.0.0.1:${REF_PORTS[$t]}" \
			--upstream "127.0.0.1:${ENGINE_PORTS[0]},127.0.0.1:${ENGINE_PORTS[1]}"
	done
	for t in "${REFS[@]}"; do wait_tcp "${REF_PORTS[$t]}"; done
}

wait_tcp() {
	for _ in $(seq 300); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	die "port $1 did not open"
}

direct_url() { echo "http://127.0.0.1:${ENGINE_PORTS[0]}/v1,http://127.0.0.1:${ENGINE_PORTS[1]}/v1"; }
target_url() {
	case $1 in
	direct) direct_url ;;
	sidecar) echo "http://127.0.0.1:$SIDECAR_PORT/v1" ;;
	nginx) echo "http://127.0.0.1:$NGINX_PORT/v1" ;;
	ref-*) echo "http://127.0.0.1:${REF_PORTS[$1]}/v1" ;;
	esac
}

# measure SCENARIO TARGET BLITZBENCH-FLAGS...: one run, JSON kept.
measure() {
	local scenario=$1 target=$2
	shift 2
	echo "-- $scenario via $target" >&2
	local before after
	before=$(proxy_ticks "$target")
	# In the background with wait, so that a signal stops the script at once
	# (bash runs traps only between foreground commands).
	start bench "$RAW/run.log" bin/blitzbench --url "$(target_url "$target")" --model "$MODEL" \
		--json "$RAW/$scenario-$target.json" "$@"
	local rc=0
	wait "${PIDS[bench]}" || rc=$?
	unset 'PIDS[bench]'
	tee -a "$RAW/blitzbench.log" <"$RAW/run.log" >&2
	((rc == 0)) || die "blitzbench failed ($rc) on $scenario via $target"
	after=$(proxy_ticks "$target")
	# The proxy's CPU over warm-up and run: a cost per request that CPU
	# contention from other processes does not inflate the way it inflates
	# latency.
	[[ $target == direct ]] || CPU_TICKS+="\"$scenario-$target\": $((after - before)), "
	sleep 1 # let closed connections settle before the next target
}

# --- the scenarios ---------------------------------------------------------
# Fast engines: answers take no engine time, so whatever latency is left is
# the client's, the proxy's and the kernel's.
phase_fast() {
	log "throughput and added latency: non-streaming, engines answer at once"
	start_engines "${FAST_ENGINE[@]}" 1000000
	start_sidecar fast
	start_nginx fast
	start_refs fast
	local t prof=
	for t in direct sidecar nginx "${REFS[@]}"; do
		if [[ $t == sidecar ]] && ((HAS_DEBUG)); then
			# The live profile starts with the warm-up and covers the run.
			curl -fsS -o "$RAW/sidecar-cpu.pprof" --max-time 120 \
				"http://127.0.0.1:$DEBUG_PORT/debug/pprof/profile?seconds=${DURATION%s}" &
			prof=$!
			PIDS[profile]=$prof
		fi
		measure throughput "$t" --mode closed --concurrency "$CONC" --duration "$DURATION" --warmup "$WARMUP" --max-tokens 1
	done
	for t in direct sidecar nginx; do
		measure latency "$t" --mode open --rate "$RATE" --duration "$DURATION" --warmup "$WARMUP" --max-tokens 1
	done
	if [[ -n $prof ]]; then
		wait "$prof" || echo "bench: the live CPU profile failed" >&2
		unset 'PIDS[profile]'
	fi
	stop_all
}

# Streaming engines: a 20 ms prefill and 50 ms between tokens, 16 tokens,
# STREAMS streams open at all times.
phase_streams() {
	log "time to first token at $STREAMS concurrent streams"
	start_engines "${STREAM_ENGINE[@]}" 1000000
	start_sidecar streams
	start_nginx streams
	for t in direct sidecar nginx; do
		measure ttft "$t" --mode closed --concurrency "$STREAMS" --ramp 2s --duration "$DURATION" \
			--warmup "$WARMUP" --stream --max-tokens 16
	done
	stop_all
}

# open_streams: how many streams the engines are running now.
open_streams() {
	local n=0 i r
	for i in 0 1; do
		r=$(curl -fsS --max-time 2 "http://127.0.0.1:${ENGINE_PORTS[i]}/sim/stats" | sed -n 's/.*"running":\([0-9]*\).*/\1/p')
		n=$((n + ${r:-0}))
	done
	echo "$n"
}

# hold_streams TARGET RSSFN: open SLOW slow streams through TARGET, wait
# until the engines run them all, and set HOLD_RSS to RSSFN's largest of
# three samples a second apart and HOLD_OPEN to the streams seen open.
hold_streams() {
	local target=$1 rssfn=$2 hold=$((${RAMP%s} + 30)) open=0 peak=0 v
	start holder "$RAW/memory-$target.log" bin/blitzbench --url "$(target_url "$target")" --model "$MODEL" \
		--mode closed --concurrency "$SLOW" --ramp "$RAMP" --duration "${hold}s" --drain -1s --stream \
		--max-tokens 100000 --json "$RAW/memory-$target.json"
	for _ in $(seq $((hold * 10))); do
		open=$(open_streams)
		((open >= SLOW)) && break
		sleep 0.1
	done
	sleep 2
	for _ in 1 2 3; do
		v=$($rssfn)
		((v > peak)) && peak=$v
		sleep 1
	done
	HOLD_RSS=$peak
	HOLD_OPEN=$(open_streams)
	if [[ $target == sidecar ]] && ((HAS_DEBUG)); then
		# What the streams hold, by allocation site and by goroutine.
		curl -fsS -o "$RAW/sidecar-heap.pprof" --max-time 30 "http://127.0.0.1:$DEBUG_PORT/debug/pprof/heap" || true
		curl -fsS -o "$RAW/sidecar-goroutine.pprof" --max-time 30 "http://127.0.0.1:$DEBUG_PORT/debug/pprof/goroutine" || true
	fi
	stop holder # SIGTERM ends the run: its streams are cut, its JSON written
}

# Slow streams: one token a second, never finishing during the test.
phase_memory() {
	log "resident memory: idle and at $SLOW concurrent slow streams"
	start_engines "${SLOW_ENGINE[@]}" 1000000
	start_sidecar memory
	start_nginx memory
	start_refs memory
	# Idle: after one request each, so that lazily built state exists.
	local t
	for t in sidecar nginx "${REFS[@]}"; do
		bin/blitzbench --url "$(target_url "$t")" --model "$MODEL" --mode closed --concurrency 1 --duration 1s \
			--max-tokens 1 >/dev/null
	done
	sleep 2
	SIDECAR_IDLE=$(rss_kb "${PIDS[sidecar]}")
	NGINX_IDLE=$(nginx_rss_kb)
	NGINX_MASTER=$(rss_kb "${PIDS[nginx]}")
	local -A ref_idle=()
	for t in "${REFS[@]}"; do ref_idle[$t]=$(rss_kb "${PIDS[$t]}"); done
	hold_streams sidecar "rss_kb ${PIDS[sidecar]}"
	SIDECAR_LOADED=$HOLD_RSS SIDECAR_OPEN=$HOLD_OPEN
	hold_streams nginx nginx_rss_kb
	NGINX_LOADED=$HOLD_RSS NGINX_OPEN=$HOLD_OPEN
	for t in "${REFS[@]}"; do
		hold_streams "$t" "rss_kb ${PIDS[$t]}"
		REF_MEMORY+="\"$t\": {\"idle_kb\": ${ref_idle[$t]}, \"loaded_kb\": $HOLD_RSS, \"open\": $HOLD_OPEN}, "
	done
	stop_all
}

# Profiles of the proxy path from the sidecar's Go benchmarks: allocation
# and CPU sites of one request, without the load generator's noise.
profiles() {
	log "profiling the sidecar's proxy path (go test -bench BenchmarkProxy)"
	local p=$RAW/prof
	mkdir -p "$p"
	if ! $GO test -run '^$' -bench '^BenchmarkProxy' -benchmem -benchtime "$PROFTIME" -count 1 \
		-cpuprofile "$p/cpu.pprof" -memprofile "$p/mem.pprof" -o "$p/sidecar.test" ./sidecar >"$p/bench.txt" 2>&1; then
		echo "bench: the sidecar benchmark failed; see $p/bench.txt" >&2
		return 0
	fi
	# Only the sidecar's goroutines: its handler and its upstream transport.
	# The benchmark's fake engine (an httptest server: net/http's server
	# side) and its response recorder would otherwise take half the profile.
	local only=(-focus='sidecar\.\(\*Server\)|net/http\.\(\*persistConn\)|net/http\.\(\*Transport\)' -ignore='httptest\.')
	$GO tool pprof -top -nodecount 25 "${only[@]}" "$p/sidecar.test" "$p/cpu.pprof" >"$p/cpu-top.txt" 2>/dev/null || true
	$GO tool pprof -top -cum -nodecount 25 "${only[@]}" "$p/sidecar.test" "$p/cpu.pprof" >"$p/cpu-cum.txt" 2>/dev/null || true
	$GO tool pprof -top -sample_index=alloc_space -nodecount 20 "${only[@]}" "$p/sidecar.test" "$p/mem.pprof" >"$p/alloc-space.txt" 2>/dev/null || true
	$GO tool pprof -top -sample_index=alloc_objects -nodecount 20 "${only[@]}" "$p/sidecar.test" "$p/mem.pprof" >"$p/alloc-objects.txt" 2>/dev/null || true
	if [[ -s $RAW/sidecar-cpu.pprof ]]; then
		$GO tool pprof -top -nodecount 25 bin/blitzscale "$RAW/sidecar-cpu.pprof" >"$p/live-cpu-top.txt" 2>/dev/null || true
	fi
	if [[ -s $RAW/sidecar-heap.pprof ]]; then
		$GO tool pprof -top -sample_index=inuse_space -nodecount 20 bin/blitzscale "$RAW/sidecar-heap.pprof" >"$p/live-heap-top.txt" 2>/dev/null || true
	fi
	if [[ -s $RAW/sidecar-goroutine.pprof ]]; then
		# Cumulative counts name the goroutines each stream costs.
		$GO tool pprof -top -cum -nodecount 20 bin/blitzscale "$RAW/sidecar-goroutine.pprof" >"$p/live-goroutines.txt" 2>/dev/null || true
	fi
}

write_run_json() {
	local esc=${NOTE//\\/\\\\}
	esc=${esc//\"/\\\"}
	local nginxv
	nginxv=$(nginx -v 2>&1 | sed 's/^nginx version: //')
	cat >"$RAW/run.json" <<EOF
{
  "note": "$esc",
  "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "cpus": $CORES,
  "kernel": "$(uname -r)",
  "go": "$($GO env GOVERSION)",
  "nginx": "$nginxv",
  "nofile": $NOFILE,
  "clk_tck": $(getconf CLK_TCK),
  "cpu_ticks": {${CPU_TICKS%, }},
  "quick": ${BENCH_QUICK:-0},
  "sidecar_log_lines": $(cat "$RAW"/sidecar-*.log | wc -l),
  "engines": {
    "throughput": "TTFT ${FAST_ENGINE[0]}, ITL ${FAST_ENGINE[1]} (answers at once)",
    "latency": "TTFT ${FAST_ENGINE[0]}, ITL ${FAST_ENGINE[1]} (answers at once)",
    "ttft": "TTFT ${STREAM_ENGINE[0]}, ITL ${STREAM_ENGINE[1]}",
    "memory": "TTFT ${SLOW_ENGINE[0]}, ITL ${SLOW_ENGINE[1]}"
  },
  "memory": {
    "streams": $SLOW,
    "streams_wanted": $SLOW_WANTED,
    "sidecar": {"idle_kb": $SIDECAR_IDLE, "loaded_kb": $SIDECAR_LOADED, "open": $SIDECAR_OPEN},
    "nginx": {"idle_kb": $NGINX_IDLE, "loaded_kb": $NGINX_LOADED, "open": $NGINX_OPEN, "master_kb": $NGINX_MASTER, "workers": $CORES},
    "refs": {${REF_MEMORY%, }}
  }
}
EOF
}

main() {
	local t0=$SECONDS
	ensure_nginx
	build
	raise_nofile
	mkdir -p "$RAW"
	rm -rf "${RAW:?}"/*
	phase_fast
	phase_streams
	phase_memory
	profiles
	write_run_json
	log "report"
	"$TMP/proxyreport" --in "$RAW" --out "$OUT"
	echo "bench: done in $((SECONDS - t0))s; report in ${OUT#"$ROOT"/}/report.md" >&2
}

main "$@"
