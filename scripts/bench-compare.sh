#!/bin/sh
# Runs homestead-bench's flood, tflood, trate, fanout, big and idle scenarios
# against HomesteadGateway and against the benchmark references in
# scripts/bench-ref (Go with gorilla/websocket, Node with ws: the same /sync
# subset, in memory, no queues; and relay, a bare one-thread epoll relay in C
# that forwards frames verbatim with fixed acks: the ceiling) and prints one
# table, then the C gateway's ratios to Go's on tflood and trate. Each scenario gets a fresh server
# process on a fresh loopback port, so its peak RSS (VmHWM) and CPU time are
# that scenario's alone; the figures are read from /proc/PID of the server
# process itself (the gateway binary, the Go binary, node), never of a
# wrapper. With BENCH_RUNS=N the servers take turns within each of the N
# rounds (homestead, go, node, homestead, go, ...), so a noisy minute on a
# shared machine falls on all of them rather than on one.
#
# The references' toolchains come from Debian packages only, installed here
# with apt-get when missing (golang-go, golang-github-gorilla-websocket-dev,
# nodejs, node-ws); the Go one is built offline (GOPATH mode, no module
# download) into BUILD_DIR/ref.
#
# Usage: scripts/bench-compare.sh [BUILD_DIR]          (make bench-compare)
# Environment:
#   BENCH_QUICK=1         small counts (a few seconds each), for a smoke run
#   BENCH_RUNS=N          run each scenario N times per server, show the median
#                         run (by msg/s, deliveries/s, MB/s, bring-up time)
#   BENCH_ONLY="flood big"        only these scenarios (flood tflood trate fanout
#                                 big idle)
#   BENCH_SERVERS="homestead go"  only these servers (homestead go node relay)
#   BENCH_IDLE_MODS=N     mods idle holds (default 2000; quick: 200)
#   BENCH_KEEP=1          keep the temp folder (config, server output)
# Columns: as scripts/bench.sh: bench = homestead-bench's own CPU (% of one
# core) while measuring; CPU = the server's CPU (% of one core) over the same
# span; CPU s and peak RSS = the server's utime+stime and VmHWM over its whole
# life (start-up included).
build=${1:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
gw=$build/homestead-gateway
bench=$build/homestead-bench
quick=${BENCH_QUICK:-0}
only=${BENCH_ONLY:-"flood tflood trate fanout big idle"}
servers=${BENCH_SERVERS:-"homestead go node relay"}
runs=${BENCH_RUNS:-1}
refnode=$top/scripts/bench-ref/node/gateway.js
gocode=/usr/share/gocode
nodelib=/usr/share/nodejs

for b in "$gw" "$bench"; do
	[ -x "$b" ] || { echo "bench-compare.sh: $b is missing: run make first" >&2; exit 2; }
done

# pick_port, await_listen, write_gw_ini, args_of, run_scenario, add_median
. "$top/scripts/bench-lib.sh"

# ---- the references' toolchains (Debian packages) and the Go build ----------

need=
command -v go >/dev/null 2>&1 || need="$need golang-go"
[ -f "$gocode/src/github.com/gorilla/websocket/conn.go" ] ||
	need="$need golang-github-gorilla-websocket-dev"
command -v node >/dev/null 2>&1 || need="$need nodejs"
[ -f "$nodelib/ws/package.json" ] || need="$need node-ws"
if [ -n "$need" ]; then
	echo "bench-compare.sh: installing$need"
	if [ "$(id -u)" != 0 ]; then
		echo "bench-compare.sh: not root: run apt-get install$need first" >&2
		exit 2
	fi
	export DEBIAN_FRONTEND=noninteractive
	# shellcheck disable=SC2086
	if ! apt-get update -qq || ! apt-get install -y -qq --no-install-recommends $need >/dev/null
	then
		echo "bench-compare.sh: apt-get install$need failed" >&2
		exit 2
	fi
fi

# GOPATH mode against Debian's sources: nothing is fetched.
mkdir -p "$build/ref"
refdir=$(cd "$build/ref" && pwd)
refgo=$refdir/gateway-go
(cd "$top/scripts/bench-ref/go" && GO111MODULE=off GOPATH=$gocode GOCACHE=$refdir/gocache GOFLAGS='' \
	GOPROXY=off GOTOOLCHAIN=local go build -o "$refgo" .) ||
	{ echo "bench-compare.sh: building the Go reference failed" >&2; exit 2; }
refrelay=$refdir/relay
${CC:-cc} -std=c11 -O2 -Wall -Wextra -D_GNU_SOURCE -I"$top/src/tools" -o "$refrelay" \
	"$top/scripts/bench-ref/relay/relay.c" "$top/src/tools/wsc.c" ||
	{ echo "bench-compare.sh: building the relay reference failed" >&2; exit 2; }

dir=$(mktemp -d /tmp/homestead-compare.XXXXXX) || exit 2
pid=
cleanup() {
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	[ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A fresh random key, given to the servers and the bench through the environment.
HOMESTEAD_KEY=bench-$(od -An -N8 -tx8 /dev/urandom | tr -d ' \n')
export HOMESTEAD_KEY

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -H -n)" 2>/dev/null
idle_mods=${BENCH_IDLE_MODS:-2000}
[ "$quick" = 1 ] && idle_mods=${BENCH_IDLE_MODS:-200}

# Starts server $1 (homestead, go, node, relay) for scenario $2 on a free port: sets
# $pid and $port. Each server is a simple command run in the background, so
# $! is the server process itself, not a shell.
start_server() {
	maxc=256
	[ "$2" = idle ] && maxc=$idle_mods
	tries=0
	while [ $tries -lt 10 ]; do
		tries=$((tries + 1))
		pick_port
		case $1 in
		homestead)
			write_gw_ini "$maxc"   # as scripts/bench.sh, queues in memory
			"$gw" -c "$dir/gateway.ini" >"$dir/server.out" 2>&1 &
			;;
		go)
			"$refgo" --port "$port" >"$dir/server.out" 2>&1 &
			;;
		node)
			NODE_PATH=$nodelib node "$refnode" --port "$port" >"$dir/server.out" 2>&1 &
			;;
		relay)
			"$refrelay" --port "$port" >"$dir/server.out" 2>&1 &
			;;
		*)
			echo "bench-compare.sh: unknown server '$1' (homestead, go, node, relay)" >&2
			return 1
			;;
		esac
		pid=$!
		await_listen && return 0
	done
	echo "bench-compare.sh: $1 did not start; its output:" >&2
	cat "$dir/server.out" >&2
	return 1
}

