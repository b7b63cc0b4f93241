#!/usr/bin/env bash
# Wheels of the dependencies that the lent GPU machine's image lacks (its Python is 3.12 and has
# torch, numpy, scipy, timm, opencv, pytest, ... but not these), at the versions installed here,
# into .whl/ (git-ignored; about 1 MB). Run it on the development machine before a GPU call and
# name .whl in the call's carry; benchmarks/gpu_env.sh installs them there.
#
# Usage: bash benchmarks/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PURE=(omegaconf antlr4-python3-runtime fvcore iopath yacs termcolor)  # pure Python: built here
BINARY=(pycocotools)  # compiled: the CPython 3.12 manylinux wheel
pinned() { for name in "$@"; do python -c "import importlib.metadata as m; print('$name==' + m.version('$name'))"; done; }
rm -rf .whl && mkdir .whl
mapfile -t PURE_PINNED < <(pinned "${PURE[@]}")
mapfile -t BINARY_PINNED < <(pinned "${BINARY[@]}")
pip wheel -q --no-deps -w .whl "${PURE_PINNED[@]}"
pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "${BINARY_PINNED[@]}"
ls .whl
