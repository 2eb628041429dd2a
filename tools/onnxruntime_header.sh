#!/usr/bin/env bash
# ONNX Runtime's C API header, which engine/ort_kernel_library.py builds bit-trt's CPU kernels against, on a Debian
# host whose release has no libonnxruntime-dev (Debian 12). Downloads (does not install) Debian 13's package with a
# private apt state built from this host's own Debian sources, unpacks it under OUT and prints the include folder
# to pass as BIT_TRT_ORT_INCLUDE. Nothing of the host's apt state or packages changes. Where OUT already holds the
# header, nothing is downloaded. (On Debian 13 or Ubuntu, `apt-get install libonnxruntime-dev` is simpler.)
#
#   include=$(bash tools/onnxruntime_header.sh .onnxruntime-dev) && export BIT_TRT_ORT_INCLUDE="$include"
set -euo pipefail
out=${1:?usage: onnxruntime_header.sh OUT_FOLDER}
suite=${ORT_HEADER_SUITE:-trixie}
include="$out/usr/include/onnxruntime"
if [ -f "$include/onnxruntime_c_api.h" ]; then
    echo "$include"
    exit 0
fi
sources=/etc/apt/sources.list.d/debian.sources
list=/etc/apt/sources.list
state=$(mktemp -d)
trap 'rm -rf "$state"' EXIT
mkdir -p "$state/parts" "$state/lists/partial" "$state/cache/archives/partial" "$out"
if [ -f "$sources" ]; then
    # The host's main Debian entry (URIs, key) with the suite changed; the security and update suites are not needed.
    awk -v suite="$suite" '
        /^Suites:/ { if ($2 ~ /-security$/) { skip = 1 } else { $0 = "Suites: " suite } }
        /^$/ { if (!skip) printf "%s", block; block = ""; skip = 0; next }
        { block = block $0 "\n" }
        END { if (!skip) printf "%s", block }
    ' "$sources" >"$state/parts/header.sources"
else
    # One-line sources (debootstrap writes them, as docker/make_base.sh's base has): the first main entry's mirror,
    # its [options] dropped, with Debian's archive keyring, which holds the next release's keys too.
    mirror=""
    [ -f "$list" ] && mirror=$(sed -E 's/\[[^]]*\]//' "$list" | awk '$1 == "deb" && $3 !~ /-security$/ { print $2; exit }')
    [ -n "$mirror" ] || { echo "no Debian entry in $sources or $list: not a Debian host" >&2; exit 1; }
    printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: %s\n' \
        "$mirror" "$suite" /usr/share/keyrings/debian-archive-keyring.gpg >"$state/parts/header.sources"
fi
apt_private=(-q -o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$state/parts"
    -o "Dir::State::Lists=$state/lists" -o "Dir::Cache=$state/cache" -o APT::Sandbox::User=root)
apt-get "${apt_private[@]}" update >/dev/null
(cd "$state" && apt-get "${apt_private[@]}" download libonnxruntime-dev >/dev/null)
dpkg-deb -x "$state"/libonnxruntime-dev_*.deb "$out"
[ -f "$include/onnxruntime_c_api.h" ] || { echo "libonnxruntime-dev held no onnxruntime_c_api.h" >&2; exit 1; }
echo "$include"
