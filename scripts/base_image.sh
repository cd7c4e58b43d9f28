#!/usr/bin/env bash
# `make base-image`: builds localhost/chutes-base:bookworm, the local Python base image that the container tests,
# the benchmarks, the demo and users behind an air gap build on (no registry on the internet is needed).
#
# Debian bookworm from debootstrap (--variant=minbase) with python3 (3.11), python3-pip and ca-certificates,
# imported with `podman import`. Debian's PEP 668 marker (EXTERNALLY-MANAGED) is removed and
# PIP_BREAK_SYSTEM_PACKAGES=1 set, so a plain `pip install X` in a RUN step installs into the interpreter that
# `python3 -m chutes.runtime` runs on (also after an `apt-get upgrade` in the image brings the marker back).
#
# Cached: does nothing when the image is already in local storage (CHUTES_BASE_IMAGE_REBUILD=1 rebuilds it).
# Needs root (debootstrap) and about 1.5 minutes. Packages come from the Debian mirror this machine's apt uses
# (/etc/apt/sources.list*), or CHUTES_DEBIAN_MIRROR.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
IMAGE="${CHUTES_BASE_IMAGE:-localhost/chutes-base:bookworm}"
SUITE=bookworm
INCLUDE=python3,python3-pip,ca-certificates

say() { echo "base-image: $*"; }

for tool in podman debootstrap; do
    if ! command -v "$tool" >/dev/null; then
        say "$tool is not installed: run \`make containers\` (or scripts/containers_setup.sh as root) first" >&2
        exit 1
    fi
done
# podman needs the project's settings on these machines (runc, rlimits) for the check at the end.
if [ -z "${CONTAINERS_CONF:-}" ] && command -v runc >/dev/null; then
    export CONTAINERS_CONF="$HERE/containers.conf"
fi

if [ "${CHUTES_BASE_IMAGE_REBUILD:-0}" != 1 ] && podman image exists "$IMAGE"; then
    say "$IMAGE is already in local storage (cached; CHUTES_BASE_IMAGE_REBUILD=1 rebuilds it)"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    say "debootstrap needs root: run \`sudo make base-image\`" >&2
    exit 1
fi

# The mirror apt uses here for $SUITE (deb822 .sources files first, then one-line sources.list entries).
mirror_from_apt() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v suite="$SUITE" '
            function flush() { if (uris != "" && types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ")) { split(uris, u, " "); print u[1]; found = 1; exit } }
            /^[[:space:]]*$/ { flush(); uris = ""; suites = ""; types = ""; next }
            /^Types:/ { sub(/^Types:[[:space:]]*/, ""); types = $0 }
            /^URIs:/ { sub(/^URIs:[[:space:]]*/, ""); uris = $0 }
            /^Suites:/ { sub(/^Suites:[[:space:]]*/, ""); suites = $0 }
            END { if (!found) flush() }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        sed -E 's/\[[^]]*\]//' "$f" | awk -v suite="$SUITE" '$1 == "deb" && $3 == suite { print $2 }'
    done
}
MIRROR="${CHUTES_DEBIAN_MIRROR:-$(mirror_from_apt | head -n 1)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"

WORK="$(mktemp -d "${TMPDIR:-/var/tmp}/chutes-base-image.XXXXXX")"
ROOTFS="$WORK/rootfs"
cleanup() {
    # debootstrap mounts /proc and /sys in the new root while it installs; a failed run may leave them mounted,
    # and nothing of the host must be removed through them.
    local m
    for m in $(findmnt -rn -o TARGET | grep -F "$ROOTFS" | sort -r); do umount -l "$m" || true; done
    rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

started=$SECONDS
say "debootstrap --variant=minbase $SUITE from $MIRROR (about 1.5 minutes)"
if ! debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
    tail -n 30 "$WORK/debootstrap.log" >&2
    [ -f "$ROOTFS/debootstrap/debootstrap.log" ] && tail -n 30 "$ROOTFS/debootstrap/debootstrap.log" >&2
    say "debootstrap failed (mirror $MIRROR; set CHUTES_DEBIAN_MIRROR to use another)" >&2
    exit 1
fi

# Trim what an image does not need; the host's resolver and name are podman's to provide at run time.
rm -f "$ROOTFS"/usr/lib/python3*/EXTERNALLY-MANAGED
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/lib/apt/lists/* \
    "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/locale/* \
    "$ROOTFS"/var/log/*.log "$ROOTFS"/var/log/apt/* "$ROOTFS"/tmp/* "$ROOTFS"/root/.cache
: >"$ROOTFS/etc/resolv.conf"
echo localhost >"$ROOTFS/etc/hostname"

say "podman import → $IMAGE"
tar --numeric-owner --xattrs -C "$ROOTFS" -c . | podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PYTHONUNBUFFERED=1' \
    --change 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' \
    --change 'ENV PIP_ROOT_USER_ACTION=ignore' \
    --change 'ENV PIP_DISABLE_PIP_VERSION_CHECK=1' \
    --change 'WORKDIR /' \
    --change "LABEL org.opencontainers.image.description=\"Debian $SUITE minbase with python3 and pip (chutes-nomad make base-image)\"" \
    --change 'CMD ["python3"]' \
    --message "debootstrap --variant=minbase --include=$INCLUDE $SUITE $MIRROR" \
    --quiet - "$IMAGE" >/dev/null

# Proof that it works: Python 3.11 with pip, and nothing left that makes pip refuse the system interpreter.
check='import sys, sysconfig, pathlib; assert sys.version_info[:2] == (3, 11), sys.version; '
check+='assert not (pathlib.Path(sysconfig.get_path("stdlib")) / "EXTERNALLY-MANAGED").exists(); print(sys.version.split()[0])'
version="$(podman run --rm --network none "$IMAGE" python3 -c "$check")"
podman run --rm --network none "$IMAGE" python3 -m pip --version >/dev/null
size="$(podman image inspect --format '{{.Size}}' "$IMAGE")"
say "$IMAGE ready: Python $version, $((size / 1000000)) MB, in $((SECONDS - started)) s"