results=$dir/results
: >"$results"
: >"$dir/keys"
failed=0
echo "homestead-bench compare: $(nproc) CPUs, $(uname -sr); quick=$quick runs=$runs;" \
	"load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "  go $(go env GOVERSION), gorilla/websocket" \
	"$(dpkg-query -W -f='${Version}' golang-github-gorilla-websocket-dev 2>/dev/null);" \
	"node $(node --version), ws $(sed -n 's/^ *"version": *"\(.*\)".*/\1/p' "$nodelib/ws/package.json")"
: >"$dir/runs"
bad=
for sc in $only; do
	r=0
	while [ $r -lt "$runs" ]; do   # the servers take turns within a round
		r=$((r + 1))
		for srv in $servers; do
			tag="[$srv] "
			runs_file=$dir/runs-$srv
			start_server "$srv" "$sc" || exit 1
			run_scenario "$sc" "$sc|$srv"
		done
	done
	for srv in $servers; do
		runs_file=$dir/runs-$srv
		add_median "$runs"
	done
	runs_file=
done

echo
[ "$runs" -gt 1 ] && echo "(median of $runs runs, each on a fresh server process)"
awk -F'|' 'BEGIN { printf "%-8s %-9s %-78s %-4s %-6s %-7s %-7s %s\n", "scenario", "server", \
	"figure", "ok", "bench", "CPU", "CPU s", "peak RSS MB" }
	{ printf "%-8s %-9s %-78s %-4s %-6s %-7s %-7s %s\n", $1, $2, $3, $4, $5, $6, $7, $8 }' \
	"$results"

# The issue's targets for the thread-shaped clients, from this run's medians.
a=$(key_of "tflood|homestead") b=$(key_of "tflood|go")
if [ -n "$a" ] && [ -n "$b" ] && [ "$b" != 0 ]; then
	awk -v a="$a" -v b="$b" 'BEGIN { printf "tflood: homestead %.0f msg/s / go %.0f = %.2fx " \
		"(target >= 2.5x)\n", a, b, a / b }'
fi
a=$(key_of "trate|homestead") b=$(key_of "trate|go")
if [ -n "$a" ] && [ -n "$b" ] && [ "$b" != 0 ]; then
	awk -v a="$a" -v b="$b" 'BEGIN { printf "trate p99: homestead %.0f us, go %.0f us = %.2fx " \
		"(target < 1)\n", a, b, a / b }'
fi
# CPU per delivered message against the bare relay's: how far above the
# ceiling this protocol's shape leaves on this machine the gateway is.
cpu_of() {   # scenario server: the figure's "gw N us CPU/msg"
	awk -F'|' -v sc="$1" -v sv="$2" '$1 == sc && $2 == sv &&
		match($3, /gw [0-9.]+ us CPU/) { print substr($3, RSTART + 3, RLENGTH - 10) }' "$results"
}
for sc in tflood trate; do
	a=$(cpu_of "$sc" homestead) b=$(cpu_of "$sc" relay)
	if [ -n "$a" ] && [ -n "$b" ] && [ "$b" != 0.00 ]; then
		awk -v sc="$sc" -v a="$a" -v b="$b" 'BEGIN { printf "%s CPU per message: homestead " \
			"%.2f us, relay %.2f us = %.2fx the bare relay\n", sc, a, b, a / b }'
	fi
done
exit $failed
