#!/bin/sh
# Build the Debian package build/homestead-gateway_VERSION_ARCH.deb from this
# build's binaries with dpkg's own tools: dpkg-shlibdeps for Depends,
# dpkg-deb to pack. Usage: scripts/deb.sh BUILD VERSION (make deb). The
# maintainer scripts, control template, conffile list and copyright are in
# etc/deb/; the unit and the config are the project's own
# (etc/homestead-gateway.service with /usr paths, etc/gateway-production.ini).
# Needs no root: files are packed as root:root (--root-owner-group).
set -eu

build=${1:?usage: deb.sh BUILD VERSION}
version=${2:?usage: deb.sh BUILD VERSION}
top=$(cd "$(dirname "$0")/.." && pwd)
pkg=homestead-gateway
arch=$(dpkg --print-architecture)
maintainer=${DEB_MAINTAINER:-HomesteadGateway maintainers <maintainers@homestead-gateway.invalid>}
deb="$build/${pkg}_${version}_${arch}.deb"

cd "$top"
for b in homestead-gateway homestead-client homestead-bench; do
	[ -x "$build/$b" ] || { echo "deb: $build/$b missing (make all)" >&2; exit 1; }
done

# dpkg-shlibdeps wants a debian/control beside the tree it reads, so the
# staging area is laid out as a source package would be: $work/debian/$pkg.
work="$build/deb"
root="$work/debian/$pkg"
rm -rf "$work"
install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" \
	"$root/etc/homestead-gateway" "$root/usr/share/$pkg" "$root/usr/share/doc/$pkg"

# Stripped like dh_strip does, without the debug symbols package.
for b in homestead-gateway homestead-client homestead-bench; do
	install -m 0755 "$build/$b" "$root/usr/bin/$b"
	strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/bin/$b"
done

# The unit: the repository's, for /usr, with a header of its own instead of
# the one about installing by hand.
{
	echo "# systemd unit of the homestead-gateway Debian package; see"
	echo "# /usr/share/doc/homestead-gateway/README.md.gz, \"Operations\"."
	echo "# Local changes: \`systemctl edit homestead-gateway\` (a drop-in), not this file."
	echo
	sed '1,/^$/d; s|/usr/local|/usr|g; s|README\.md$|README.md.gz|' etc/homestead-gateway.service
} >"$root/lib/systemd/system/$pkg.service"
chmod 0644 "$root/lib/systemd/system/$pkg.service"

# The conffile: the production config as it is (127.0.0.1:3333, the store in
# /var/lib/homestead-gateway, logs in /var/log/homestead-gateway, api_key
# empty: the key is in /etc/homestead-gateway/env). Packed 0644 as it holds
# no key yet; postinst makes it root:homestead 0640 with a stat override,
# which dpkg also applies to the versions that upgrades bring.
install -m 0644 etc/gateway-production.ini "$root/etc/homestead-gateway/gateway.ini"

install -m 0644 etc/gateway.ini etc/gateway-production.ini etc/nginx.conf etc/Caddyfile \
	"$root/usr/share/$pkg/"
install -m 0644 etc/deb/copyright "$root/usr/share/doc/$pkg/copyright"
install -m 0644 third_party/src/civetweb/debian/copyright "$root/usr/share/doc/$pkg/copyright.civetweb"
gzip -9n <README.md >"$root/usr/share/doc/$pkg/README.md.gz"

# File dates from the last commit, so that one commit packs the same way twice.
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH=$(git -C "$top" log -1 --format=%ct 2>/dev/null || date +%s)
	export SOURCE_DATE_EPOCH
fi

# Debian wants a changelog in every package; the project's history is in git.
commit=$(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo unknown)
{
	echo "$pkg ($version) unstable; urgency=medium"
	echo
	echo "  * HomesteadGateway $version, commit $commit. The changes are in the"
	echo "    project's git history."
	echo
	echo " -- $maintainer  $(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$root/usr/share/doc/$pkg/changelog.gz"
chmod 0644 "$root/usr/share/doc/$pkg/README.md.gz" "$root/usr/share/doc/$pkg/changelog.gz"

# Control files: ours, from etc/deb/.
install -m 0644 etc/deb/conffiles "$root/DEBIAN/conffiles"
install -m 0755 etc/deb/postinst etc/deb/prerm etc/deb/postrm "$root/DEBIAN/"

# Depends: the shared libraries the binaries really link (libc6, libjansson4,
# libsqlite3-0, libinih1 today), at the versions they need.
printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$pkg" "$pkg" >"$work/debian/control"
depends=$(cd "$work" && dpkg-shlibdeps -O "debian/$pkg"/usr/bin/* | sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || { echo "deb: dpkg-shlibdeps found no dependencies" >&2; exit 1; }

size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@MAINTAINER@|$maintainer|" \
	-e "s|@SIZE@|$size|" -e "s|@DEPENDS@|$depends|" etc/deb/control.in >"$root/DEBIAN/control"

(cd "$root" && find usr lib etc -type f ! -path etc/\* -print0 | sort -z | xargs -0 md5sum) \
	>"$root/DEBIAN/md5sums"

dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "  DEB     $deb"
