#!/usr/bin/env bash
# Installs the Debian packages difflow needs, only those that are missing.
# Build: cmake, a C compiler, OpenBLAS (OpenMP build), oneDNN (dnnl_sgemm; optional for the build), cJSON, libpng, zlib, cmocka (tests).
# Data: dataset-fashion-mnist (IDX files under /usr/share/datasets/fashion-mnist); fortunes (the
# default text corpus of difflow lm, /usr/share/games/fortunes).
# Tests: python3 and python3-venv (test fixtures only; difflow itself never runs Python).
# tars (UI-TARS runtime): libcurl, Xlib + XTest + Xext (MIT-SHM), OpenSSL (base64); xvfb and xauth for its tests.
set -euo pipefail
pkgs=(cmake gcc make pkg-config libopenblas-openmp-dev libcjson-dev libpng-dev zlib1g-dev libcmocka-dev
      libdnnl-dev dataset-fashion-mnist fortunes python3 python3-venv
      libcurl4-openssl-dev libx11-dev libxtst-dev libxext-dev libssl-dev xvfb xauth)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "difflow: installing ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
