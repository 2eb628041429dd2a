#!/usr/bin/env bash
# A local Debian bookworm base image for docker/Dockerfile.cpu, built without any registry: debootstrap from a
# Debian mirror, then `docker import`. For hosts that reach Debian's mirror and PyPI but not Docker Hub,
# and for hosts whose HTTPS goes through a TLS-inspecting proxy: the host's CA bundle is copied in, and pip is
# told to use it (pip trusts its own certifi bundle otherwise).
#
#   sudo docker/make_base.sh [--force] [TAG]        # TAG defaults to bit-trt-base:bookworm
#   docker build -f docker/Dockerfile.cpu --build-arg BASE=bit-trt-base:bookworm -t bit-trt:cpu .
#
# Idempotent: an existing TAG is kept (exit 0) unless --force. Atomic: the root is built in a temporary folder
# and imported as an untagged image, which gets TAG only once it is complete; the folder is removed on any exit.
# Needs root, debootstrap and a running Docker engine. Environment:
#   DEBIAN_MIRROR  default http://deb.debian.org/debian (DEBIAN_SECURITY_MIRROR: .../debian-security)
#   CA_BUNDLE      default /etc/ssl/certs/ca-certificates.crt (or /etc/pki/tls/certs/ca-bundle.crt)
#   TMPDIR         where the root is built (about 250 MB; must allow device files and exec: not a nodev tmpfs)
set -euo pipefail

SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
# What Dockerfile.cpu's apt step would otherwise install: python3 (3.11), venv, libpython3.11 (the shared
# library that Triton's Python backend stub, bundled by PyTriton, links against), tini (PID 1 that forwards
# signals), ca-certificates.
PACKAGES="ca-certificates,python3,python3-venv,libpython3.11,tini"

usage() {
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

force=0
tag=bit-trt-base:bookworm
while [ $# -gt 0 ]; do
    case "$1" in
        --force) force=1 ;;
        -h | --help) usage 0 ;;
        -*) echo "make_base.sh: unknown option $1" >&2; usage 2 ;;
        *) tag=$1 ;;
    esac
    shift
done

die() {
    echo "make_base.sh: $*" >&2
    exit 1
}

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "no running Docker engine (docker info fails)"
if [ "$force" = 0 ] && docker image inspect "$tag" >/dev/null 2>&1; then
    echo "make_base.sh: $tag already exists (--force rebuilds it)"
    exit 0
fi
[ "$(id -u)" = 0 ] || die "debootstrap needs root: run it with sudo"
command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"

ca=${CA_BUNDLE:-}
if [ -z "$ca" ]; then
    for candidate in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
        if [ -s "$candidate" ]; then
            ca=$candidate
            break
        fi
    done
fi
[ -n "$ca" ] && [ -s "$ca" ] || die "no CA bundle found: set CA_BUNDLE to the host's PEM bundle"
grep -q 'BEGIN CERTIFICATE' "$ca" || die "$ca is not a PEM certificate bundle"

work=$(mktemp -d "${TMPDIR:-/var/tmp}/bit-trt-base.XXXXXX")
cleanup() {
    # debootstrap mounts /proc and /sys inside the root while it runs; an interrupted run can leave them
    # mounted. Unmount whatever is under the work folder (deepest first), then remove it without crossing
    # into any mount that is left.
    local mounts
    mounts=$(awk -v w="$work/" 'index($2, w) == 1 {print $2}' /proc/self/mounts | sort -r)
    for m in $mounts; do
        umount -l "$m" 2>/dev/null || true
    done
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

root=$work/root
echo "make_base.sh: debootstrap $SUITE ($PACKAGES) from $MIRROR into $root"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    die "debootstrap failed (log above)"
}

# Security and point-release updates, like Debian's own images.
cat >"$root/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
# No recommends, no docs: what Debian's slim images configure.
cat >"$root/etc/apt/apt.conf.d/90bit-trt-slim" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
EOF

# The host's trust store: as the system bundle (used by apt, OpenSSL, Python's ssl), and as a local CA file so
# that a later update-ca-certificates inside the image keeps it.
install -m 0644 "$ca" "$root/usr/local/share/ca-certificates/bit-trt-host-bundle.crt"
install -m 0644 "$ca" "$root/etc/ssl/certs/ca-certificates.crt"
# pip verifies against certifi unless told otherwise.
cat >"$root/etc/pip.conf" <<'EOF'
[global]
cert = /etc/ssl/certs/ca-certificates.crt
timeout = 120
EOF

# What the image does not need: downloaded packages, package lists, man pages and docs.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/* \
    "$root"/usr/share/man/* "$root"/usr/share/doc/* "$root"/tmp/* "$root"/var/tmp/*
find "$root" -name '__pycache__' -prune -exec rm -rf {} +

echo "make_base.sh: importing into Docker"
id=$(tar --numeric-owner -C "$root" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["/bin/bash"]' \
    -m "bit-trt base: Debian $SUITE minbase + $PACKAGES, host CA bundle" - )
docker run --rm "$id" python3 -c 'import ssl, sys, venv' || {
    docker rmi "$id" >/dev/null 2>&1 || true
    die "the imported image does not run python3"
}
# Only a complete, working import gets the tag.
docker tag "$id" "$tag"
echo "make_base.sh: built $tag ($id, $(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
