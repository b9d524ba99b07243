#!/bin/sh
# Measures the door (SPEC 8a) of one gateway binary with test/it_door.c:
# (a) /health latency from 127.0.0.2 (median, max) during FLOOD_MS ms of
#     300 half-open sockets from 127.0.0.1 kept reopening, max_connections = 4;
# (b) upgrades that did not get a 101 over STARTS starts, each upgrading from
#     the moment the process starts.
# The test's own assertions may fail on an older binary: the figures are
# what this prints.
# Usage: scripts/door-measure.sh BUILD_DIR GATEWAY_BIN [STARTS] [FLOOD_MS]
#   e.g. scripts/door-measure.sh build build/before/homestead-gateway 1000 10000
build=${1:?BUILD_DIR} bin=${2:?GATEWAY_BIN} starts=${3:-1000} flood=${4:-10000}
t=$build/test/it_door
[ -x "$t" ] || { echo "door-measure: $t not built (make all-tests)" >&2; exit 2; }
echo "gateway: $bin"
GW_BIN=$bin TEST_FILTER="*half_open*" DOOR_FLOOD_MS=$flood "$t" 2>&1 | grep '^flood'
GW_BIN=$bin TEST_FILTER="*startup*" DOOR_STARTS=$starts "$t" 2>&1 | grep '^start'
