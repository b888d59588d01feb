#!/usr/bin/env bash
# `make image`: build deploy/Dockerfile with the container engine this machine has (docker when
# its daemon answers, else podman), the base image first when no registry can provide it.
#
#   deploy/image/build.sh [TAG]        (default edgellm:local; env: ENGINE, PLATFORM, BUILD_ARGS)
#
# Downloads in the build go through the host's CA bundle ($SSL_CERT_FILE) mounted read-only over
# the container's own (podman's `build -v`): a TLS-intercepting proxy's CA then works, and nothing
# of the host is copied into a layer.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=deploy/image/env.sh
source deploy/image/env.sh
tag=${1:-edgellm:local}
platform=${PLATFORM:-}
case "$(uname -m)" in x86_64) host_arch=amd64 ;; aarch64) host_arch=arm64 ;; *) host_arch=$(uname -m) ;; esac
arch=${platform#linux/}
arch=${arch:-$host_arch}

# The base the Dockerfile names: python:${PYTHON_VERSION}-slim-${DEBIAN} with the ARG defaults.
py=$(sed -n 's/^ARG PYTHON_VERSION=//p' deploy/Dockerfile)
debian=$(sed -n 's/^ARG DEBIAN=//p' deploy/Dockerfile)
base="docker.io/library/python:${py}-slim-${debian}"

# One tag holds one architecture: a base of the other architecture (left by an arm64 build) is
# replaced, not used.
have_base() {
  [ "$("$ENGINE" image inspect --format '{{.Architecture}}' "$base" 2>/dev/null)" = "$arch" ]
}
if ! have_base; then
  echo "== $base is not here; pulling it"
  if ! timeout 120 "$ENGINE" pull ${platform:+--platform "$platform"} "$base"; then
    echo "== no registry answers: building a local stand-in for $base (deploy/image/base.sh)"
    start=$(date +%s)
    bash deploy/image/base.sh "$ENGINE" "$base" "$([ "$arch" = "$host_arch" ] || echo "$arch")"
    echo "== base image built in $(( $(date +%s) - start )) s"
  fi
fi

args=(build -f deploy/Dockerfile -t "$tag" ${platform:+--platform "$platform"})
if [ "$ENGINE" = podman ]; then
  # --pull=never: the base just found or made is the one to use. uv reads SSL_CERT_FILE;
  # the path is the container's own bundle, which the mount replaces during the build only.
  # podman's default OCI format has no HEALTHCHECK (dropped with a warning; podman before 4.6
  # runs no health checks without systemd anyway): BUILD_ARGS="--format docker" keeps it.
  args+=(--pull=never --layers -v "$HOST_CA:$CONTAINER_CA:ro"
         --env "SSL_CERT_FILE=$CONTAINER_CA")
fi
# shellcheck disable=SC2206
args+=(${BUILD_ARGS:-} .)
echo "== $ENGINE ${args[*]}"
start=$(date +%s)
"$ENGINE" "${args[@]}"
seconds=$(( $(date +%s) - start ))
size=$("$ENGINE" image inspect --format '{{.Size}}' "$tag")
echo "== built $tag in $seconds s; size $(( size / 1000000 )) MB ($size bytes)"
