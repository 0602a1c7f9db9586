#!/usr/bin/env bash
# build-image.sh [IMAGE] - builds the Chorus container image from this
# machine's files alone (nothing is pulled): static chorusd and clusterctl
# (-DCHORUS_STATIC=ON, Release) into build-static/, the image's files laid
# out by deploy/rootfs.sh, then deploy/Dockerfile (FROM scratch).
#
# IMAGE defaults to $CHORUS_IMAGE, else localhost/chorus:latest, the name
# deploy/docker-compose.yml runs. CHORUS_STATIC_BUILD_DIR moves the build
# tree. Needs the packages of scripts/deps.sh and a Docker engine.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
image=${1:-${CHORUS_IMAGE:-localhost/chorus:latest}}
build_dir=${CHORUS_STATIC_BUILD_DIR:-$here/build-static}

echo "build-image: static chorusd and clusterctl in $build_dir"
cmake -S "$here" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DCHORUS_STATIC=ON >/dev/null
# the build's progress lines are filtered out, its exit status kept
status=0
cmake --build "$build_dir" -j"$(nproc)" --target chorusd clusterctl 2>&1 |
  grep -vE '^\[ *[0-9]+%\]|^-- |^Consolidate compiler generated dependencies|warning: Using .(dlopen|getaddrinfo). in statically linked|in function .(handlers_load_plugin|listener_open|resolv_worker|config_host_resolve).:$' ||
  status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then
  echo "build-image: build failed (exit $status)" >&2
  exit "$status"
fi

ctx=$(mktemp -d "${TMPDIR:-/tmp}/chorus-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
bash "$here/deploy/rootfs.sh" "$ctx" "$build_dir"
echo "build-image: docker build -t $image"
# its output (and the legacy builder's deprecation notice) only on failure
if ! out=$(docker build -f "$here/deploy/Dockerfile" -t "$image" "$ctx" 2>&1); then
  echo "$out" >&2
  echo "build-image: docker build failed" >&2
  exit 1
fi
echo "build-image: built $image ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.1f MB", $1 / 1e6}'))"
