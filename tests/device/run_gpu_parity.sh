#!/usr/bin/env bash
# The parity check on the lent GPU machine, from the repository root:
#
#   bash tests/device/run_gpu_parity.sh        (run with carry: [".deps"])
#
# Builds kvscope (tests/device/build_gpu.sh), then runs tests/device/gpu_parity.py
# (transformers vs kvscope on CUDA). PARITY_ARGS: extra arguments for gpu_parity.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/device/build_gpu.sh

echo "== parity"
# shellcheck disable=SC2086  # PARITY_ARGS is a list of words
PYTHONUNBUFFERED=1 "$PYTHON" tests/device/gpu_parity.py --kvscope "$kvscope" ${PARITY_ARGS:-}
