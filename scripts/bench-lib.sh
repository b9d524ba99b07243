# Shell helpers shared by scripts/bench.sh and scripts/bench-compare.sh
# (sourced, POSIX sh). They work on the server under test through two
# globals: $pid (its process) and $port.

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

# Reads the server's peak RSS (MB, $hwm) and CPU time (s, $cpu), then
# stops it (TERM, KILL after 10 s).
stop_server() {
	hwm=$(awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status" 2>/dev/null)
	cpu=$(awk -v hz="$hz" '{ sub(/.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' \
		"/proc/$pid/stat" 2>/dev/null)
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
