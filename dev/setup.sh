#!/usr/bin/env bash
# Create .venv once and install brivl with every extra, pinned by constraints.txt; a second run re-uses it (seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
py=python3.11
command -v "$py" >/dev/null 2>&1 || py=python3
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $($py --version)" >&2
  "$py" -m venv .venv
fi
# A CJK font for Chinese labels in figures (Fig. 5c); Debian's apt, only where none is installed.
if command -v fc-list >/dev/null 2>&1 && [ -z "$(fc-list :lang=zh 2>/dev/null)" ] && command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing a CJK font (fonts-wqy-zenhei) for Chinese figure labels" >&2
    (apt-get install -y -q fonts-wqy-zenhei >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q fonts-wqy-zenhei >/dev/null 2>&1; }) \
      || echo "warning: could not install fonts-wqy-zenhei; Chinese figure labels will be replaced by ranks" >&2
  else
    echo "note: no CJK font found; install fonts-wqy-zenhei (or set BRIVL_CJK_FONT) for Chinese figure labels" >&2
  fi
fi
# Chromium for the studio's browser test (Playwright drives this executable; it cannot download its own browser).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing chromium (Debian) for the studio's browser test" >&2
    (apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }) \
      || echo "warning: could not install chromium; the studio's browser test will fail" >&2
  else
    echo "note: chromium is missing; install it (apt-get install chromium) for the studio's browser test" >&2
  fi
fi
stamp=.venv/.brivl-installed
want=$(cat pyproject.toml constraints.txt dev/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing brivl with every extra at the versions of constraints.txt into .venv (a few minutes the first time)" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[test]"
  echo "$want" > "$stamp"
fi
