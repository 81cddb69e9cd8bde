#!/usr/bin/env bash
# Build and run the agent's container image on a machine with no image registry and no Docker engine, from
# Debian's packages alone (debootstrap, buildah, podman, runc; run as root):
#
#   deploy/image/build.sh base            a Debian base image with python3 (debootstrap --variant=minbase),
#                                         kept as a tarball in the cache: later runs only import it
#   deploy/image/build.sh image WHEEL     the agent image (deploy/Dockerfile, WHEELS=prebuilt) from a wheel
#                                         built on the host (`make dist`); prints the image's name
#   deploy/image/build.sh run ARGS...     `podman run ARGS...` with the runtime options that work here
#   deploy/image/build.sh podman ARGS...  any other podman command with the same runtime options
#
# Found on the development machines: buildah builds with `--isolation chroot`, and podman runs containers
# with runc and the cgroupfs cgroup manager (crun and the systemd manager fail there) given explicit
# nofile and nproc ulimits.
#
# Environment: STREAMHOUSE_IMAGE (the image's name; default localhost/streamhouse-agent:VERSION),
# STREAMHOUSE_IMAGE_SUITE (Debian release, default bookworm: its python3 must be 3.11 or later, and the
# dependencies' wheels are downloaded for the host's Python, so keep the two alike), STREAMHOUSE_IMAGE_CACHE
# (default ~/.cache/streamhouse/image), STREAMHOUSE_IMAGE_MIRROR (Debian mirror; default: the host's apt
# source).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/pyproject.toml" | head -n1)
SUITE=${STREAMHOUSE_IMAGE_SUITE:-bookworm}
CACHE=${STREAMHOUSE_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/streamhouse/image}
BASE_PACKAGES=python3,python3-venv
BASE_IMAGE=localhost/streamhouse-debian-base:$SUITE
IMAGE=${STREAMHOUSE_IMAGE:-localhost/streamhouse-agent:$VERSION}
PODMAN=(podman --runtime runc --cgroup-manager cgroupfs)
# A container may not raise a limit above what runc itself has (it fails with "error setting rlimit"), and
# without CAP_SYS_RESOURCE nothing can raise a hard limit: the host's hard limit, at most 65536 files, and at
# most 32768 processes (podman lowers its own limit of processes to that).
limit() { local hard; hard=$(ulimit -H "$1"); [[ $hard == unlimited || $hard -gt $2 ]] && hard=$2; echo "$hard"; }
NOFILE=${STREAMHOUSE_IMAGE_NOFILE:-$(limit -n 65536)}
NPROC=${STREAMHOUSE_IMAGE_NPROC:-$(limit -u 32768)}
ULIMITS=(--ulimit "nofile=$NOFILE:$NOFILE" --ulimit "nproc=$NPROC:$NPROC")

say() { echo "build.sh: $*" >&2; }
die() { say "$*"; exit 1; }

need() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (Debian package $tool: apt-get install $tool)"
  done
}

# The Debian mirror the host's apt uses, so the base comes from where the machine's packages come from.
mirror() {
  if [[ -n ${STREAMHOUSE_IMAGE_MIRROR:-} ]]; then
    echo "$STREAMHOUSE_IMAGE_MIRROR"
  elif [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
    awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources
  elif [[ -r /etc/apt/sources.list ]]; then
    awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list
  fi
}

base() {
  need podman debootstrap
  if "${PODMAN[@]}" image exists "$BASE_IMAGE"; then
    say "base image $BASE_IMAGE is there"
    return
  fi
  local tarball="$CACHE/debian-$SUITE-${BASE_PACKAGES//,/-}.tar"
  if [[ ! -s $tarball ]]; then
    mkdir -p "$CACHE"
    local rootfs="$CACHE/rootfs.partial"
    rm -rf "$rootfs"
    say "debootstrap --variant=minbase $SUITE with $BASE_PACKAGES into $rootfs"
    # shellcheck disable=SC2046 # an empty mirror means debootstrap's default
    debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$rootfs" $(mirror) >&2
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
    tar -C "$rootfs" --numeric-owner -cf "$tarball.partial" .
    mv "$tarball.partial" "$tarball"
    rm -rf "$rootfs"
  fi
  say "importing $tarball as $BASE_IMAGE"
  "${PODMAN[@]}" import --change 'CMD ["python3"]' "$tarball" "$BASE_IMAGE" >/dev/null
}

image() {
  local wheel=${1:-}
  [[ -f $wheel && $wheel == *.whl ]] || die "usage: build.sh image WHEEL (a .whl file; make dist builds one)"
  need buildah
  base
  CONTEXT=$(mktemp -d)
  trap 'rm -rf "$CONTEXT"' EXIT
  local context=$CONTEXT
  mkdir -p "$context/wheels" "$CACHE/wheels"
  cp "$ROOT/requirements-runtime.lock" "$context/"
  # The dependencies' wheels, downloaded on the host (and kept in the cache) so that the build needs no
  # network: the Dockerfile installs from wheels/ only.
  python3 -m pip download --disable-pip-version-check -q --only-binary=:all: \
    -r "$ROOT/requirements-runtime.lock" -d "$CACHE/wheels" >&2
  cp "$CACHE"/wheels/*.whl "$context/wheels/"
  cp "$wheel" "$context/wheels/"
  say "buildah bud $IMAGE from $(basename "$wheel") on $BASE_IMAGE"
  buildah bud --isolation chroot --layers=false --pull-never -f "$ROOT/deploy/Dockerfile" \
    --build-arg PYTHON_BASE="$BASE_IMAGE" --build-arg WHEELS=prebuilt --build-arg PIP_NO_INDEX=1 \
    -t "$IMAGE" "$context" >&2
  # What buildah leaves of the stage that only carries wheels/: its untagged image, and a working
  # container on it.
  local stage
  for stage in $("${PODMAN[@]}" images --quiet --filter label=dev.streamhouse.stage=wheels); do
    buildah containers --quiet --filter ancestor="$stage" | xargs --no-run-if-empty buildah rm >/dev/null
  done
  "${PODMAN[@]}" image prune --force --filter label=dev.streamhouse.stage=wheels >/dev/null
  echo "$IMAGE"
}

case ${1:-} in
  base) base ;;
  image) shift; image "$@" ;;
  run) shift; need podman runc; exec "${PODMAN[@]}" run "${ULIMITS[@]}" "$@" ;;
  podman) shift; need podman runc; exec "${PODMAN[@]}" "$@" ;;
  *) sed -n '2,13s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
esac
