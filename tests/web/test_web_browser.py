"""End to end in a real headless browser: Debian's Chromium driven by Playwright's Python client.

Loads the page, uploads a real ImageNet image, waits for Opti-CAM (2 steps) to finish, checks that the
overlay rendered and the top-1 class (from an independent forward pass) is shown, and saves screenshots
before and after. Then a 20000 x 20000 PNG and a 100 MB file each get a clear error on the page, and the
server still answers. Skips, saying why, where Chromium or Playwright is missing.

Screenshots go to the test's temporary folder, or to ``$OPTICAM_SCREENSHOTS`` when set (how the copies
under docs/screenshots/ were made).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from opticam.images import load_image

CHROMIUM = os.environ.get("OPTICAM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_or_skip():
    """Playwright's sync API, or a skip with the reason (no Chromium binary, no Playwright client)."""
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium; .ci/run does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the Playwright Python client is not installed (pip install playwright)")
    return sync_playwright


@pytest.fixture(scope="module")
def browser():
    sync_playwright = chromium_or_skip()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("OPTICAM_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_upload_explain_and_limits_in_chromium(browser, lite0, samples_dir, shots, tmp_path):
    from opticam.web.app import ModelCache, Settings, create_app
    from opticam.web.server import background

    try:  # tests/ as a package or as a plain folder on sys.path
        from .test_web import assert_alive, bomb_png
    except ImportError:
        from test_web import assert_alive, bomb_png

    image_path = samples_dir / "n01530575_brambling.JPEG"
    x = lite0.preprocess(load_image(image_path))[None]
    with torch.no_grad():
        top1 = int(lite0.model(x).argmax(dim=1))
    settings = Settings(models=["efficientnet_lite0"], default_iterations=2, max_iterations=20)
    app = create_app(settings, ModelCache("cpu", loader=lambda name, device: lite0))
    with background(app) as url:
        page = browser.new_page(viewport={"width": 1100, "height": 820})
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.on(
            "console", lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None
        )

        page.goto(url + "/")
        page.wait_for_selector("#model option", state="attached")
        page.wait_for_selector("input[name=method][value=opticam]:checked")
        page.screenshot(path=str(shots / "web-before.png"), full_page=True)

        page.set_input_files("#file", str(image_path))
        page.fill("#iterations", "2")
        # Record every progress message the page shows (however quick the job, at least one appears).
        page.evaluate(
            """() => {
                const text = document.querySelector('#status-text');
                window.statusSeen = [];
                new MutationObserver(() => window.statusSeen.push(text.textContent))
                    .observe(text, {childList: true, characterData: true, subtree: true});
            }"""
        )
        page.click("#run")
        page.wait_for_selector("#results:not([hidden])", timeout=240_000)
        overlay = page.locator(".card.overlay img").first
        assert page.evaluate("(img) => img.complete && img.naturalWidth === 224", overlay.element_handle())
        top1_text = page.inner_text("#top1")
        assert f"Top-1: {lite0.class_name(top1)} ({top1})" in top1_text
        assert page.locator("#top5 tbody tr").count() == 5
        assert "opticam: AD" in page.inner_text(".card.overlay .caption")
        assert page.is_hidden("#error")
        seen = page.evaluate("window.statusSeen")
        expected = ("step", "running", "loading", "waiting", "starting", "done")
        assert seen and all(any(word in m for word in expected) for m in seen), seen
        page.screenshot(path=str(shots / "web-after.png"), full_page=True)
        assert problems == []  # a clean run: no script errors, no failed requests

        # A decompression bomb: refused by the server from its header, shown on the page.
        bomb = tmp_path / "bomb-20000x20000.png"
        bomb.write_bytes(bomb_png())
        page.set_input_files("#file", str(bomb))
        page.click("#run")
        page.wait_for_selector("#error:not([hidden])")
        assert "20000 x 20000 = 400 megapixels; the limit is 40 megapixels" in page.inner_text("#error")
        page.screenshot(path=str(shots / "web-bomb.png"), full_page=True)

        # 100 MB: the page refuses it before sending (the server's own 413 is tested in test_web.py).
        big = tmp_path / "big.png"
        with big.open("wb") as f:
            f.truncate(100_000_000)
        page.set_input_files("#file", str(big))
        page.click("#run")
        page.wait_for_function("document.querySelector('#error').textContent.includes('100 MB')")
        assert "The upload is 100 MB; the limit is 20 MB" in page.inner_text("#error")
        assert_alive(url)
        assert page.evaluate("fetch('/api/health').then((r) => r.status)") == 200
        page.close()
