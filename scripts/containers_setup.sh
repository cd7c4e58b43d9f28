#!/usr/bin/env bash
# Installs what container instances, image builds and `make base-image` need (Debian packages, as root):
# podman (runs instances: the devcluster's docker driver), buildah (builds images), skopeo (inspects them),
# runc (the OCI runtime these VMs can use; crun cannot, with hybrid cgroups), docker-registry (a local
# registry), debootstrap (the base image), uidmap, slirp4netns and fuse-overlayfs (podman's helpers) and
# catatonit (the init process of a task with `init = true`).
# Idempotent and fast: does nothing when every package is installed already. Needs root (or password-less sudo)
# and apt-get only when something is missing. The settings podman needs here are in scripts/containers.conf.
set -euo pipefail
PACKAGES=(podman buildah skopeo runc docker-registry debootstrap uidmap slirp4netns fuse-overlayfs catatonit)

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [ "$status" = installed ] || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null; then
    echo "containers-setup: no apt-get here: install ${missing[*]} with this system's package manager" >&2
    exit 1
fi
SUDO=()
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        echo "containers-setup: missing ${missing[*]}; run as root: sudo bash scripts/containers_setup.sh" >&2
        exit 1
    fi
fi
echo "containers-setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q >/dev/null
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
podman --version
