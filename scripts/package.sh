#!/usr/bin/env bash
# Builds the Debian package of Chorus into OUTDIR and prints its path:
#   bash scripts/package.sh OUTDIR [BUILD_DIR [CMAKE_ARGS...]]
# A Release build (prefix /usr) of what the package holds: chorusd,
# clusterctl, libchorus (shared and static), in BUILD_DIR (default
# build-package/, kept for the next run), then `cpack -G DEB`. What the
# package contains and does: docs/deploy.md. CMAKE_ARGS are kept in
# BUILD_DIR's cache: -DCHORUS_DEB_RELEASE=2 makes chorus_VERSION-2 there
# until another value is given. Needs dpkg-dev and file
# (dpkg-shlibdeps reads the binaries' library dependencies); scripts/deps.sh
# installs them.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
if [ $# -lt 1 ]; then
  echo "usage: scripts/package.sh OUTDIR [BUILD_DIR [CMAKE_ARGS...]]" >&2
  exit 2
fi
out=$1; shift
dir=${1:-build-package}; shift || true
case "$dir" in /*) ;; *) dir="$here/$dir" ;; esac
mkdir -p "$out"
out=$(cd "$out" && pwd)
# without either, cpack would leave the library dependencies out (or stop)
command -v dpkg-shlibdeps >/dev/null || { echo "package.sh: dpkg-shlibdeps not found: apt-get install dpkg-dev" >&2; exit 1; }
command -v file >/dev/null || { echo "package.sh: file not found: apt-get install file" >&2; exit 1; }

# Without CMAKE_SKIP_INSTALL_ALL_DEPENDENCY cpack would first build every
# target, the tests and benchmarks included: the package needs four.
cmake -S "$here" -B "$dir" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr \
  -DCMAKE_SKIP_INSTALL_ALL_DEPENDENCY=ON "$@" >/dev/null
status=0
cmake --build "$dir" -j"$(nproc)" --target chorusd clusterctl chorus chorus_static_dist 2>&1 |
  grep -vE '^\[ *[0-9]+%\]|^-- ' || status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then
  echo "package.sh: build in $dir failed (exit $status)" >&2
  exit "$status"
fi

arch=$(dpkg --print-architecture)
rm -f "$dir"/chorus_*_"$arch".deb
log="$dir/cpack.log"
if ! (cd "$dir" && cpack -G DEB) >"$log" 2>&1; then
  cat "$log" >&2
  echo "package.sh: cpack failed (log $log)" >&2
  exit 1
fi
debs=("$dir"/chorus_*_"$arch".deb)
if [ ${#debs[@]} -ne 1 ] || [ ! -f "${debs[0]}" ]; then
  cat "$log" >&2
  echo "package.sh: cpack made no single chorus_*_$arch.deb in $dir" >&2
  exit 1
fi
mv -f "${debs[0]}" "$out/"
echo "$out/$(basename "${debs[0]}")"
