#!/usr/bin/env bash
# Install the Debian package that `make deb` built, start the gateway exactly
# as its installed systemd unit would (no systemd runs in CI), check /health
# and a real client, stop it, remove and purge the package, and check that
# the machine is left as it was. .ci/run calls it after `make deb`.
# Usage, as root: scripts/deb-check.sh [BUILD/homestead-gateway_V_ARCH.deb]
#
# What it touches: apt installs the package and any of its dependencies that
# are missing (those stay); the package makes the user and group homestead,
# /etc/homestead-gateway, /var/lib/homestead-gateway,
# /var/log/homestead-gateway, /usr/bin/homestead-*, the unit and its enable
# link; the purge at the end removes them all, also when a check fails. It
# refuses to run when the package is installed or any of these exist, so a
# real installation is never touched. Where systemd runs, postinst also
# starts the real service on the packaged 127.0.0.1:3333 until the remove
# stops it; this check's own instance uses another port. About 30 s (mostly
# apt); each step is bounded in time.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
pkg=homestead-gateway
user=homestead
unit=/lib/systemd/system/$pkg.service
etc=/etc/$pkg
paths=(/usr/bin/homestead-gateway /usr/bin/homestead-client /usr/bin/homestead-bench "$etc"
	"/var/lib/$pkg" "/var/log/$pkg" "$unit" "/usr/share/$pkg" "/usr/share/doc/$pkg")

say() { printf 'deb-check: %3ds %s\n' "$SECONDS" "$*"; }
fail() {
	printf 'deb-check: FAIL: %s\n' "$*" >&2
	exit 1
}

