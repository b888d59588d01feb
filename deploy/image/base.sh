#!/usr/bin/env bash
# A local stand-in for the Dockerfile's base image, for machines that reach Debian's mirror but no
# container registry. `FROM python:3.11-slim-bookworm` then resolves to this image: a Debian
# bookworm root file system (debootstrap) with Debian's Python 3.11 where the official image has
# its own (`python`, `pip` and `python3.11` in /usr/local/bin), imported with `podman import`.
#
#   deploy/image/base.sh ENGINE IMAGE [ARCH]      e.g. podman docker.io/library/python:3.11-slim-bookworm
#
# Differences from the official image that the Dockerfile does not rely on: Python is Debian's
# 3.11 build, not python.org's; pip installs into the system site-packages (Debian's
# EXTERNALLY-MANAGED marker is removed, as the official image has none).
set -euo pipefail
engine=$1 image=$2 arch=${3:-}
suite=bookworm
mirror=${DEBIAN_MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
mirror=${mirror:-http://deb.debian.org/debian}
root=$(mktemp -d "${TMPDIR:-/tmp}/edgellm-base.XXXXXX")
trap 'rm -rf "$root"' EXIT
opts=(--variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates)
if [ -n "$arch" ] && [ "$arch" != "$(dpkg --print-architecture)" ]; then
  # Foreign architecture: the second stage runs under qemu-user-static (binfmt).
  opts+=(--arch "$arch" --foreign)
fi
echo "debootstrap $suite from $mirror${arch:+ ($arch)}"
debootstrap "${opts[@]}" "$suite" "$root" "$mirror" >"$root.log" 2>&1 || { tail -20 "$root.log"; exit 1; }
if [ -x "$root/debootstrap/debootstrap" ]; then
  cp /usr/bin/qemu-aarch64-static "$root/usr/bin/"
  chroot "$root" /debootstrap/debootstrap --second-stage >"$root.log" 2>&1 || { tail -20 "$root.log"; exit 1; }
  rm -f "$root/usr/bin/qemu-aarch64-static"
fi
rm -f "$root.log"
# The mirror debootstrap used, for the Dockerfile's `apt-get update` (updates and security too).
cat >"$root/etc/apt/sources.list" <<LIST
deb $mirror $suite main
deb $mirror $suite-updates main
LIST
rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
ln -sf /usr/bin/python3 "$root/usr/local/bin/python"
ln -sf /usr/bin/python3 "$root/usr/local/bin/python3"
ln -sf /usr/bin/python3.11 "$root/usr/local/bin/python3.11"
ln -sf /usr/bin/pip3 "$root/usr/local/bin/pip"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | "$engine" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PYTHON_VERSION=3.11' \
  --change 'CMD ["python3"]' \
  ${arch:+--arch "$arch"} \
  - "$image"
