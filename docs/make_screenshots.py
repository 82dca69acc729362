"""Screenshots of the web page in its result state, desktop and phone width: docs/images/page-*.png.

    make defaults && python docs/make_screenshots.py

Serves the offline default (`bentoml serve`, the model store's toon-filter), opens the page in
Debian's Chromium (headless, through Playwright), uploads the astronaut and saves each screen.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import skimage.data
from PIL import Image
from playwright.sync_api import sync_playwright

from tools.served import Served

ROOT = Path(__file__).resolve().parents[1]
SCREENS = {"desktop": {"width": 1100, "height": 900}, "phone": {"width": 360, "height": 740}}


def main() -> None:
    scratch = Path(tempfile.mkdtemp(prefix="toonify-shots-"))
    photo = scratch / "astronaut.jpg"
    Image.fromarray(skimage.data.astronaut()).save(photo, quality=92)
    server = Served({}, scratch / "bentoml.log")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=shutil.which("chromium"), args=["--no-sandbox", "--disable-gpu"]
            )
            for name, viewport in SCREENS.items():
                page = browser.new_page(viewport=viewport, device_scale_factor=1)
                page.goto(server.url)
                page.set_input_files("#image", str(photo))
                page.wait_for_selector("#after", state="visible", timeout=60_000)
                out = ROOT / "docs" / "images" / f"page-{name}.png"
                page.screenshot(path=str(out), full_page=True)
                print(f"wrote {out}")
            browser.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
