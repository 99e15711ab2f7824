#!/usr/bin/env bash
# Create .venv once and install brivl with its pinned dependencies; a second run re-uses it (seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
py=python3.11
command -v "$py" >/dev/null 2>&1 || py=python3
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $($py --version)" >&2
  "$py" -m venv .venv
fi
stamp=.venv/.brivl-installed
want=$(cat pyproject.toml dev/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing brivl and its pinned dependencies into .venv (a few minutes the first time)" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
  echo "$want" > "$stamp"
fi
