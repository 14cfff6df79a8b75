"""End to end in headless Chromium: ``lesiondb serve``'s review queue in a real browser.

Debian's ``chromium`` driven by Playwright's Python package through the system browser
(``executable_path``; Playwright's own browser download is never used). A uvicorn server on
127.0.0.1 serves a synthetic cohort's graph; the test opens the queue, checks that every crop is
a loaded image, accepts a proposal with the keyboard and rejects one with the button, finds both
decisions in the graph, and saves the screenshot the README shows (docs/images/review-queue.png).
Skipped, with the reason, where Chromium or Playwright is absent (``.ci/run`` installs both).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from lesiondb.core.pseudonym import Pseudonymizer
from lesiondb.mining import list_proposals
from lesiondb.web import create_app
from lesiondb.web.server import ServerThread

from .conftest import KEY

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "images" / "review-queue.png"
# Debian's chromium; LESIONDB_CHROMIUM names another Chromium-based browser (CI runners' Chrome)
CHROMIUM = next((p for p in (os.environ.get("LESIONDB_CHROMIUM", ""), "/usr/bin/chromium",
                             shutil.which("chromium") or "", shutil.which("chromium-browser") or "")
                 if p and Path(p).is_file()), None)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright's Python package is not installed "
                                                               "(pip install playwright; no browser download needed)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no system Chromium (apt-get install chromium)")


@pytest.fixture
def graph(fresh_graph):
    return fresh_graph()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def test_review_queue_in_chromium(graph, web_cohort, browser):
    ids = Pseudonymizer.from_text(KEY)
    pending = list_proposals(graph, status="pending")
    assert len(pending) >= 3
    app = create_app(graph, ids, [web_cohort], reviewer="")
    crops = []
    with ServerThread(app) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("response", lambda r: crops.append(r.headers.get("x-lesiondb-crop")) if "/crops/" in r.url else None)
        page.goto(f"{url}/proposals")
        page.wait_for_load_state("networkidle")

        # every crop is a loaded image, and they are real crops (no placeholder)
        n, loaded = page.evaluate("() => [document.images.length, Array.from(document.images)"
                                  ".filter(i => i.complete && i.naturalWidth > 0).length]")
        assert n >= 2 * len(pending) and loaded == n
        assert crops and set(crops) == {"image"}

        first, second = (page.locator(".review-item").nth(i).get_attribute("data-id") for i in (0, 1))
        assert first == pending[0]["proposalId"]
        assert "current" in page.locator(f"#item-{first}").get_attribute("class")

        # accept the current item with the keyboard ('a'), as reviewer dr.browser
        page.fill("#reviewer", "dr.browser")
        page.locator("#reviewer").press("Escape")
        page.keyboard.press("a")
        page.wait_for_selector(f"#item-{first}.decided.accepted")
        got = list_proposals(graph, proposal=first)[0]
        assert got["status"] == "accepted" and got["reviewedBy"] == "dr.browser"
        lesion = graph.run("lesion_detail", lesionId=got["lesionId"])
        assert lesion and lesion[0]["lesion"]["source"] == "proposal"  # a lesion of its track now
        # the queue moved on to the next pending item
        assert "current" in page.locator(f"#item-{second}").get_attribute("class")

        # reject the next one with its button and a reason
        page.locator(f"#item-{second} input.reason").fill("vessel, not a lesion")
        page.locator(f"#item-{second} button.reject").click()
        page.wait_for_selector(f"#item-{second}.decided.rejected")
        got = list_proposals(graph, proposal=second)[0]
        assert (got["status"], got["reviewedBy"], got["rejectReason"]) == ("rejected", "dr.browser",
                                                                           "vessel, not a lesion")
        assert errors == []

        page.evaluate("() => window.scrollTo(0, 0)")
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT))
        page.close()
    assert SCREENSHOT.stat().st_size > 20_000


def _all_loaded(page) -> tuple[int, int]:
    return tuple(page.evaluate("() => [document.images.length, Array.from(document.images)"
                               ".filter(i => i.complete && i.naturalWidth > 0).length]"))


def test_timeline_and_lesion_pages_in_chromium(site, browser, request):
    """A patient's timeline (crops, one chart per track), the window presets, a lesion's page with
    its similar lesions; their screenshots (from the embedded engine's run) go to docs/images/ for
    docs/review.md."""
    shots = request.node.callspec.params.get("site") == "falkordb"
    pid = max(site.engine.run("patients"), key=lambda p: p["studies"])["patientId"]
    n_tracks = len({t["trackingUid"] for t in site.engine.run("patient_tracks", patientId=pid)})
    app = create_app(site.engine, site.ids, [site.cohort])
    with ServerThread(app) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{url}/patients/{pid}")
        page.wait_for_load_state("networkidle")
        n, loaded = _all_loaded(page)
        assert n > 0 and loaded == n
        assert page.locator("svg.chart").count() == n_tracks
        if shots:
            page.screenshot(path=str(SCREENSHOT.with_name("patient-timeline.png")))
        page.click("header .windows a:text-is('lung')")
        page.wait_for_load_state("networkidle")
        srcs = page.evaluate("() => Array.from(document.images).map(i => i.getAttribute('src'))")
        assert srcs and all("window=lung" in s for s in srcs)
        assert _all_loaded(page)[1] == len(srcs)

        lesion = page.locator("td.cell a.crop").first.get_attribute("href").split("?")[0]
        page.goto(f"{url}{lesion}")
        page.wait_for_load_state("networkidle")
        n, loaded = _all_loaded(page)
        assert loaded == n and n >= 1 + 8  # the lesion, its track, 8 similar lesions
        assert page.get_by_text("Most similar lesions").count() == 1
        if shots:
            page.screenshot(path=str(SCREENSHOT.with_name("lesion.png")))
        page.close()
