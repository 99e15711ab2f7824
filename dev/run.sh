#!/usr/bin/env bash
# The main job: install into .venv, then embed texts and images with the `tiny` preset and print similarities.
set -euo pipefail
cd "$(dirname "$0")/.."
bash dev/setup.sh
exec .venv/bin/brivl similarity tiny \
  --text "a sunset over the sea" "mountains with forests" "a red apple on a table" \
  --image examples/sunset.png examples/mountain_forest.png
