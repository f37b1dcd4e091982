#!/usr/bin/env bash
# Installs the Debian packages hrtrain needs, if any is missing (run as root, or with sudo available).
#   BLIS (the CPU backend's GEMMs; OpenBLAS as its alternative), OpenCL loader + headers, CLBlast,
#   PoCL (an OpenCL CPU device, so everything runs without a GPU),
#   clinfo, HDF5; and, with --with-browser, Chromium and a font (the report test renders the HTML page).
set -euo pipefail
packages=(ocl-icd-opencl-dev opencl-headers libclblast-dev pocl-opencl-icd clinfo libhdf5-dev
          libblis4-openmp libopenblas0-pthread)
[ "${1:-}" = "--with-browser" ] && packages+=(chromium fonts-dejavu-core)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi
