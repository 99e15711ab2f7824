"""The studio in a real browser: headless Chromium (Debian's package, installed by dev/setup.sh) driven by Playwright.

Types a prompt, runs Imagine on brivl-lite, watches the previews stream in, checks that a non-blank image arrived
and saves a screenshot; then uploads a file that is not an image and checks that the page says so in words.
Screenshots and timings go to $BRIVL_ARTIFACTS (default: the test's tmp folder).
"""
import base64
import io
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from studio_server import studio

pytestmark = pytest.mark.slow

# Records every src the output image takes, with the time since the click (set just before clicking).
WATCH = """
() => {
  window.__srcs = [];
  const seen = new Set();
  const record = () => {
    const img = document.querySelector('#imagine-output img');
    if (img && img.src && !seen.has(img.src)) { seen.add(img.src); window.__srcs.push([img.src, performance.now()]); }
  };
  new MutationObserver(record).observe(document.body, {subtree: true, childList: true, attributes: true,
                                                       attributeFilter: ['src']});
  window.__clicked = performance.now();
}
"""


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("BRIVL_ARTIFACTS") or tmp_path_factory.mktemp("studio-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is not installed: dev/setup.sh installs Debian's chromium package (apt-get install chromium)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def url():
    with studio(["brivl-lite", "tiny"], "--steps", "8", "--size", "64") as u:
        yield u


def _image_bytes(page, src: str) -> bytes:
    if src.startswith("data:"):
        return base64.b64decode(src.split(",", 1)[1])
    response = page.request.get(src)
    assert response.ok, f"{src}: {response.status}"
    return response.body()


def test_imagine_streams_previews_and_shows_a_non_blank_image(browser, url, artifacts):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(url)
    prompt = page.locator("#imagine-prompt textarea")
    prompt.wait_for(timeout=300_000)
    assert "BriVL Imagine studio" in page.title()
    prompt.fill("夕阳下的大海")
    page.evaluate(WATCH)
    t0 = time.perf_counter()
    page.get_by_role("button", name="Imagine", exact=True).click()
    status = page.locator("#imagine-status")
    status.get_by_text("done:").wait_for(timeout=300_000)
    total = time.perf_counter() - t0
    srcs = page.evaluate("() => window.__srcs.map(([s, t]) => [s, t - window.__clicked])")
    assert srcs, "no image ever appeared in the output"
    assert len(srcs) >= 2, f"expected streamed previews before the final image, saw {len(srcs)} image(s)"
    first_preview_s = srcs[0][1] / 1000
    image = Image.open(io.BytesIO(_image_bytes(page, srcs[-1][0]))).convert("RGB")
    pixels = np.asarray(image, dtype=np.float32)
    assert image.size == (64, 64)
    assert pixels.std() > 5 and np.ptp(pixels) > 40, "the image is blank"
    page.screenshot(path=str(artifacts / "studio-imagine.png"), full_page=True)
    files = page.locator("a[download]")
    assert files.count() >= 2 or page.get_by_text(".json").count() >= 1, "no PNG/JSON downloads offered"
    timings = {"click_to_first_preview_s": round(first_preview_s, 3), "click_to_done_s": round(total, 3),
               "images_seen": len(srcs), "steps": 8, "size": 64, "model": "brivl-lite"}
    (artifacts / "studio-browser-timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    print(f"\nbrowser: click -> first preview {first_preview_s:.2f} s, -> done {total:.2f} s, {len(srcs)} images")
    page.close()


def test_a_bad_upload_shows_a_readable_message_and_the_studio_keeps_serving(browser, url, artifacts, tmp_path):
    bad = tmp_path / "holiday.png"
    bad.write_text("these are my holiday notes, not a picture\n")
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(url)
    page.get_by_role("tab", name="Patches").click()
    page.locator("#patches-image input[type=file]").set_input_files(str(bad))
    # Said as soon as it is uploaded, and the upload is cleared instead of showing as a broken picture.
    message = page.get_by_text("holiday.png: not an image file")
    message.first.wait_for(timeout=300_000)
    page.wait_for_timeout(800)  # the message box slides in
    page.screenshot(path=str(artifacts / "studio-bad-upload.png"))
    assert page.locator("#patches-image img").count() == 0
    # Running anyway asks for a picture, in words.
    page.locator("#patches-text textarea").fill("the sun")
    page.locator("#patches-run").click()
    page.get_by_text("no image: upload a picture").first.wait_for(timeout=300_000)
    # Still serving: the same page runs Imagine afterwards.
    page.get_by_role("tab", name="Imagine").click()
    page.locator("#imagine-prompt textarea").fill("mountains with forests")
    page.get_by_role("button", name="Imagine", exact=True).click()
    page.locator("#imagine-status").get_by_text("done:").wait_for(timeout=300_000)
    page.close()
