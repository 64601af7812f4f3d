#!/usr/bin/env bash
# The cache layer's policy overhead on the lent GPU machine, from the repository root:
#
#   bash tests/device/run_gpu_cache_bench.sh   (run with carry: [".deps"])
#
# Builds kvscope (tests/device/build_gpu.sh), then runs tests/device/gpu_cache_bench.py:
# each method at a 50% budget beside the full cache, and transformers as the peer.
# BENCH_ARGS: extra arguments for gpu_cache_bench.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/device/build_gpu.sh

echo "== cache bench"
# shellcheck disable=SC2086  # BENCH_ARGS is a list of words
PYTHONUNBUFFERED=1 "$PYTHON" tests/device/gpu_cache_bench.py --kvscope "$kvscope" ${BENCH_ARGS:-}
