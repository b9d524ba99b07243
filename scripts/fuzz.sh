#!/bin/sh
# fuzz.sh - run the libFuzzer harnesses, each for a bounded time on a
# temporary copy of its seed corpus. make builds them (make fuzzers, into
# BUILD/fuzz/); make fuzz builds them and runs this.
#
#   sh scripts/fuzz.sh [BUILD]          (BUILD defaults to build)
#
# Harnesses: test/fuzz_protocol.c (protocol.c: handshakes, messages,
# replies) and test/fuzz_config.c (config.c: the ini file). Seeds:
# test/data/fuzz/<name>/, dictionaries test/data/fuzz/<name>.dict.
# The repository is never written to: the corpus is copied to a temporary
# folder that is removed afterwards, and crash/leak/timeout reproducers are
# kept in BUILD/fuzz/artifacts/.
#
# Environment: FUZZ_SECONDS (per harness, default 20), FUZZ_FLAGS (extra
# libFuzzer flags, e.g. "-jobs=2 -workers=2").
# Exits non-zero if a harness is not built or finds a crash, a leak, a
# timeout or a sanitizer report.
set -eu

BUILD=${1:-build}
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
FUZZ_FLAGS=${FUZZ_FLAGS:-}
OUT=$BUILD/fuzz
# A UBSan report is a failure. (Set here rather than with
# -fno-sanitize-recover, which also hides UBSan's check branches from
# libFuzzer's coverage feedback.)
UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export UBSAN_OPTIONS

cd "$(dirname "$0")/.."
for name in protocol config; do
	if [ ! -x "$OUT/fuzz_$name" ]; then
		echo "fuzz: $OUT/fuzz_$name is not built (make fuzzers BUILD=$BUILD)" >&2
		exit 2
	fi
done
mkdir -p "$OUT/artifacts"

# tmpfs if there is one: fuzz_config rewrites a file for every input.
TMP=$(mktemp -d /dev/shm/homestead-fuzz.XXXXXX 2>/dev/null ||
      mktemp -d /tmp/homestead-fuzz.XXXXXX)
trap 'rm -rf "$TMP"' EXIT INT TERM
export FUZZ_TMPDIR="$TMP"

status=0
for name in protocol config; do
	corpus=$TMP/$name
	cp -r "test/data/fuzz/$name" "$corpus"
	dict=
	[ -f "test/data/fuzz/$name.dict" ] && dict="-dict=test/data/fuzz/$name.dict"
	echo "  FUZZ    $name for ${FUZZ_SECONDS}s ($(ls "$corpus" | wc -l) seeds)"
	# -max_len: enough for every seed; -rss_limit_mb: the sanitizers' overhead
	# plus what one input may cost; -timeout: one input must not take 10 s.
	# shellcheck disable=SC2086
	if "$OUT/fuzz_$name" -max_total_time="$FUZZ_SECONDS" -max_len=8192 -timeout=10 \
	        -rss_limit_mb=2048 -print_final_stats=1 \
	        -artifact_prefix="$OUT/artifacts/$name-" $dict $FUZZ_FLAGS "$corpus" \
	        >"$TMP/$name.log" 2>&1; then
		grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::peak_rss_mb)' \
		    "$TMP/$name.log" | sed 's/^/          /'
	else
		status=1
		tail -n 60 "$TMP/$name.log" >&2
		echo "fuzz: $name FAILED; reproducer in $OUT/artifacts/ (run:" \
		     "$OUT/fuzz_$name FILE)" >&2
	fi
done
exit $status
