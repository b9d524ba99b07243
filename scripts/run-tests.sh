#!/bin/sh
# Runs every unit test (build/test/test_*), then every integration test
# (build/test/it_*), from the repository root, and sums the CMocka results.
# Usage: scripts/run-tests.sh [BUILD_DIR]
build=${1:-build}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
pass=0 fail=0 bad=""
for t in "$build"/test/test_* "$build"/test/it_*; do
	case $t in *.d | *.o) continue ;; esac
	[ -x "$t" ] || continue
	"$t" >"$out" 2>&1
	rc=$?
	cat "$out"
	p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$out" | tail -n 1)
	f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$out" | tail -n 1)
	pass=$((pass + ${p:-0}))
	fail=$((fail + ${f:-0}))
	if [ $rc -ne 0 ]; then
		bad="$bad ${t##*/}"
		[ -z "$f" ] && fail=$((fail + 1))   # crashed before reporting
	fi
done
[ -n "$bad" ] && echo "failing suites:$bad"
echo "$pass passed, $fail failed"
[ -z "$bad" ]
