# Sourced by the image and container scripts: which engine, and the settings this project's own
# runs use with podman (containers.conf beside this file).
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ -z "${ENGINE:-}" ]; then
  if command -v docker >/dev/null && timeout 10 docker info >/dev/null 2>&1; then
    ENGINE=docker
  elif command -v podman >/dev/null; then
    ENGINE=podman
  else
    echo "neither a docker daemon nor podman is available" >&2
    exit 1
  fi
fi
export ENGINE
if [ "$ENGINE" = podman ]; then
  export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
fi
# The host's CA bundle, mounted read-only over the container's own where a container downloads.
HOST_CA=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
CONTAINER_CA=/etc/ssl/certs/ca-certificates.crt
export HOST_CA CONTAINER_CA
