#!/bin/sh
# What `make interop` needs besides the build (scripts/deps.sh): the JDK for
# the Java mod (and Gson, which Minecraft servers ship), Node and npm for the
# Node bot, aiohttp for the Python bot, all from Debian's packages; then the
# Node bot's `ws` from its lock file (npm ci). Idempotent: when everything is
# present it installs nothing.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)

as_root() {
	if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

missing=""
for p in openjdk-17-jdk-headless libgoogle-gson-java python3-aiohttp; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
		missing="$missing $p"
done
# Node may come from elsewhere than Debian (its own npm inside): only what is
# not there at all is installed.
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"

if [ -n "$missing" ]; then
	echo "interop: installing$missing"
	as_root apt-get update -qq
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=120 --no-install-recommends $missing >/dev/null
fi

node_dir="$top/test/interop/node"
if [ ! -f "$node_dir/node_modules/.package-lock.json" ] ||
	[ "$node_dir/package-lock.json" -nt "$node_dir/node_modules/.package-lock.json" ]; then
	echo "interop: npm ci (test/interop/node)"
	(cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
