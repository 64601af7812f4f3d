#!/usr/bin/env bash
# Builds kvscope for the lent GPU machine, from the repository root (sourced by the
# run_gpu_*.sh scripts; sets $kvscope to the binary):
#
#   source tests/device/build_gpu.sh            (run with carry: [".deps"])
#
# Uses the `gpu` preset against python3's CUDA libtorch. That machine reaches no
# registry, so nlohmann_json, CLI11, DLPack, PCRE2, stb and SQLite come from .deps/
# (tests/device/pack_deps.sh, run beforehand on a machine that has them). Environment:
# PYTHON (default python3), JOBS (default: all cores), CMAKE_ARGS (extra configure arguments).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
deps=$PWD/.deps
[ -d "$deps/include/nlohmann" ] || { echo "no .deps/: run tests/device/pack_deps.sh here first, and carry .deps" >&2; exit 1; }

echo "== toolchain"
for tool in g++ cmake ninja pkg-config nvcc; do
    printf '%-11s %s\n' "$tool" "$(command -v $tool >/dev/null && $tool --version 2>&1 | head -n1 || echo MISSING)"
done
torch_prefix=$("$PYTHON" -c 'import torch; print(torch.utils.cmake_prefix_path)')
torch_lib=$(cd "$torch_prefix/../../lib" && pwd)
# pip's CUDA libraries (nvidia/*/lib) that libtorch_cuda needs, for the linker: without
# -rpath-link it resolves them through the CUDA toolkit's folder, whose NCCL may be older
# than torch's (undefined ncclCommGrow & co.). At run time torch's own RPATH finds them.
rpath_link=$(cd "$torch_lib/../.." && ls -d nvidia/*/lib 2>/dev/null | sed "s|^|$PWD/|" | paste -sd: || true)
"$PYTHON" -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda,
      "| transformers", transformers.__version__, "|", torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")'
echo "torch cmake prefix: $torch_prefix"

# The .pc files were packed with a placeholder prefix: point them at this checkout.
sed -i "s|^prefix=.*|prefix=$deps|" "$deps"/lib/pkgconfig/*.pc
export PKG_CONFIG_PATH="$deps/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
# CMake puts .deps/lib in the binary's RPATH; this also covers a build without one.
export LD_LIBRARY_PATH="$deps/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

echo "== build (preset gpu)"
start=$SECONDS
# CMAKE_LIBRARY_PATH: TorchConfig's find_library calls search the system folders before
# torch's own lib/, so a Debian libtorch-dev beside the pip torch would win without it.
# No GLFW headers there: the GUI stays off (the preset says so too; this keeps it explicit).
cmake --preset gpu -DKVSCOPE_GUI=OFF -DCMAKE_PREFIX_PATH="$torch_prefix;$deps" -DCMAKE_LIBRARY_PATH="$torch_lib" \
      ${rpath_link:+-DCMAKE_EXE_LINKER_FLAGS=-Wl,-rpath-link,$rpath_link} \
      ${CMAKE_ARGS:-}
cmake --build --preset gpu -j "${JOBS:-$(nproc)}"
kvscope=build-gpu/app/kvscope
[ -x build-gpu/kvscope ] && kvscope=build-gpu/kvscope
echo "built $kvscope in $((SECONDS - start)) s"

