#!/bin/sh
# Runs the standard homestead-bench set (the performance issue's six
# scenarios, and queue: the durable store) against a real gateway on a
# loopback port and prints a table.
# Each scenario gets a fresh gateway, so its peak RSS (VmHWM) and CPU time
# (utime+stime) are that scenario's alone.
#
# Usage: scripts/bench.sh [BUILD_DIR]          (make bench)
# Environment:
#   BENCH_QUICK=1         small counts (a few seconds in all), for a smoke run
#   BENCH_ONLY="flood rate"   run only these scenarios
#   BENCH_CHURN_SECS=N    churn duration (default 60; quick: 2)
#   BENCH_RUNS=N          run each scenario N times, show the median run (by
#                         msg/s, p99, deliveries/s, bring-up time, cycles/s, MB/s,
#                         queued msg/s)
#   BENCH_KEEP=1          keep the temp folder (config, gateway logs)
#   BENCH_HISTORY=N       the gateway's history (kept messages per stream; 0 = off)
# Columns: bench = homestead-bench's own CPU (% of one core) while measuring;
# gw CPU = the gateway's CPU (% of one core) over the same span; gw CPU s and
# gw peak RSS = the gateway's utime+stime and VmHWM over its whole life
# (start-up included: CivetWeb starts max_connections worker threads).
build=${1:-build}
gw=$build/homestead-gateway
bench=$build/homestead-bench
quick=${BENCH_QUICK:-0}
only=${BENCH_ONLY:-"flood rate fanout idle churn big queue"}

for b in "$gw" "$bench"; do
	[ -x "$b" ] || { echo "bench.sh: $b is missing: run make first" >&2; exit 2; }
done

dir=$(mktemp -d /tmp/homestead-bench.XXXXXX) || exit 2
pid=
cleanup() {
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	[ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A fresh random key, given to the bench through the environment.
HOMESTEAD_KEY=bench-$(od -An -N8 -tx8 /dev/urandom | tr -d ' \n')
export HOMESTEAD_KEY

# idle holds 10,000 sockets in the bench and as many in the gateway.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -H -n)" 2>/dev/null
nofile=$(ulimit -n)
idle_mods=10000
if [ "$quick" = 1 ]; then
	idle_mods=200
elif [ "$nofile" != unlimited ] && [ "$nofile" -lt 10200 ]; then
	idle_mods=$((nofile - 200))
	echo "bench.sh: only $nofile file descriptors: idle holds $idle_mods mods" >&2
fi

# pick_port, await_listen, write_gw_ini, args_of, run_scenario, add_median
. "$(dirname "$0")/bench-lib.sh"

# Starts the gateway on a free port with max_connections $1: sets $pid and
# $port. (CivetWeb starts one worker per allowed connection, so each
# scenario allows what it needs: idle exactly its mods, the others 256.)
# With $2, queues go to the SQLite file $2 (a fresh one), up to 1 GB;
# without, they stay in memory.
start_gw() {
	tries=0
	while [ $tries -lt 10 ]; do
		tries=$((tries + 1))
		pick_port
		write_gw_ini "$1" "$2"
		"$gw" -c "$dir/gateway.ini" >"$dir/gateway.out" 2>&1 &
		pid=$!
		await_listen && return 0
	done
	echo "bench.sh: the gateway did not start; its output:" >&2
	cat "$dir/gateway.out" >&2
	return 1
}

results=$dir/results
: >"$results"
failed=0
runs=${BENCH_RUNS:-1}
echo "homestead-bench: $(nproc) CPUs, $(uname -sr); quick=$quick runs=$runs"
: >"$dir/runs"
bad=
for sc in $only; do
	r=0
	while [ $r -lt "$runs" ]; do
		r=$((r + 1))
		maxc=256
		db=
		[ "$sc" = idle ] && maxc=$idle_mods
		[ "$sc" = queue ] && db=$dir/queue.db
		start_gw "$maxc" "$db" || exit 1
		run_scenario "$sc" "$sc"
	done
	add_median "$runs"
done

echo
[ "$runs" -gt 1 ] && echo "(median of $runs runs, each on a fresh gateway)"
awk -F'|' 'BEGIN { printf "%-8s %-66s %-4s %-6s %-7s %-9s %s\n", "scenario", "figure", "ok", \
	"bench", "gw CPU", "gw CPU s", "gw peak RSS MB" }
	{ printf "%-8s %-66s %-4s %-6s %-7s %-9s %s\n", $1, $2, $3, $4, $5, $6, $7 }' "$results"
exit $failed
