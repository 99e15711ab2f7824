"""The README's picture of the studio: the Imagine tab after a render at the CLI defaults (128 steps, 160 px).

    .venv/bin/python bench/studio_screenshot.py [--prompt "a goldfish"] [--out bench/results/studio/studio-imagine-128.png]

Starts `brivl studio` on brivl-lite with those defaults (the browser test renders 8 steps at 64 px to stay fast),
types the prompt in headless Chromium, waits for "done:" and saves a screenshot of the page, plus the seconds from
the click to the first preview and to the end (JSON beside it).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    """Render once in the page and keep the screenshot."""
    from playwright.sync_api import sync_playwright
    from studio_server import studio

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt", default="a goldfish")
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench/results/studio/studio-imagine-128.png"))
    args = ap.parse_args()
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        raise SystemExit("chromium is not installed (dev/setup.sh installs Debian's chromium package)")
    with studio(["brivl-lite", "tiny"], "--steps", str(args.steps), "--size", str(args.size),
                threads=args.threads) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(url)
        prompt = page.locator("#imagine-prompt textarea")
        prompt.wait_for(timeout=300_000)
        prompt.fill(args.prompt)
        t0 = time.perf_counter()
        page.get_by_role("button", name="Imagine", exact=True).click()
        page.locator("#imagine-output img").first.wait_for(timeout=300_000)
        first = time.perf_counter() - t0
        page.locator("#imagine-status").get_by_text("done:").wait_for(timeout=1_800_000)
        total = time.perf_counter() - t0
        time.sleep(1.0)  # the final image's element swaps in after the status line
        page.screenshot(path=args.out, full_page=True)
        browser.close()
    report = {"prompt": args.prompt, "steps": args.steps, "size": args.size, "threads": args.threads,
              "click_to_first_preview_s": round(first, 2), "click_to_done_s": round(total, 2), "model": "brivl-lite"}
    Path(args.out).with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
