#!/usr/bin/env bash
# Installs what is missing, builds difflow and runs the whole test suite (ctest).
# The Python packages safetensors and numpy are used only by one test that opens a difflow
# checkpoint with the reference safetensors reader; they are never needed to build or run difflow.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/build.sh
# A private virtual environment in build/ (Debian's system Python refuses global pip installs).
if ! build/pyenv/bin/python -c "import safetensors.numpy, numpy" 2>/dev/null; then
  python3 -m venv build/pyenv
  build/pyenv/bin/python -m pip install -q --disable-pip-version-check safetensors numpy
fi
export DFL_PYTHON="$PWD/build/pyenv/bin/python"
cd build && ctest --output-on-failure -j2
