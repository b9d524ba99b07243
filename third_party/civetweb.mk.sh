# Pinned CivetWeb source package, shared by scripts/deps.sh and the Makefile.
CIVETWEB_VERSION=1.15+dfsg-4
CIVETWEB_DIR="$top/third_party/src/civetweb"
