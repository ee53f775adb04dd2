#!/usr/bin/env bash
# Installs what is missing, builds difflow and runs the main job: flow matching with the
# fmnist-unet-s U-Net on Fashion-MNIST (about 5 minutes on 2 cores). Extra arguments go to
# `difflow train` (e.g. --steps 2000, --method edm, --out runs/mine).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/build.sh
# Short OpenMP spin-waits: no cost on an idle machine, and 1.5x faster training when other
# processes share the cores (docs/PERFORMANCE.md). libgomp reads this at start-up.
export GOMP_SPINCOUNT="${GOMP_SPINCOUNT:-1000}"
exec build/difflow train "$@"
