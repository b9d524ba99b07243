# Shell helpers shared by scripts/bench.sh and scripts/bench-compare.sh
# (sourced, POSIX sh). They work on the server under test through two
# globals: $pid (its process) and $port; the runs use the script's $bench,
# $dir, $quick, $idle_mods and $tag (a prefix for the command echoed).

hz=$(getconf CLK_TCK)

# 1 if something listens on 127.0.0.1:$1 (from /proc, no extra tools).
listening() {
	hex=$(printf '%04X' "$1")
	awk -v p=":$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { f = 1 } END { exit !f }' \
		/proc/net/tcp
}

# Sets $port to a random free loopback port in 20000..31999: below the
# ephemeral range, so no TIME_WAIT socket of an earlier run holds it.
pick_port() {
	while :; do
		port=$((20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 12000))
		listening "$port" || return 0
	done
}

# Waits (10 s at most) until $pid listens on $port: 0, or 1 if it exited
# or never listened (then it is killed and $pid is empty).
await_listen() {
	i=0
	while [ $i -lt 200 ]; do
		if ! kill -0 "$pid" 2>/dev/null; then
			wait "$pid" 2>/dev/null
			pid=
			return 1
		fi
		listening "$port" && { settle; return 0; }
		sleep 0.05
		i=$((i + 1))
	done
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	pid=
	return 1
}

# Waits (30 s at most) until the server's thread count stops moving: CivetWeb
# may still be starting its workers when the port already listens, and a
# scenario should not measure that.
settle() {
	last=-1 same=0 i=0
	while [ $i -lt 150 ] && [ $same -lt 3 ]; do
		n=$(awk '/^Threads:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)
		if [ "$n" = "$last" ]; then same=$((same + 1)); else same=0; fi
		last=$n
		sleep 0.2
		i=$((i + 1))
	done
}

# Reads the server's peak RSS (MB, $hwm) and CPU time (s, $cpu) so far.
read_usage() {
	hwm=$(awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status" 2>/dev/null)
	cpu=$(awk -v hz="$hz" '{ sub(/.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' \
		"/proc/$pid/stat" 2>/dev/null)
}

# Reads the server's peak RSS and CPU time (read_usage), then stops it
# (TERM, KILL after 10 s).
stop_server() {
	read_usage
	kill -TERM "$pid" 2>/dev/null
	i=0
	while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	pid=
}

# value of key=value in $line
val() {
	printf '%s\n' "$line" | tr ' ' '\n' | sed -n "s/^$1=//p" | head -n 1
}

# Writes $dir/gateway.ini for the gateway on $port with max_connections $1.
# With $2, queues go to the SQLite file $2 (a fresh one), up to 1 GB;
# without, they stay in memory. $3, else BENCH_HISTORY=N, sets [gateway]
# history (kept messages per stream; the gateway's default when neither is).
write_gw_ini() {
	history=${BENCH_HISTORY:+history = $BENCH_HISTORY}
	[ -n "$3" ] && history="history = $3"
	store="path ="
	qbytes=64
	if [ -n "$2" ]; then
		rm -f "$2" "$2-wal" "$2-shm" "$2-journal"
		store="path = $2
sync = normal"
		qbytes=1024
	fi
	mkdir -p "$dir/logs"
	cat >"$dir/gateway.ini" <<EOF
[gateway]
listen = 127.0.0.1
http_port = $port
api_key = $HOMESTEAD_KEY
max_connections = $1
; every bench peer connects from 127.0.0.1: no per-address limit to speak of
max_per_ip = 100000
queue_max = 100000
queue_bytes_max = $qbytes
$history

[store]
$store

[log]
level = warn
directory = $dir/logs
EOF
}

# The homestead-bench scenario that row $1 runs: tflood-hN is tflood on a
# gateway with history = N; history-hN a tflood of 64 mods whose figure is
# the RSS it leaves (bench.sh's history row).
bench_sc_of() {
	case $1 in
	tflood-h*|history-h*) echo tflood ;;
	held-*) echo trate ;;
	*) echo "$1" ;;
	esac
}

# homestead-bench's arguments for scenario $1 ($quick: small counts).
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
		tflood|tflood-h*) echo "--mods 16 --channels 16 --window 32 --size 100 --count 3000" ;;
		trate|held-*) echo "--mods 16 --rate 2000 --duration 1" ;;
		history-h*) echo "--mods 64 --channels 64 --window 32 --size 100 --count 12800" ;;
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
		tflood|tflood-h*) echo "--mods 16 --channels 16 --window 32 --size 100 --duration 5" ;;
		trate|held-*) echo "--mods 16 --rate 10000 --duration 5" ;;
		history-h*) echo "--mods 64 --channels 64 --window 32 --size 100 --count 128000" ;;
		esac
	fi
}

