#!/bin/sh
# Install what the build and the tests need, from Debian's packages only, and
# fetch CivetWeb's source package into third_party/src (build output, ignored).
# Idempotent: when everything is present it installs and fetches nothing.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/third_party/civetweb.mk.sh"

pkgs="build-essential pkg-config dpkg-dev clang libclang-rt-dev libjansson-dev libinih-dev libcmocka-dev libsqlite3-dev"

as_root() {
	if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
		missing="$missing $p"
done

updated=0
apt_update() {
	[ $updated = 1 ] && return 0
	as_root apt-get update -qq
	updated=1
}

if [ -n "$missing" ]; then
	echo "deps: installing$missing"
	apt_update
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=120 --no-install-recommends $missing >/dev/null
fi

[ -f "$CIVETWEB_DIR/src/civetweb.c" ] && exit 0

# apt-get source needs a deb-src entry; derive one from the existing deb
# entries (same mirrors) only when none exists.
if ! grep -rqsE '^(deb-src|Types:.*deb-src)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
	echo "deps: adding deb-src entries for the configured Debian mirrors"
	if [ -f /etc/apt/sources.list.d/debian.sources ]; then
		sed 's/^Types:.*/Types: deb-src/' /etc/apt/sources.list.d/debian.sources |
			as_root tee /etc/apt/sources.list.d/homestead-deb-src.sources >/dev/null
	else
		sed -n 's/^deb \(.*\)/deb-src \1/p' /etc/apt/sources.list |
			as_root tee /etc/apt/sources.list.d/homestead-deb-src.list >/dev/null
	fi
	updated=0
fi
apt_update

echo "deps: fetching civetweb $CIVETWEB_VERSION source package"
tmp=$(mktemp -d "$top/third_party/.fetch.XXXXXX")
chmod 755 "$tmp" # apt-get source reads it as the _apt user
chmod 755 "$tmp"   # apt-get source drops to the _apt user
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get source -qq "civetweb=$CIVETWEB_VERSION" >/dev/null)
src=$(find "$tmp" -mindepth 1 -maxdepth 1 -type d -name 'civetweb-*' | head -n 1)
[ -n "$src" ] && [ -f "$src/src/civetweb.c" ] || { echo "deps: civetweb source not found" >&2; exit 1; }
mkdir -p "$(dirname "$CIVETWEB_DIR")"
rm -rf "$CIVETWEB_DIR"
mv "$src" "$CIVETWEB_DIR"
echo "deps: civetweb source in ${CIVETWEB_DIR#$top/}"
