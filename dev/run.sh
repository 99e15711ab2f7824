#!/usr/bin/env bash
# The main job: install into .venv, then embed texts and images with the embedded default model
# (brivl-lite: nothing downloaded) and print their cosine similarities.
set -euo pipefail
cd "$(dirname "$0")/.."
bash dev/setup.sh
exec .venv/bin/brivl similarity brivl-lite \
  --text "a sunset over the sea" "mountains with forests" "a red apple on a table" "夕阳下的大海" \
  --image examples/sunset.png examples/mountain_forest.png
