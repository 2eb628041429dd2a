#!/usr/bin/env bash
# bit-trt's ONNX Runtime kernels prebuilt for an image (engine/ort_kernel_library.py), in the throwaway `kernels`
# stage of docker/Dockerfile.cpu and docker/Dockerfile.ray. Two steps, so that Docker caches the first across source
# edits:
#   ort_kernels.sh toolchain          a C compiler, and ONNX Runtime's C API header in /tmp/onnxruntime-dev
#   ort_kernels.sh build WHEELS OUT   the package from WHEELS (without its dependencies: building needs the standard
#                                     library alone) builds one library per x86-64 level into the new folder OUT
# Only OUT reaches the image: it needs neither the compiler nor the header.
set -euo pipefail
here=$(dirname "$0")
header=/tmp/onnxruntime-dev
case "${1:-}" in
toolchain)
    export DEBIAN_FRONTEND=noninteractive  # the Dockerfile's ARG does not reach this stage
    apt-get update
    apt-get install -y --no-install-recommends gcc libc6-dev
    rm -rf /var/lib/apt/lists/*
    bash "$here/onnxruntime_header.sh" "$header"
    ;;
build)
    wheels=${2:?usage: ort_kernels.sh build WHEELS OUT}
    out=${3:?usage: ort_kernels.sh build WHEELS OUT}
    python3 -m venv /tmp/kernels-venv
    /tmp/kernels-venv/bin/pip install --no-deps "$wheels"/bit_trt-*.whl
    mkdir -p "$(dirname "$out")"
    BIT_TRT_ORT_INCLUDE="$header/usr/include/onnxruntime" \
        /tmp/kernels-venv/bin/python -m bit_trt.engine.ort_kernel_library "$out"
    ;;
*)
    echo "usage: ort_kernels.sh toolchain | build WHEELS OUT" >&2
    exit 2
    ;;
esac
