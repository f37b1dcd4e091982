#!/usr/bin/env bash
# Builds a self-contained hrtrain for a Linux GPU machine that has an OpenCL driver but no Swift toolchain:
# a release binary with the Swift runtime and Foundation linked in statically (--static-swift-stdlib), the
# shared libraries it needs that are not part of a base system (CLBlast, the OpenCL ICD loader, HDF5 and their
# dependencies) in lib/, run-on-gpu.sh (which finds the GPU's OpenCL driver and runs the PyTorch peer on CUDA,
# `verify`, `bench`, `tune`, `bench` and one full training epoch there), and the PyTorch peer in peers/.
#
#   Benchmarks/gpu/build-bundle.sh [OUTPUT_DIR]      # default: .build-gpu-bundle/hrtrain-gpu
#
# The bundled libOpenCL.so.1 is only the ICD loader; the GPU's vendor library comes with its driver. Where the
# driver is not registered in /etc/OpenCL/vendors (containers), run-on-gpu.sh searches for it and registers it.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-.build-gpu-bundle/hrtrain-gpu}
swift build -c release --static-swift-stdlib --scratch-path .build-static
rm -rf "$out"
mkdir -p "$out/lib"
cp .build-static/release/hrtrain "$out/"
# Every shared library the binary loads, except the C runtime and the dynamic loader, which the target has.
ldd "$out/hrtrain" | awk '/=> \// { print $3 }' | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*|ld-linux*|libgcc_s.so.*|libstdc++.so.*) ;;
    *) cp -L "$lib" "$out/lib/" ;;
  esac
done
cp Benchmarks/gpu/run-on-gpu.sh "$out/"
mkdir -p "$out/peers"
cp Benchmarks/peers/torch_peer.py Benchmarks/peers/peer_common.py "$out/peers/"
echo "bundle in $out ($(du -sh "$out" | cut -f1)):"
ls -la "$out" "$out/lib"
