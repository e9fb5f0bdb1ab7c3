#!/usr/bin/env bash
# bench/gpu.sh [--dry-run]: the GPU-only figures in one prepared run (< 8 minutes on one
# H100 / H200): bf16 train-step MFU (small, base) against the card's spec and a measured
# matmul, cuDNN vs XLA attention with a non-prefix mask, the VAE vs diffusers on the GPU,
# and the sampler's seconds of video per second. Writes bench/gpu_results.md, which
# `python -m bench` merges into bench/RESULTS.md. --dry-run: toy sizes on any backend (CI).
#
# On a machine without a package index, carry the wheels omnijax needs beside its image's
# jax (see the README "Benchmarks" section): a .whl/ folder here is installed first.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/omnijax-site .whl/*.whl
  export PYTHONPATH=/tmp/omnijax-site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
exec python3 bench/gpu.py "$@"
