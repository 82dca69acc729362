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


def upload_through(browser, url, routes: dict, tmp_path, astronaut):
    """Upload the astronaut with the page's calls going through ``routes`` (a URL pattern to a
    handler), and wait until the page says the service is busy."""
    photo = tmp_path / "astronaut.png"
    astronaut.save(photo)
    page = browser.new_page()
    for pattern, route in routes.items():
        page.route(pattern, route)
    page.goto(url)
    page.set_input_files("#image", str(photo))
    page.wait_for_selector("#status.busy", timeout=30_000)
    return page


def test_page_joins_the_line_when_the_service_is_busy_and_waits_out_a_full_queue(
    browser, page_url, serve, tmp_path, astronaut
):
    """/toonify is busy (a real 503 from an instance with every slot taken), and so is the queue
    the first time (503 queue_full, Retry-After 2): the page says so, waits as told, joins the
    line at the second try, and shows the toon when its job is done."""
    full = serve(max_in_flight=0, degrade="off", retry_after_s=2)
    arrivals: list[tuple[float, str]] = []

    def busy(request_route):  # /toonify: always the full instance
        arrivals.append((time.monotonic(), "toonify"))
        request_route.fulfill(response=request_route.fetch(url=full.url + "/toonify"))

    def queue(request_route):  # /jobs: full once, then the page's own server
        arrivals.append((time.monotonic(), "jobs"))
        if sum(1 for _, path in arrivals if path == "jobs") == 1:
            request_route.fulfill(
                status=503,
                headers={"Retry-After": "2", "Content-Type": "application/json"},
                body='{"error": "queue_full", "detail": "The queue of jobs is full."}',
            )
        else:
            request_route.continue_()

    routes = {"**/toonify": busy, "**/jobs": queue}
    page = upload_through(browser, page_url, routes, tmp_path, astronaut)
    page.wait_for_selector("#after", state="visible", timeout=60_000)
    assert "1 face(s) found" in page.inner_text("#status")
    assert [path for _, path in arrivals] == ["toonify", "jobs", "jobs"]
    assert arrivals[2][0] - arrivals[1][0] >= 2.0  # it waited as long as Retry-After said
    assert page.evaluate("location.hash").startswith("#job=")


def test_page_also_joins_the_line_after_a_platform_429(browser, page_url, tmp_path, astronaut):
    """Cloud Run at maxScale, every instance full, answers 429 itself (its front end, not this
    service): the page treats it as busy too and submits a job."""
    arrivals: list[float] = []

    def route(request_route):
        arrivals.append(time.monotonic())
        request_route.fulfill(status=429, headers={"Retry-After": "1"}, body="Rate exceeded.")

    page = upload_through(browser, page_url, {"**/toonify": route}, tmp_path, astronaut)
    page.wait_for_selector("#after", state="visible", timeout=60_000)
    assert len(arrivals) == 1 and page.evaluate("location.hash").startswith("#job=")


def test_in_line_the_page_says_your_number_and_the_job_survives_closing_the_tab(
    browser, serve, default_models, tmp_path, astronaut
):
    """Behind four 12 MP paste_backs on one slot, the page's photo is a job: it says the visitor's
    number in line; the tab is closed and the address opened again, and the toon appears."""
    from loadtest.photos import phone_jpeg

    queued = serve(max_in_flight=1, degrade="off", queue_dir=str(tmp_path / "queue"))
    heavy = phone_jpeg(astronaut)
    for _ in range(4):
        job = httpx.post(f"{queued.url}/jobs/raw?paste_back=true&format=png", content=heavy)
        assert job.status_code == 202
    photo = tmp_path / "astronaut.png"
    astronaut.save(photo)
    page = browser.new_page()
    page.route("**/toonify", lambda r: r.fulfill(status=503, headers={"Retry-After": "1"}))
    page.goto(queued.url)
    page.set_input_files("#image", str(photo))
    page.wait_for_function(
        "document.getElementById('status').textContent.includes('you are number')",
        timeout=30_000,
    )
    assert page.evaluate("location.hash").startswith("#job=")
    # What is kept, said where the visitor is put in line, with the way to delete it.
    assert "photo is kept until your turn" in page.inner_text("#status")
    assert page.inner_text("#forget") == "Delete my photo and leave the line"
    address = page.url
    page.close()  # gone while in line
    back = browser.new_page()
    back.goto(address)
    back.wait_for_selector("#after", state="visible", timeout=120_000)
    size = back.eval_on_selector("#after", "img => [img.naturalWidth, img.naturalHeight]")
    assert size == [512, 512] and "1 face(s) found" in back.inner_text("#status")
    assert not back.is_visible("#before")  # the photo itself stayed with the closed tab
    # The cartoon is kept an hour: the visitor deletes it now.
    job_url = queued.url + "/jobs/" + address.rsplit("#job=", 1)[1]
    assert httpx.get(job_url).json()["status"] == "done"
    back.click("#forget")
    back.wait_for_function(
        "document.getElementById('status').textContent.startsWith('Deleted')", timeout=10_000
    )
    assert httpx.get(job_url).status_code == 404 and not back.is_visible("#after")


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
