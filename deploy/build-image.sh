#!/usr/bin/env bash
# build-image.sh [IMAGE] - builds the Chorus container image from this
# machine's files alone (nothing is pulled): static chorusd and clusterctl
# (-DCHORUS_STATIC=ON, Release) into build-static/, the image's files laid
# out by deploy/rootfs.sh, then deploy/Dockerfile (FROM scratch).
#
# IMAGE defaults to $CHORUS_IMAGE, else localhost/chorus:latest, the name
# deploy/docker-compose.yml runs. CHORUS_STATIC_BUILD_DIR moves the build
# tree. Needs the packages of scripts/deps.sh and a Docker engine.
#
# A rebuild moves IMAGE to the new image; the previous one, left without a
# name, is removed when it is a Chorus image (its label) that no container
# uses, else the script says which command removes it later.
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
# the image the tag names now: a rebuild moves the tag and leaves it
# without a name (dangling), removed below when nothing else needs it
old=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
echo "build-image: docker build -t $image"
# its output (and the legacy builder's deprecation notice) only on failure
if ! out=$(docker build -f "$here/deploy/Dockerfile" -t "$image" "$ctx" 2>&1); then
  echo "$out" >&2
  echo "build-image: docker build failed" >&2
  exit 1
fi
new=$(docker image inspect -f '{{.Id}}' "$image")
echo "build-image: built $image ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.1f MB", $1 / 1e6}'))"
if [ -n "$old" ] && [ "$old" != "$new" ]; then
  # only a Chorus image with no other name and no container (running or
  # not) is removed; otherwise say what keeps it
  # (images built before the label are known by their entrypoint)
  kind=$(docker image inspect -f '{{index .Config.Labels "org.opencontainers.image.title"}} {{json .Config.Entrypoint}}' "$old" 2>/dev/null || true)
  tags=$(docker image inspect -f '{{len .RepoTags}}' "$old" 2>/dev/null || echo gone)
  users=$(docker ps -a -q --filter "ancestor=$old" | wc -l)
  if [ "$tags" = gone ]; then
    :
  elif [ "$tags" = 0 ] && [ "$users" = 0 ] &&
       { [[ $kind == "chorus "* ]] || [[ $kind == *'["/usr/bin/chorusd"]' ]]; }; then
    if docker image rm "$old" >/dev/null 2>&1; then
      echo "build-image: removed the previous $image (${old:7:12})"
    fi
  elif [ "$tags" = 0 ] && [ "$users" != 0 ]; then
    echo "build-image: the previous $image (${old:7:12}) is still used by $users container(s);" \
         "remove it once they are gone: docker image rm ${old:7:12}"
  fi
fi
