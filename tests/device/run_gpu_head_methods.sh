#!/usr/bin/env bash
# The head-aware methods on the lent GPU machine against the CPU, from the repository root:
#
#   bash tests/device/run_gpu_head_methods.sh   (run with carry: [".deps"])
#
# Builds kvscope (tests/device/build_gpu.sh), then runs tests/device/gpu_head_methods.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/device/build_gpu.sh

echo "== head-aware methods, CPU vs CUDA"
PYTHONUNBUFFERED=1 "$PYTHON" tests/device/gpu_head_methods.py --kvscope "$kvscope"
