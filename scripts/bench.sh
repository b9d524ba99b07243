#!/bin/sh
# Runs the standard homestead-bench set (the performance issue's six
# scenarios, queue: the durable store, and tflood/trate: flood and rate with
# clients shaped like real mods, a thread and a blocking socket each)
# against a real gateway on a loopback port and prints a table.
# Each scenario gets a fresh gateway, so its peak RSS (VmHWM) and CPU time
# (utime+stime) are that scenario's alone.
#
# Usage: scripts/bench.sh [BUILD_DIR]          (make bench)
# Environment:
#   BENCH_QUICK=1         small counts (a few seconds in all), for a smoke run
#   BENCH_ONLY="flood rate"   run only these scenarios, of: flood rate fanout
#                         idle churn big queue tflood trate history held
#                         (history: tflood on a gateway with history = 1000
#                         and on one with 0, then the RSS a tflood of 64 mods
#                         leaves with each, from which the bytes per 1,000
#                         retained messages; on and off alternate within a
#                         round, in turns, so drift in the machine's load
#                         falls on both)
#                         (held: trate on one gateway without and with
#                         10,000 idle handshaken mods held open by a second
#                         homestead-bench (idle --sample 0), in turns within
#                         each round as history; then the median of the
#                         rounds' p99 with / p99 without)
#   BENCH_CHURN_SECS=N    churn duration (default 60; quick: 2)
#   BENCH_RUNS=N          run each scenario N times, show the median run (by
#                         msg/s, p99, deliveries/s, bring-up time, cycles/s, MB/s,
#                         queued msg/s)
#   BENCH_KEEP=1          keep the temp folder (config, gateway logs)
#   BENCH_HISTORY=N       the gateway's history (kept messages per stream; 0 = off;
#                         history sets its own)
# Columns: bench = homestead-bench's own CPU (% of one core) while measuring;
# gw CPU = the gateway's CPU (% of one core) over the same span; gw CPU s and
# gw peak RSS = the gateway's utime+stime and VmHWM over its whole life
# (start-up included; CivetWeb starts its worker threads on demand).
build=${1:-build}
gw=$build/homestead-gateway
bench=$build/homestead-bench
quick=${BENCH_QUICK:-0}
only=${BENCH_ONLY:-"flood rate fanout idle churn big queue tflood trate history held"}

for b in "$gw" "$bench"; do
	[ -x "$b" ] || { echo "bench.sh: $b is missing: run make first" >&2; exit 2; }
done

