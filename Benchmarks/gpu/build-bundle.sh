#!/usr/bin/env bash
# Builds a self-contained hrtrain for a Linux GPU machine that has an OpenCL driver but no Swift toolchain:
# a release binary with the Swift runtime and Foundation linked in statically (--static-swift-stdlib), the
# shared libraries it needs that are not part of a base system (CLBlast, the OpenCL ICD loader, HDF5, the CPU
# backend's BLIS, OpenBLAS and oneDNN, and their dependencies) in lib/, run-on-gpu.sh (which finds the GPU's OpenCL
# driver and runs the PyTorch peer on CUDA, `verify`, `bench`, one full training epoch, `tune` and `bench` there,
# then the CPU backend next to PyTorch on the node's CPU), and the PyTorch peer in peers/.
#
#   Benchmarks/gpu/build-bundle.sh [OUTPUT_DIR]      # default: .build-gpu-bundle/hrtrain-gpu (and .tar.xz)
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
# Every shared library the binary loads, except the C runtime (glibc: its libraries must match each other) and
# the dynamic loader, which the target has.
# The BLAS libraries the CPU backend opens at run time (dlopen: ldd does not see them) travel too, under their
# sonames, which the backend tries after Debian's paths, so LD_LIBRARY_PATH=lib finds them.
blas=(/usr/lib/x86_64-linux-gnu/blis-openmp/libblis.so.4 /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0
  /usr/lib/x86_64-linux-gnu/libdnnl.so.2)
for lib in "${blas[@]}"; do
  if [ -e "$lib" ]; then cp -L "$lib" "$out/lib/"; else echo "build-bundle.sh: no $lib (CPU backend BLAS)" >&2; fi
done
for binary in "$out/hrtrain" "${blas[@]}"; do
  [ -e "$binary" ] && ldd "$binary"
done | awk '/=> \// { print $3 }' | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*|libresolv.so.*|libutil.so.*|libanl.so.*) ;;
    libnss_*|ld-linux*|libgcc_s.so.*|libstdc++.so.*) ;;
    *) cp -L "$lib" "$out/lib/" ;;
  esac
done
cp Benchmarks/gpu/run-on-gpu.sh "$out/"
mkdir -p "$out/peers"
cp Benchmarks/peers/torch_peer.py Benchmarks/peers/peer_common.py "$out/peers/"
# One file to carry to the GPU machine (the device tool takes 64 MiB; the bundle is about 205 MB unpacked).
tar -C "$(dirname "$out")" -cf - "$(basename "$out")" | xz -T0 -6 > "$out.tar.xz"
echo "bundle in $out ($(du -sh "$out" | cut -f1)), packed as $out.tar.xz ($(du -sh "$out.tar.xz" | cut -f1)):"
ls -la "$out" "$out/lib"
