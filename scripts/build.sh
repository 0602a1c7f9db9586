#!/usr/bin/env bash
# Configures and builds Chorus into DIR (default build/). Extra args go to cmake
# (a later -DCMAKE_BUILD_TYPE=... overrides the RelWithDebInfo default).
# The build's progress lines are filtered out; its exit status is kept: a
# failed configure or compile fails this script, with the compiler's messages.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-build}; shift || true
cmake -S "$here" -B "$here/$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
# grep exits 1 when every line was filtered out, which is not a failure, so
# the build's own status is taken from PIPESTATUS inside the same command.
status=0
cmake --build "$here/$dir" -j"$(nproc)" 2>&1 | grep -vE '^\[ *[0-9]+%\]|^-- ' || status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then
  echo "build.sh: build in $dir failed (exit $status)" >&2
  exit "$status"
fi