# Runs scenario $1 against the server, stops the server (unless $keep_gw is
# set: then it runs on, and its CPU s and peak RSS are those so far) and adds
# a row to ${runs_file:-$dir/runs}: key|$2|figure|ok|bench CPU|server CPU|CPU
# s|peak RSS, where key is what the median is taken on and $2 names the row
# (the scenario, or scenario|server). A failed run sets $failed and $bad.
run_scenario() {
	bsc=$(bench_sc_of "$1")
	echo "+ ${tag}homestead-bench $bsc $(args_of "$1")${hist_note:+ ($hist_note)}"
	# shellcheck disable=SC2046
	line=$(timeout 180 "$bench" "$bsc" --port "$port" --pid "$pid" $(args_of "$1"))
	rc=$?
	if [ -n "$keep_gw" ]; then read_usage; else stop_server; fi
	echo "$line"
	if [ $rc -ne 0 ]; then
		failed=1
		bad="no (exit $rc)"
		echo "${0##*/}: $2 failed (exit $rc)" >&2
	fi
	case $1 in
	flood) key=$(val rate); fig="$(val rate) msg/s, gw $(val gw_us_per_msg) us CPU/msg" ;;
	rate) key=$(val p99_us); fig="p50 $(val p50_us) us, p99 $(val p99_us) us, max $(val max_us) us at $(val achieved)/s" ;;
	fanout) key=$(val rate); fig="$(val rate) deliveries/s" ;;
	idle) key=$(val up_secs); fig="$(val up)/$(val mods) up in $(val up_secs) s, RSS $(val gw_rss_mb) MB, CPU $(val gw_cpu) idle" ;;
	churn) key=$(val rate); fig="$(val rate)/s, $(val failed) failed, threads $(val gw_threads_start)->$(val gw_threads), RSS $(val gw_rss_start_mb)->$(val gw_rss_mb) MB" ;;
	big) key=$(val mb_per_s); fig="$(val mb_per_s) MB/s" ;;
	queue) key=$(val rate); fig="$(val rate) msg/s queued (sync=normal), drained at $(val drain_rate) msg/s" ;;
	tflood) key=$(val rate); fig="$(val rate) msg/s, gw $(val gw_us_per_msg) us CPU/msg" ;;
	tflood-h*) key=$(val rate); fig="$(val rate) msg/s, gw $(val gw_us_per_msg) us CPU/msg (history = ${1#tflood-h})" ;;
	trate) key=$(val p99_us); fig="p50 $(val p50_us) us, p99 $(val p99_us) us, max $(val max_us) us at $(val achieved)/s, gw $(val gw_us_per_msg) us CPU/msg" ;;
	held-*) key=$(val p99_us); fig="p50 $(val p50_us) us, p99 $(val p99_us) us, max $(val max_us) us at $(val achieved)/s, ${1#held-} held mods" ;;
	history-h*) key=$(val gw_rss_mb); fig="RSS $(val gw_rss_mb) MB after $(val msgs) msgs (64 channels), history = ${1#history-h}" ;;
	esac
	ok=$(val delivered_ok)
	[ -n "$ok" ] || ok=$(val all_up)
	[ -n "$ok" ] || ok=$(val all_ok)
	printf '%s|%s|%s|%s|%s|%s|%s|%s\n' "${key:-0}" "$2" "$fig" "${ok:-no}" \
		"$(val bench_cpu)" "$(val gw_cpu)" "${cpu:-?}" "${hwm:-?}" >>"${runs_file:-$dir/runs}"
}

# Appends the median of the $1 rows in ${runs_file:-$dir/runs} (sorted by
# key: the middle one) to $dir/results, without its key, and "name|key" to
# $dir/keys (for figures computed from rows: ratios, differences); if a run
# failed ($bad) its ok column says so. Then empties the runs file and $bad
# for the next scenario.
add_median() {
	rf=${runs_file:-$dir/runs}
	sort -t'|' -k1,1g "$rf" | sed -n "$((($1 + 1) / 2))p" >"$dir/median"
	awk -F'|' '{ print $2 ($3 ~ /^(homestead|go|node|relay)$/ ? "|" $3 : "") "=" $1 }' \
		"$dir/median" >>"$dir/keys"
	cut -d'|' -f2- "$dir/median" |
		awk -F'|' -v bad="$bad" 'BEGIN { OFS = "|" } { if (bad != "") $(NF - 4) = bad; print }' \
		>>"$dir/results"
	: >"$rf"
	bad=
}

# The median key of row $1 (as add_median kept it), or empty.
key_of() {
	sed -n "s/^$1=//p" "$dir/keys" 2>/dev/null | head -n 1
}