dir=$(mktemp -d /tmp/homestead-bench.XXXXXX) || exit 2
pid=
holder=
cleanup() {
	[ -n "$holder" ] && kill -KILL "$holder" 2>/dev/null
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	[ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A fresh random key, given to the bench through the environment.
HOMESTEAD_KEY=bench-$(od -An -N8 -tx8 /dev/urandom | tr -d ' \n')
export HOMESTEAD_KEY

# idle and held hold 10,000 sockets in the bench and as many in the gateway.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -H -n)" 2>/dev/null
nofile=$(ulimit -n)
idle_mods=10000
if [ "$quick" = 1 ]; then
	idle_mods=200
elif [ "$nofile" != unlimited ] && [ "$nofile" -lt 10200 ]; then
	idle_mods=$((nofile - 200))
	echo "bench.sh: only $nofile file descriptors: idle and held hold $idle_mods mods" >&2
fi

# pick_port, await_listen, write_gw_ini, args_of, run_scenario, add_median
. "$(dirname "$0")/bench-lib.sh"

# Starts the gateway on a free port with max_connections $1: sets $pid and
# $port. (Each scenario allows what it needs: idle exactly its mods, the
# others 256; CivetWeb starts a worker per connection as they come.)
# With $2, queues go to the SQLite file $2 (a fresh one), up to 1 GB;
# without, they stay in memory. $3: its history, if not the default.
start_gw() {
	tries=0
	while [ $tries -lt 10 ]; do
		tries=$((tries + 1))
		pick_port
		write_gw_ini "$1" "$2" "$3"
		"$gw" -c "$dir/gateway.ini" >"$dir/gateway.out" 2>&1 &
		pid=$!
		await_listen && return 0
	done
	echo "bench.sh: the gateway did not start; its output:" >&2
	cat "$dir/gateway.out" >&2
	return 1
}

# held: a second homestead-bench holds $1 idle handshaken mods on the
# gateway ($holder) until release_mods. 0 once all are up, 1 if not.
hold_mods() {
	"$bench" idle --port "$port" --mods "$1" --sample 0 --prefix "hbheld$$" -v \
		>"$dir/held.out" 2>"$dir/held.err" &
	holder=$!
	i=0
	while ! grep -q ' mods up, ' "$dir/held.err"; do
		i=$((i + 1))
		kill -0 "$holder" 2>/dev/null && [ $i -lt 1200 ] || return 1
		sleep 0.05
	done
	grep -q ' mods up, 0 failed' "$dir/held.err"
}

# Ends the holder and waits (60 s at most) until the gateway has let go of
# every connection: the next run starts on an empty gateway. 0, or 1 if the
# holder did not hold them all.
release_mods() {
	kill -TERM "$holder" 2>/dev/null
	wait "$holder"
	hrc=$?
	holder=
	hex=$(printf '%04X' "$port")
	i=0
	while [ $i -lt 600 ] && awk -v p=":$hex" '$4 != "0A" && $4 != "06" &&
		substr($2, length($2) - 4) == p { f = 1 } END { exit !f }' /proc/net/tcp; do
		sleep 0.1
		i=$((i + 1))
	done
	cat "$dir/held.out"
	[ $hrc = 0 ]
}

# history's messages kept: 64 channels, each its last 1000 (quick: 200 each)
hist_kept=64000
[ "$quick" = 1 ] && hist_kept=12800

results=$dir/results
: >"$results"
: >"$dir/keys"
failed=0
runs=${BENCH_RUNS:-1}
echo "homestead-bench: $(nproc) CPUs, $(uname -sr); quick=$quick runs=$runs;" \
	"load average $(cut -d' ' -f1-3 /proc/loadavg)"
: >"$dir/runs"
: >"$dir/pairs"
for row in tflood-h1000 tflood-h0 history-h1000 history-h0 held-0 "held-$idle_mods"; do
	: >"$dir/runs-$row"
done
bad=
for sc in $only; do
	r=0
	while [ $r -lt "$runs" ]; do
		r=$((r + 1))
		maxc=256
		db=
		[ "$sc" = idle ] && maxc=$idle_mods
		[ "$sc" = queue ] && db=$dir/queue.db
		case $sc in
		history)   # on and off in turns: 1000 first in odd rounds, 0 in even
			order="1000 0"
			[ $((r % 2)) = 0 ] && order="0 1000"
			for row in tflood history; do
				for h in $order; do
					start_gw "$maxc" "" "$h" || exit 1
					hist_note="history = $h"
					runs_file=$dir/runs-$row-h$h
					run_scenario "$row-h$h" "$row-h$h"
					eval "k$h=\${key:-0} u$h=\$(val gw_us_per_msg)"
				done
				# this round's pair: on/off rates and CPU/msg; or RSS
				echo "$row $k1000 $k0 ${u1000:-0} ${u0:-0}" >>"$dir/pairs"
			done
			runs_file= hist_note=
			;;
		held)   # without and with in turns, on one gateway with room for both
			order="0 $idle_mods"
			[ $((r % 2)) = 0 ] && order="$idle_mods 0"
			start_gw $((idle_mods + 64)) || exit 1
			keep_gw=1
			for h in $order; do
				runs_file=$dir/runs-held-$h
				if [ "$h" != 0 ] && ! hold_mods "$h"; then
					echo "bench.sh: the holder did not bring up $h mods" >&2
					failed=1
					bad="no (holder)"
				fi
				hist_note="with $h mods held by homestead-bench idle --mods $h --sample 0"
				[ "$h" = 0 ] && hist_note="without held mods"
				run_scenario "held-$h" "held-$h"
				eval "p$h=\${key:-0}"
				if [ "$h" != 0 ] && ! release_mods; then
					failed=1
					bad="no (holder)"
				fi
			done
			keep_gw= runs_file= hist_note=
			stop_server
			eval "echo \"held \$p$idle_mods \$p0\"" >>"$dir/pairs"
			;;
		*)
			start_gw "$maxc" "$db" || exit 1
			run_scenario "$sc" "$sc"
			;;
		esac
	done
	if [ "$sc" = history ] || [ "$sc" = held ]; then
		rows="tflood-h1000 tflood-h0 history-h1000 history-h0"
		[ "$sc" = held ] && rows="held-0 held-$idle_mods"
		for row in $rows; do
			runs_file=$dir/runs-$row
			add_median "$runs"
		done
		runs_file=
	else
		add_median "$runs"
	fi
done

echo
[ "$runs" -gt 1 ] && echo "(median of $runs runs, each on a fresh gateway)"
awk -F'|' 'BEGIN { printf "%-13s %-66s %-4s %-6s %-7s %-9s %s\n", "scenario", "figure", "ok", \
	"bench", "gw CPU", "gw CPU s", "gw peak RSS MB" }
	{ printf "%-13s %-66s %-4s %-6s %-7s %-9s %s\n", $1, $2, $3, $4, $5, $6, $7 }' "$results"

# History's cost, from each round's pair (on and off run next to each other):
# the median of the rounds' rate ratios and CPU/msg differences, and of the
# RSS differences, per 1,000 messages kept.
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'; }
if [ -s "$dir/pairs" ]; then
	n=$(awk '$1 == "tflood"' "$dir/pairs" | wc -l)
	ratio=$(awk '$1 == "tflood" && $3 > 0 { print $2 / $3 }' "$dir/pairs" | median)
	dus=$(awk '$1 == "tflood" { print $4 - $5 }' "$dir/pairs" | median)
	drss=$(awk '$1 == "history" { print $2 - $3 }' "$dir/pairs" | median)
	[ -n "$ratio" ] && printf 'history: tflood with history = 1000 / with 0: %.2fx the rate, %+.2f us CPU/msg (median of %d paired rounds)\n' \
		"$ratio" "$dus" "$n"
	n=$(awk '$1 == "held"' "$dir/pairs" | wc -l)
	hratio=$(awk '$1 == "held" && $3 > 0 { print $2 / $3 }' "$dir/pairs" | median)
	[ -n "$hratio" ] && printf 'held: trate p99 with %d held mods / without: %.2fx (median of %d paired rounds)\n' \
		"$idle_mods" "$hratio" "$n"
	[ -n "$drss" ] && awk -v d="$drss" -v n="$hist_kept" 'BEGIN {
		printf "history: %.0f bytes of RSS per 1,000 retained messages (100-byte content, " \
			"353-byte frames; RSS with history = 1000 - with 0, %d kept, median of rounds)\n",
			d * 1048576 / (n / 1000), n }'
fi
exit $failed
