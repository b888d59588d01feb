#!/usr/bin/env bash
# `make image`: build deploy/Dockerfile with the container engine this machine has (docker when
# its daemon answers, else podman), the base image first when no registry can provide it.
#
#   deploy/image/build.sh [TAG]        (default edgellm:local; env: ENGINE, PLATFORM, BUILD_ARGS,
#                                       DOCKERFILE and CONTEXT, default deploy/Dockerfile and .;
#                                       another Dockerfile needs a stage named `build`)
#
# A rebuild leaves nothing of the image it replaces behind: every image of the build carries the
# label io.edgellm.image=TAG, and what the rebuild left untagged and unused under that label (the
# replaced image, the replaced build stage, with their own layers) is removed. Otherwise podman's
# layer cache keeps over a gigabyte (the venv, the baked models) per rebuild as <none> images.
#
# Downloads in the build go through the host's CA bundle ($SSL_CERT_FILE) mounted read-only over
# the container's own (podman's `build -v`): a TLS-intercepting proxy's CA then works, and nothing
# of the host is copied into a layer.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=deploy/image/env.sh
source deploy/image/env.sh
# One build at a time on a machine: the engine's images are shared, and builds for two
# architectures would point the base name (below) at each other's base mid-build.
exec 9>/tmp/edgellm-image-build.lock
flock 9
tag=${1:-edgellm:local}
dockerfile=${DOCKERFILE:-deploy/Dockerfile}
context=${CONTEXT:-.}
label="io.edgellm.image=$tag"
platform=${PLATFORM:-}
case "$(uname -m)" in x86_64) host_arch=amd64 ;; aarch64) host_arch=arm64 ;; *) host_arch=$(uname -m) ;; esac
arch=${platform#linux/}
arch=${arch:-$host_arch}

# The base the Dockerfile names: python:${PYTHON_VERSION}-slim-${DEBIAN} with the ARG defaults.
py=$(sed -n 's/^ARG PYTHON_VERSION=//p' "$dockerfile")
debian=$(sed -n 's/^ARG DEBIAN=//p' "$dockerfile")
base="docker.io/library/python:${py}-slim-${debian}"

# One tag holds one architecture, and the Dockerfile names the base without one. So each
# architecture's base is also kept under its own local name, and the base name is pointed at the
# one this build needs: an arm64 build and an amd64 build in turn neither re-make the base nor
# invalidate each other's layer cache.
kept="localhost/edgellm-base:${py}-slim-${debian}-${arch}"
is_here() {  # IMAGE: it is local and built for this build's architecture
  [ "$("$ENGINE" image inspect --format '{{.Architecture}}' "$1" 2>/dev/null)" = "$arch" ]
}
have_base() { is_here "$base"; }
if ! have_base && is_here "$kept"; then
  echo "== $base: the $arch one kept as $kept"
  "$ENGINE" tag "$kept" "$base"
fi
if ! have_base; then
  echo "== $base is not here for $arch; pulling it"
  if ! timeout 120 "$ENGINE" pull ${platform:+--platform "$platform"} "$base"; then
    echo "== no registry answers: building a local stand-in for $base (deploy/image/base.sh)"
    start=$(date +%s)
    bash deploy/image/base.sh "$ENGINE" "$base" "$([ "$arch" = "$host_arch" ] || echo "$arch")"
    echo "== base image built in $(( $(date +%s) - start )) s"
  fi
fi
"$ENGINE" tag "$base" "$kept"

args=(build -f "$dockerfile" ${platform:+--platform "$platform"} --label "$label")
if [ "$ENGINE" = podman ]; then
  # --pull=never: the base just found or made is the one to use. uv reads SSL_CERT_FILE;
  # the path is the container's own bundle, which the mount replaces during the build only.
  # --format docker: podman's default OCI format drops the Dockerfile's HEALTHCHECK.
  args+=(--pull=never --layers --format docker -v "$HOST_CA:$CONTAINER_CA:ro"
         --env "SSL_CERT_FILE=$CONTAINER_CA")
fi
# shellcheck disable=SC2206
args+=(${BUILD_ARGS:-})
start=$(date +%s)
if [ "$ENGINE" = podman ]; then
  # podman keeps its layer cache as images: the build stage's last one has no child and no tag,
  # so it would look like a leftover. Tagging the stage (TAG's repository + "-build") keeps it,
  # and with it the compiled llama.cpp, for the next build.
  repo=$tag version=latest
  case "${tag##*/}" in *:*) repo=${tag%:*} version=${tag##*:} ;; esac
  echo "== $ENGINE ${args[*]} --target build -t $repo-build:$version $context"
  "$ENGINE" "${args[@]}" --target build -t "$repo-build:$version" "$context"
fi
echo "== $ENGINE ${args[*]} -t $tag $context"
"$ENGINE" "${args[@]}" -t "$tag" "$context"
seconds=$(( $(date +%s) - start ))
size=$("$ENGINE" image inspect --format '{{.Size}}' "$tag")
echo "== built $tag in $seconds s; size $(( size / 1000000 )) MB ($size bytes)"

# What earlier builds of this tag left: untagged images no other image builds on. Removing one
# removes its parents that nothing else uses; shared layers stay.
removed=0
for id in $("$ENGINE" images -q --filter dangling=true --filter "label=$label"); do
  if "$ENGINE" rmi "$id" >/dev/null 2>&1; then removed=$((removed + 1)); fi
done
echo "== removed $removed untagged image(s) left by earlier builds of $tag"
