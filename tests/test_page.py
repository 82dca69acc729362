"""The web page, in a real (headless) Chromium against a real served instance."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest

from .conftest import insightface_image

pytestmark = [pytest.mark.browser, pytest.mark.served]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Flags for a sandboxed machine with no outside network (see .ci/run, which installs Chromium).
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-sync",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
]


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


def upload(browser, url, path, *checkboxes, **page_options):
    """Open the page, tick the options, choose the photo (choosing it starts the upload)."""
    page = browser.new_page(**page_options)
    page.goto(url)
    for name in checkboxes:
        page.check(f"#{name}")
    page.set_input_files("#image", str(path))
    return page


def test_page_turns_a_photo_into_a_toon(browser, page_url, tmp_path, astronaut):
    photo = tmp_path / "astronaut.png"
    astronaut.save(photo)
    page = upload(browser, page_url, photo)
    page.wait_for_selector("#after", state="visible", timeout=60_000)
    size = page.eval_on_selector("#after", "img => [img.naturalWidth, img.naturalHeight]")
    assert size == [512, 512]
    assert "1 face(s) found" in page.inner_text("#status")


def test_page_returns_the_whole_photo_with_every_face(browser, page_url):
    page = upload(browser, page_url, insightface_image("t1.jpg"), "paste_back")
    page.wait_for_selector("#after", state="visible", timeout=60_000)
    size = page.eval_on_selector("#after", "img => [img.naturalWidth, img.naturalHeight]")
    assert size == [1280, 886]
    faces = int(page.inner_text("#status").split(" face")[0])
    assert faces >= 5


def test_page_shows_what_to_do_when_the_upload_is_not_a_photo(browser, page_url, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("this is not a photo")
    page = upload(browser, page_url, notes)
    page.wait_for_selector("#status.error", timeout=30_000)
    assert "not an image" in page.inner_text("#status").lower()
    assert not page.is_visible("#result")


def upload_through(browser, url, route, tmp_path, astronaut):
    """Upload the astronaut with the page's calls to /toonify going through ``route``, and wait
    until the page says the service is busy."""
    photo = tmp_path / "astronaut.png"
    astronaut.save(photo)
    page = browser.new_page()
    page.route("**/toonify", route)
    page.goto(url)
    page.set_input_files("#image", str(photo))
    page.wait_for_selector("#status.busy", timeout=30_000)
    return page


def test_page_waits_out_a_busy_service_and_tries_again(
    browser, page_url, serve, tmp_path, astronaut
):
    """The first upload reaches an instance with every slot taken (its real 503 + Retry-After);
    the page says it is busy, waits as told and its retry, to the normal instance, succeeds."""
    full = serve(max_in_flight=0, retry_after_s=2)  # started and ready
    arrivals: list[tuple[float, str]] = []

    def route(request_route):
        target = full.url if not arrivals else page_url
        arrivals.append((time.monotonic(), target))
        if target == full.url:  # refused before its body is read
            request_route.fulfill(response=request_route.fetch(url=full.url + "/toonify"))
        else:  # the page's own request, untouched, to its own server
            request_route.continue_()

    page = upload_through(browser, page_url, route, tmp_path, astronaut)
    assert "Trying again in 2 s" in page.inner_text("#status")
    page.wait_for_selector("#after", state="visible", timeout=60_000)
    assert "1 face(s) found" in page.inner_text("#status")
    assert [target for _, target in arrivals] == [full.url, page_url]
    assert arrivals[1][0] - arrivals[0][0] >= 2.0  # it waited as long as Retry-After said


def test_page_also_waits_out_a_platform_429(browser, page_url, tmp_path, astronaut):
    """Cloud Run at maxScale, every instance full, answers 429 itself (its front end, not this
    service): the page treats it as busy too."""
    arrivals: list[float] = []

    def route(request_route):
        arrivals.append(time.monotonic())
        if len(arrivals) == 1:  # what the platform's front end sends
            request_route.fulfill(status=429, headers={"Retry-After": "1"}, body="Rate exceeded.")
        else:
            request_route.continue_()

    page = upload_through(browser, page_url, route, tmp_path, astronaut)
    page.wait_for_selector("#after", state="visible", timeout=60_000)
    assert len(arrivals) == 2 and arrivals[1] - arrivals[0] >= 1.0


def test_page_says_when_a_busy_service_drew_the_cartoon_in_less_detail(
    browser, page_url, serve, tmp_path, astronaut
):
    """An instance past its full-quality bound answers at the reduced level: the page shows the
    toon and says why it has less detail, without calling it an error."""
    saturated = serve(max_in_flight=0, degraded_max_in_flight=2, max_receiving=4)
    photo = tmp_path / "astronaut.png"
    astronaut.save(photo)
    page = upload(browser, saturated.url, photo)
    page.wait_for_selector("#after", state="visible", timeout=60_000)
    size = page.eval_on_selector("#after", "img => [img.naturalWidth, img.naturalHeight]")
    assert size == [512, 512]  # the full size, generated smaller
    assert page.get_attribute("#status", "class") == "busy"
    assert "less detail" in page.inner_text("#status")
    normal = upload(browser, page_url, photo)  # not saturated: no such note
    normal.wait_for_selector("#after", state="visible", timeout=60_000)
    assert "less detail" not in normal.inner_text("#status")


def test_a_dropped_photo_is_toonified_with_before_after_and_a_download_of_the_answer(
    browser, page_url, tmp_path, astronaut
):
    photo = tmp_path / "astronaut.jpg"
    astronaut.save(photo, quality=92)
    page = browser.new_page()
    page.goto(page_url)
    page.evaluate(
        """async (bytes) => {
            const file = new File([new Uint8Array(bytes)], "astronaut.jpg", {type: "image/jpeg"});
            const data = new DataTransfer();
            data.items.add(file);
            document.getElementById("drop").dispatchEvent(
                new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));
        }""",
        list(photo.read_bytes()),
    )
    page.wait_for_selector("#after", state="visible", timeout=60_000)
    before = page.eval_on_selector("#before", "img => [img.naturalWidth, img.naturalHeight]")
    assert before == [512, 512]  # the photo itself, beside its toon
    with page.expect_download() as download:
        page.click("#download")
    saved = Path(download.value.path()).read_bytes()
    assert download.value.suggested_filename == "astronaut-toon.jpg"
    direct = httpx.post(f"{page_url}/toonify", files={"image": photo.read_bytes()}, timeout=60)
    assert saved == direct.content  # the download is the API's answer, byte for byte
    page.click("#again")
    assert not page.is_visible("#result")


def test_every_face_becomes_a_small_gallery(browser, page_url):
    page = upload(browser, page_url, insightface_image("t1.jpg"), "all_faces")
    page.wait_for_selector("#gallery img", timeout=60_000)
    faces = int(page.inner_text("#status").split(" face")[0])
    assert len(page.query_selector_all("#gallery img")) == faces >= 5


def test_phone_width_has_no_sideways_scrolling_and_no_serious_accessibility_violations(
    browser, page_url, tmp_path, astronaut
):
    axe = pytest.importorskip("axe_playwright_python")
    photo = tmp_path / "astronaut.png"
    astronaut.save(photo)
    page = upload(browser, page_url, photo, viewport={"width": 360, "height": 740})
    page.wait_for_selector("#after", state="visible", timeout=60_000)
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    assert page.get_attribute("#camera", "capture") == "user"  # phones offer the front camera
    page.add_script_tag(path=str(Path(axe.__file__).with_name("axe.min.js")))
    violations = page.evaluate("async () => (await axe.run()).violations")
    serious = [(v["id"], v["impact"]) for v in violations if v["impact"] in ("serious", "critical")]
    assert serious == [], serious
