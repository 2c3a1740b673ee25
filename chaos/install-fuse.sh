#!/usr/bin/env bash
# Install FUSE 3 (the fusermount3 helper and libfuse3) for the power-loss filesystem
# (memsys.testing.powerloss); its Python binding, mfusepy, loads libfuse3 through ctypes.
# Idempotent and quiet; refreshes the package lists only when the packages are not found.
set -euo pipefail
pkgs=(fuse3 libfuse3-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; then
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
echo "installed: ${missing[*]}"
