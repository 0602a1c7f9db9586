#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs every test:
#   1. unit + integration tests (ctest) on the normal build;
#   2. unit tests under valgrind (no leaks, no invalid accesses);
#   3. unit + integration tests on an ASan+UBSan build.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bash scripts/deps.sh
start=$(date +%s)

echo "== build (RelWithDebInfo)"
bash scripts/build.sh build
echo "== tests: unit + integration"
(cd build && ctest --output-on-failure -j2 --timeout 300)

echo "== unit tests under valgrind"
fails=0
for t in build/test_*; do
  [ -x "$t" ] || continue
  if ! CHORUS_BUILD_DIR="$here/build" valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect \
       --error-exitcode=99 --trace-children=no "$t" >/tmp/chorus-vg.log 2>&1; then
    echo "valgrind: $t FAILED"; tail -40 /tmp/chorus-vg.log; fails=$((fails+1))
  else
    echo "valgrind: $t ok"
  fi
done
[ "$fails" -eq 0 ] || { echo "valgrind: $fails test program(s) failed"; exit 1; }

echo "== build with ASan + UBSan"
bash scripts/build.sh build-asan -DCHORUS_SANITIZE=ON
echo "== tests under ASan + UBSan"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
   ctest --output-on-failure -j2 --timeout 300)
echo "test.sh: all stages passed in $(( $(date +%s) - start )) s"
