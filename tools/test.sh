#!/usr/bin/env bash
# Installs what is missing, builds difflow and runs the whole test suite (ctest).
# The Python packages safetensors and numpy are used only by one test that opens a difflow
# checkpoint with the reference safetensors reader; they are never needed to build or run difflow.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/build.sh
python3 -c "import safetensors.numpy, numpy" 2>/dev/null || python3 -m pip install -q safetensors numpy
cd build && ctest --output-on-failure -j2
