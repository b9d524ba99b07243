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

# listening, pick_port, await_listen, settle, stop_server, val
. "$(dirname "$0")/bench-lib.sh"

# Starts the gateway on a free port with max_connections $1: sets $pid and
# $port. (CivetWeb starts one worker per allowed connection, so each
# scenario allows what it needs: idle exactly its mods, the others 256.)
# With $2, queues go to the SQLite file $2 (a fresh one), up to 1 GB;
# without, they stay in memory.
start_gw() {
	store="path ="
	qbytes=64
	if [ -n "$2" ]; then
		rm -f "$2" "$2-wal" "$2-shm" "$2-journal"
		store="path = $2
sync = normal"
		qbytes=1024
	fi
	tries=0
	while [ $tries -lt 10 ]; do
		tries=$((tries + 1))
		pick_port
		mkdir -p "$dir/logs"
		cat >"$dir/gateway.ini" <<EOF
[gateway]
listen = 127.0.0.1
http_port = $port
api_key = $HOMESTEAD_KEY
max_connections = $1
queue_max = 100000
queue_bytes_max = $qbytes

[store]
$store

[log]
level = warn
directory = $dir/logs
EOF
		"$gw" -c "$dir/gateway.ini" >"$dir/gateway.out" 2>&1 &
		pid=$!
		await_listen && return 0
	done
	echo "bench.sh: the gateway did not start; its output:" >&2
	cat "$dir/gateway.out" >&2
	return 1
}

args_of() {
	if [ "$quick" = 1 ]; then
		case $1 in
		flood) echo "--mods 16 --channels 16 --window 32 --size 100 --count 3000" ;;
		rate) echo "--mods 16 --rate 2000 --duration 1" ;;
		fanout) echo "--mods 50 --window 32 --count 200" ;;
		idle) echo "--mods $idle_mods --sample 1" ;;
		churn) echo "--duration ${BENCH_CHURN_SECS:-2}" ;;
		big) echo "--mods 4 --window 4 --size 1048576 --count 16" ;;
		queue) echo "--mods 16 --channels 16 --window 32 --size 100 --count 2000" ;;
		esac
	else
		case $1 in
		flood) echo "--mods 16 --channels 16 --window 32 --size 100 --duration 5" ;;
		rate) echo "--mods 16 --rate 14000 --duration 5" ;;
		fanout) echo "--mods 50 --window 32 --size 100 --duration 5" ;;
		idle) echo "--mods $idle_mods --sample 5" ;;
		churn) echo "--duration ${BENCH_CHURN_SECS:-60}" ;;
		big) echo "--mods 4 --window 4 --size 1048576 --duration 5" ;;
		queue) echo "--mods 16 --channels 16 --window 32 --size 100 --count 50000" ;;
		esac
	fi
}

results=$dir/results
: >"$results"
failed=0
runs=${BENCH_RUNS:-1}
echo "homestead-bench: $(nproc) CPUs, $(uname -sr); quick=$quick runs=$runs"
for sc in $only; do
	: >"$dir/runs"
	bad=
	r=0
	while [ $r -lt "$runs" ]; do
		r=$((r + 1))
		maxc=256
		db=
		[ "$sc" = idle ] && maxc=$idle_mods
		[ "$sc" = queue ] && db=$dir/queue.db
		start_gw "$maxc" "$db" || exit 1
		echo "+ homestead-bench $sc $(args_of "$sc")"
		# shellcheck disable=SC2046
		line=$(timeout 180 "$bench" "$sc" --port "$port" --pid "$pid" $(args_of "$sc"))
		rc=$?
		stop_server
		echo "$line"
		if [ $rc -ne 0 ]; then
			failed=1
			bad="no (exit $rc)"
			echo "bench.sh: $sc failed (exit $rc)" >&2
		fi
		# the figure the median is taken on, then what the table shows
		case $sc in
		flood) key=$(val rate); fig="$(val rate) msg/s" ;;
		rate) key=$(val p99_us); fig="p50 $(val p50_us) us, p99 $(val p99_us) us, max $(val max_us) us at $(val achieved)/s" ;;
		fanout) key=$(val rate); fig="$(val rate) deliveries/s" ;;
		idle) key=$(val up_secs); fig="$(val up)/$(val mods) up in $(val up_secs) s, RSS $(val gw_rss_mb) MB, CPU $(val gw_cpu) idle" ;;
		churn) key=$(val rate); fig="$(val rate)/s, $(val failed) failed, threads $(val gw_threads_start)->$(val gw_threads), RSS $(val gw_rss_start_mb)->$(val gw_rss_mb) MB" ;;
		big) key=$(val mb_per_s); fig="$(val mb_per_s) MB/s" ;;
		queue) key=$(val rate); fig="$(val rate) msg/s queued (sync=normal), drained at $(val drain_rate) msg/s" ;;
		esac
		ok=$(val delivered_ok)
		[ -n "$ok" ] || ok=$(val all_up)
		[ -n "$ok" ] || ok=$(val all_ok)
		printf '%s|%s|%s|%s|%s|%s|%s|%s\n' "${key:-0}" "$sc" "$fig" "${ok:-no}" \
			"$(val bench_cpu)" "$(val gw_cpu)" "${cpu:-?}" "${hwm:-?}" >>"$dir/runs"
	done
	# the median run by its figure (the middle one of the sorted runs)
	sort -t'|' -k1,1g "$dir/runs" | sed -n "$(((runs + 1) / 2))p" | cut -d'|' -f2- |
		awk -F'|' -v bad="$bad" 'BEGIN { OFS = "|" } { if (bad != "") $3 = bad; print }' \
		>>"$results"
done

echo
[ "$runs" -gt 1 ] && echo "(median of $runs runs, each on a fresh gateway)"
awk -F'|' 'BEGIN { printf "%-8s %-66s %-4s %-6s %-7s %-9s %s\n", "scenario", "figure", "ok", \
	"bench", "gw CPU", "gw CPU s", "gw peak RSS MB" }
	{ printf "%-8s %-66s %-4s %-6s %-7s %-9s %s\n", $1, $2, $3, $4, $5, $6, $7 }' "$results"
exit $failed
