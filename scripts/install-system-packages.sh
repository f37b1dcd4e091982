#!/usr/bin/env bash
# Installs the Debian packages hrtrain needs, if any is missing (run as root, or with sudo available).
#   BLIS and oneDNN (the CPU backend's GEMMs; OpenBLAS as an alternative), OpenCL loader + headers, CLBlast,
#   PoCL (an OpenCL CPU device, so everything runs without a GPU),
#   clinfo, HDF5, Open MPI (mpirun, and libmpi that hrtrain loads at run time for data-parallel training);
#   with --with-browser, Chromium and a font (the report test renders the HTML page); with
#   --with-oclgrind, Oclgrind (CI runs every kernel on its simulated device: scripts/oclgrind-check.sh).
set -euo pipefail
packages=(ocl-icd-opencl-dev opencl-headers libclblast-dev pocl-opencl-icd clinfo libhdf5-dev)
packages+=(libblis4-openmp libopenblas0-pthread libdnnl2 openmpi-bin libopenmpi-dev)
for flag in "$@"; do
  case "$flag" in
    --with-browser) packages+=(chromium fonts-dejavu-core) ;;
    --with-oclgrind) packages+=(oclgrind) ;;
    *) echo "install-system-packages.sh: unknown option $flag" >&2; exit 1 ;;
  esac
done
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