[ "$(id -u)" = 0 ] || fail "run as root (it installs and purges the package)"
version=$(sed -n 's/^VERSION *:= *//p' "$top/Makefile")
deb=${1:-$top/build/${pkg}_${version}_$(dpkg --print-architecture).deb}
[ -f "$deb" ] || fail "$deb not found (make deb)"
case $deb in /* | ./*) ;; *) deb=./$deb ;; esac # apt takes a file only as a path

# Known to dpkg in any state but purged (config-files included).
installed() {
	local st
	st=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null) && [ "$st" != not-installed ]
}
installed && fail "$pkg is installed here already; this check would purge it"
getent passwd "$user" >/dev/null && fail "user $user exists; this check would delete it"
for p in "${paths[@]}"; do
	[ ! -e "$p" ] || fail "$p exists; this check would delete it"
done

# Everything named after the package in the places a package writes to,
# before and after: the difference must be empty once it is purged.
snapshot() {
	find /etc /lib/systemd /usr/lib/systemd /usr/bin /usr/share /var/lib /var/log /var/cache/apt \
		-xdev -name "*homestead*" 2>/dev/null | sort
	getent passwd "$user" || true
	getent group "$user" || true
	dpkg-statoverride --list | grep "$user" || true
}
before=$(snapshot)

gw_pid=
gw_out=$(mktemp)
apt_out=$(mktemp)
cleanup() {
	status=$?
	if [ -n "$gw_pid" ] && kill -0 "$gw_pid" 2>/dev/null; then
		kill -KILL "$gw_pid" 2>/dev/null || true
		wait "$gw_pid" 2>/dev/null || true # reaped, or userdel sees it and refuses
	fi
	if installed; then
		say "cleaning up: purging $pkg"
		DEBIAN_FRONTEND=noninteractive timeout 300 apt-get purge -y -qq -o DPkg::Lock::Timeout=120 "$pkg" >/dev/null 2>&1 || true
	fi
	rm -f "$gw_out" "$apt_out"
	exit $status
}
trap cleanup EXIT

# apt-get, quiet unless it fails.
apt_get() {
	DEBIAN_FRONTEND=noninteractive timeout 300 apt-get -y -q -o Dpkg::Use-Pty=0 -o DPkg::Lock::Timeout=120 "$@" >"$apt_out" 2>&1 ||
		{ cat "$apt_out" >&2; return 1; }
}

say "installing $(basename "$deb")"
[[ $(dpkg-deb -c "$deb") == *' ./usr/bin/homestead-gateway'* ]] || fail "no /usr/bin/homestead-gateway in $deb"
apt_get install "$deb" || fail "apt-get install"

# What postinst promised.
[ "$(getent passwd "$user" | cut -d: -f7)" = /usr/sbin/nologin ] || fail "no system user $user"
for d in /var/lib/$pkg /var/log/$pkg; do
	[ "$(stat -c '%U:%G %a' "$d")" = "$user:$user 750" ] || fail "$d: $(stat -c '%U:%G %a' "$d")"
done
[ "$(stat -c '%U:%G %a' "$etc/gateway.ini")" = "root:$user 640" ] || fail "$etc/gateway.ini: owner or mode"
[ "$(stat -c '%U:%G %a' "$etc/env")" = "root:root 600" ] || fail "$etc/env: owner or mode"
key=$(sed -n 's/^GATEWAY_API_KEY=//p' "$etc/env")
[[ $key =~ ^[0-9a-f]{64}$ ]] || fail "$etc/env holds no random key"
[[ $(dpkg-query -W -f='${Conffiles}' "$pkg") == *" $etc/gateway.ini "* ]] || fail "gateway.ini is not a conffile"
[ -L /etc/systemd/system/multi-user.target.wants/$pkg.service ] || fail "the unit is not enabled"
if command -v systemd-analyze >/dev/null; then
	systemd-analyze verify "$unit" || fail "systemd-analyze verify $unit"
fi

# The unit, read the way systemd does for what matters here: [Service] keys,
# the last assignment wins.
unit_get() {
	awk -v k="$1" '/^\[/ { s = ($0 == "[Service]") } s && index($0, k "=") == 1 {
		v = substr($0, length(k) + 2) } END { print v }' "$unit"
}
u_user=$(unit_get User)
u_group=$(unit_get Group)
u_envfile=$(unit_get EnvironmentFile)
u_env=$(unit_get Environment)
u_wd=$(unit_get WorkingDirectory)
u_umask=$(unit_get UMask)
u_pre=$(unit_get ExecStartPre)
u_start=$(unit_get ExecStart)
u_nnp=$(unit_get NoNewPrivileges)
u_stop=$(unit_get TimeoutStopSec)
if [ -z "$u_user" ] || [ -z "$u_start" ]; then fail "no User= or ExecStart= in $unit"; fi
case "$u_start$u_pre$u_env" in *[\"\'\$%]*) fail "quoting or specifiers in the unit: teach this check" ;; esac
case "$u_start" in /usr/bin/homestead-gateway\ *) ;; *) fail "ExecStart= is not /usr/bin/homestead-gateway: $u_start" ;; esac

# The config is the one ExecStart names. Like an operator would, move it to a
# free port below the ephemeral range (the edit also shows that a purge
# removes a changed conffile).
conf=$(sed -n 's/.*\(-c\|--config\) \([^ ]*\).*/\2/p' <<<"$u_start")
[ -f "$conf" ] || fail "ExecStart= names no config file: $u_start"
host=$(sed -n 's/^listen *= *//p' "$conf")
[[ $host == *:* ]] && host="[$host]"
port=
for ((p = 20000 + RANDOM % 12000, n = 0; n < 50; p++, n++)); do
	if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
		port=$p
		break
	fi
done
[ -n "$port" ] || fail "no free port"
grep -q '^http_port *=' "$conf" || fail "no http_port in $conf"
edited=$(sed "s/^http_port *=.*/http_port = $port/" "$conf")
printf '%s\n' "$edited" >"$conf" # in place: owner and mode stay

# The environment systemd gives the service: its own few variables, then
# EnvironmentFile= and Environment=, nothing inherited from this shell.
home=$(getent passwd "$u_user" | cut -d: -f6)
envs=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "HOME=$home" "USER=$u_user"
	"LOGNAME=$u_user" SHELL=/usr/sbin/nologin)
if [ -n "$u_envfile" ]; then
	f=${u_envfile#-}
	if [ -f "$f" ]; then
		while IFS= read -r line; do
			[[ $line =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] && envs+=("$line")
		done <"$f"
	elif [ "$f" = "$u_envfile" ]; then
		fail "EnvironmentFile=$f missing: systemd would not start the unit"
	fi
fi
read -r -a words <<<"$u_env"
envs+=("${words[@]}")

# As the unit's user and group, with no capabilities and, if the unit says
# so, no new privileges; in its working directory, with its umask.
priv=(setpriv "--reuid=$u_user" "--regid=${u_group:-$u_user}" --init-groups --inh-caps=-all
	--bounding-set=-all)
[ "$u_nnp" = yes ] && priv+=(--no-new-privs)
# as_unit COMMAND [SECONDS], in a subshell (& or ( )) that it replaces, so
# that $! is the gateway itself.
as_unit() {
	cd "${u_wd:-/}"
	umask "${u_umask:-0022}"
	# shellcheck disable=SC2086 # the unit's command line, split as systemd does
	exec ${2:+timeout "$2"} "${priv[@]}" -- env -i "${envs[@]}" $1
}

if [ -n "$u_pre" ]; then
	say "ExecStartPre: $u_pre"
	(as_unit "$u_pre" 20) >"$gw_out" 2>&1 || { cat "$gw_out" >&2; fail "ExecStartPre failed"; }
fi
say "ExecStart as $u_user on port $port: $u_start"
as_unit "$u_start" >"$gw_out" 2>&1 &
gw_pid=$!

health=
for _ in $(seq 1 40); do
	health=$(curl -fsS --max-time 2 "http://$host:$port/health" 2>/dev/null) && break
	kill -0 "$gw_pid" 2>/dev/null || { cat "$gw_out" >&2; fail "the gateway exited"; }
	sleep 0.25
done
[[ $health == *'"status":"healthy"'* ]] || { cat "$gw_out" >&2; fail "/health: ${health:-no answer}"; }
say "/health: $health"
[ "$(stat -c %U "/proc/$gw_pid")" = "$u_user" ] || fail "the gateway does not run as $u_user"

# The packaged client, with the generated key and with a wrong one.
client() {
	timeout 20 env HOMESTEAD_KEY="$1" /usr/bin/homestead-client mod --server-id deb-check \
		--channel deb-check --url "ws://$host:$port/sync" --wait 5 <<<"hello from deb-check"
}
client "$key" >/dev/null 2>&1 || fail "homestead-client with the generated key: exit $?"
rc=0
client wrong-key >/dev/null 2>&1 || rc=$?
[ $rc = 3 ] || fail "homestead-client with a wrong key: exit $rc, not 3 (key refused)"
say "homestead-client: message acked with the generated key, a wrong key refused"

kill -TERM "$gw_pid"
for _ in $(seq 1 $((${u_stop:-15} * 4))); do
	kill -0 "$gw_pid" 2>/dev/null || break
	sleep 0.25
done
kill -0 "$gw_pid" 2>/dev/null && fail "still running ${u_stop:-15} s after SIGTERM"
rc=0
wait "$gw_pid" || rc=$?
gw_pid=
[ $rc = 0 ] || { cat "$gw_out" >&2; fail "the gateway exited $rc after SIGTERM"; }
say "stopped by SIGTERM, exit 0"

[ "$(stat -c %U /var/lib/$pkg/gateway.db)" = "$u_user" ] || fail "no store in /var/lib/$pkg"
logs=("/var/log/$pkg"/gateway-*.log)
[ -f "${logs[0]}" ] || fail "no log file in /var/log/$pkg"
grep -q "$key" /var/log/$pkg/* && fail "the key is in the log"

say "store and log written by $u_user, no key in the log"

# A second installation changes nothing the first one made or the operator set.
apt_get install --reinstall "$deb" || fail "apt-get install --reinstall"
[ "$(sed -n 's/^GATEWAY_API_KEY=//p' "$etc/env")" = "$key" ] || fail "the reinstall changed the key"
grep -q "^http_port = $port$" "$conf" || fail "the reinstall changed the edited conffile"

say "reinstalled: key and edited config kept"

# remove keeps the configuration, the key, the data and the user...
apt_get remove "$pkg" || fail "apt-get remove"
[ ! -e /usr/bin/homestead-gateway ] || fail "remove left the binary"
for f in "$etc/env" "$conf" "/var/lib/$pkg/gateway.db"; do
	[ -f "$f" ] || fail "remove took $f"
done
getent passwd "$user" >/dev/null || fail "remove took the user"
say "removed: config, key, store and user kept"
# ... and purge takes everything.
apt_get purge "$pkg" || fail "apt-get purge"
! installed || fail "$pkg still known to dpkg after the purge"
after=$(snapshot)
if [ "$after" != "$before" ]; then
	diff <(printf '%s\n' "$before") <(printf '%s\n' "$after") >&2 || true
	fail "the purge left the above behind"
fi
say "purged: nothing left behind"
