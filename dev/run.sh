#!/usr/bin/env bash
# The main job: install into .venv, print how the embedded default model (brivl-lite: nothing downloaded) matches
# a few texts and images, then open the Imagine studio on it at http://127.0.0.1:7860/ (Ctrl+C stops it).
# BRIVL_STUDIO_PORT picks another port; BRIVL_NO_STUDIO=1 stops after the similarity table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash dev/setup.sh
export GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/brivl similarity brivl-lite \
  --text "a sunset over the sea" "mountains with forests" "a red apple on a table" "夕阳下的大海" \
  --image examples/sunset.png examples/mountain_forest.png
if [ "${BRIVL_NO_STUDIO:-0}" = 1 ]; then exit 0; fi
open=()
if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] || [ "$(uname)" = Darwin ]; then open=(--open); fi
exec .venv/bin/brivl studio --model brivl-lite --model tiny --port "${BRIVL_STUDIO_PORT:-7860}" "${open[@]}"
