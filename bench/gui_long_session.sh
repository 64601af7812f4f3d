#!/bin/sh
# The workbench's frame times with a long finished session open (issue 7's 32,768-step
# case): a random 4-layer Llama with a 65,536-token context (the method-parity model of
# tests/reference/make_method_model.py, longer), a sliding window of 256 run for STEPS
# steps next to the full-cache reference, stored, reopened from the database, then viewed
# at 1920x1080 under Xvfb while the selection sweeps the steps and layers.
#
#   bench/gui_long_session.sh [STEPS]    (default 32768; needs ./setup.sh's .venv and build)
set -eu
cd "$(dirname "$0")/.."
steps=${1:-32768}
out=$(mktemp -d /tmp/kvscope-gui-long.XXXXXX)
.venv/bin/python - "$out/long-4l.gguf" <<'PY'
import os, sys
sys.path.insert(0, os.path.join(os.getcwd(), "tests", "reference"))
import make_method_model as m
m.N_CTX = 65536
m.write_model(sys.argv[1], 4)
PY
xvfb-run -a -s "-screen 0 1920x1080x24" build/kvscope gui --width 1920 --height 1080 \
  --model "$out/long-4l.gguf" --method window --budget 256 --steps "$steps" --ignore-eos \
  --view-frames 300 --bench --timeout 3600 --db "$out/runs.db" --screenshot "$out/long-session.png" |
  grep -E '^(run #|opened run|frames)'
echo "screenshot: $out/long-session.png"
