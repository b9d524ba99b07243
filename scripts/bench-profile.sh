#!/bin/sh
# Profiles the gateway under one homestead-bench scenario: what it costs per
# delivered message. Two runs, each on a fresh gateway:
#   1. perf stat on the gateway's threads: CPU time, syscalls (in all and the
#      four that matter: sendto, recvfrom, poll, futex), context switches
#      and wake-ups it performs, each divided by the messages the bench
#      delivered;
#   2. perf record -g (frame pointers; PROFILE_CG="--call-graph dwarf" for
#      callers in the gateway's own code) and the top symbols, self time.
# The perf data and reports stay in the printed folder.
#
# Usage: scripts/bench-profile.sh SCENARIO [BUILD_DIR] [-- BENCH_ARGS...]
#   SCENARIO: tflood, trate (or any traffic scenario of homestead-bench)
#   BENCH_ARGS default to scripts/bench-lib.sh's (make bench's) for it.
# Environment: PROFILE_HISTORY=N (the gateway's history), PROFILE_CG,
#   PROFILE_FREQ (samples/s, default 1999), PROFILE_TOP (symbols, default 25).
# Needs perf (Debian: linux-perf) and root, or perf_event_paranoid <= 1.
sc=${1:?usage: scripts/bench-profile.sh SCENARIO [BUILD_DIR] [-- BENCH_ARGS...]}
shift
build=build
if [ $# -gt 0 ] && [ "$1" != -- ]; then
	build=$1
	shift
fi
[ "$1" = -- ] && shift
gw=$build/homestead-gateway
bench=$build/homestead-bench
quick=0
for b in "$gw" "$bench"; do
	[ -x "$b" ] || { echo "bench-profile.sh: $b is missing: run make first" >&2; exit 2; }
done
command -v perf >/dev/null 2>&1 ||
	{ echo "bench-profile.sh: perf is missing (Debian: apt-get install linux-perf)" >&2; exit 2; }

# pick_port, await_listen, write_gw_ini, args_of, stop_server, val
. "$(dirname "$0")/bench-lib.sh"
if [ $# -gt 0 ]; then
	args="$*"
else
	args=$(args_of "$sc")
	[ -n "$args" ] || { echo "bench-profile.sh: no default arguments for '$sc'" >&2; exit 2; }
	sc=$(bench_sc_of "$sc")
fi

dir=$(mktemp -d /tmp/homestead-profile.XXXXXX) || exit 2
pid=
cleanup() { [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null; }
trap cleanup EXIT
trap 'exit 130' INT TERM
HOMESTEAD_KEY=bench-$(od -An -N8 -tx8 /dev/urandom | tr -d ' \n')
export HOMESTEAD_KEY

start() {
	pick_port
	write_gw_ini 256 "" "${PROFILE_HISTORY:-}"
	"$gw" -c "$dir/gateway.ini" >"$dir/gateway.out" 2>&1 &
	pid=$!
	await_listen || { echo "bench-profile.sh: the gateway did not start" >&2; exit 1; }
}

# $1: the perf command's own arguments; runs the bench under it, sets $line.
profiled() {
	# shellcheck disable=SC2086
	perf $1 -p "$pid" 2>"$dir/perf.err" &
	pp=$!
	sleep 0.5
	# shellcheck disable=SC2086
	line=$(timeout 180 "$bench" "$sc" --port "$port" --pid "$pid" $args)
	echo "$line"
	kill -INT "$pp"
	wait "$pp"
	stop_server
}

echo "bench-profile: $sc $args; load average $(cut -d' ' -f1-3 /proc/loadavg)"
events=task-clock,context-switches,raw_syscalls:sys_enter,syscalls:sys_enter_sendto
events=$events,syscalls:sys_enter_recvfrom,syscalls:sys_enter_poll,syscalls:sys_enter_futex
events=$events,sched:sched_wakeup
start
profiled "stat -x, -o $dir/stat.csv -e $events"
msgs=$(val msgs)
[ "$sc" = fanout ] && msgs=$(val deliveries)
echo "per delivered message ($msgs messages; perf stat over the whole run, set-up included):"
awk -F, -v n="$msgs" '$3 != "" && $1 ~ /^[0-9.]+$/ {
	v = $1 / n; name = $3
	if (name == "task-clock") printf "  %-28s %8.2f us\n", "CPU (task-clock)", v * 1000
	else printf "  %-28s %8.3f\n", name, v }' "$dir/stat.csv"

start
profiled "record -q ${PROFILE_CG:--g} -F ${PROFILE_FREQ:-1999} -o $dir/perf.data"
perf report -i "$dir/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null |
	grep '%' | head -n 5 >"$dir/dso.txt"
perf report -i "$dir/perf.data" --no-children --sort sym --stdio -g none 2>/dev/null |
	grep '%' | head -n "${PROFILE_TOP:-25}" >"$dir/top.txt"
echo "share of the gateway's samples by object:"
cat "$dir/dso.txt"
echo "top symbols (self):"
cat "$dir/top.txt"
echo "perf data and reports: $dir (perf report -i $dir/perf.data)"
