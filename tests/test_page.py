"""The web page, in a real (headless) Chromium against a real served instance."""

from __future__ import annotations

import shutil

import pytest

from .conftest import insightface_image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Flags for a sandboxed machine with no outside network (see .ci/run, which installs Chromium).
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-sync",
         "--disable-component-update", "--no-first-run", "--disable-quic"]  # fmt: skip


@pytest.fixture(scope="module")
def page_url(serve, default_models):
    return serve().url


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (.ci/run installs Debian's package)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


def upload(browser, url, path, *checkboxes):
    page = browser.new_page()
    page.goto(url)
    page.set_input_files("#image", str(path))
    for name in checkboxes:
        page.check(f"#{name}")
    page.click("#go")
    return page


def test_page_turns_a_photo_into_a_toon(browser, page_url, tmp_path, astronaut):
    photo = tmp_path / "astronaut.png"
    astronaut.save(photo)
    page = upload(browser, page_url, photo)
    page.wait_for_selector("#result img", timeout=60_000)
    size = page.eval_on_selector("#result img", "img => [img.naturalWidth, img.naturalHeight]")
    assert size == [512, 512]
    assert "1 face(s) found" in page.inner_text("#status")


def test_page_returns_the_whole_photo_with_every_face(browser, page_url):
    page = upload(browser, page_url, insightface_image("t1.jpg"), "paste_back")
    page.wait_for_selector("#result img", timeout=60_000)
    size = page.eval_on_selector("#result img", "img => [img.naturalWidth, img.naturalHeight]")
    assert size == [1280, 886]
    faces = int(page.inner_text("#status").split(" face")[0])
    assert faces >= 5


def test_page_shows_what_to_do_when_the_upload_is_not_a_photo(browser, page_url, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("this is not a photo")
    page = upload(browser, page_url, notes)
    page.wait_for_selector("#status.error", timeout=30_000)
    assert "not an image" in page.inner_text("#status").lower()
    assert page.query_selector("#result img") is None
