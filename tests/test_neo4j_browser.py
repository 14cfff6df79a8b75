"""Neo4j Browser on the tier's server (the Neo4j tier): a cookbook query pasted as written renders.

Headless Chromium (Debian's ``chromium``, driven by Playwright's Python package with that
executable: ``pip install playwright``, no ``playwright install``) opens Browser at
``LESIONDB_TEST_NEO4J_HTTP``/browser/, connects with the test password, runs the cookbook block
"A lesion's neighbourhood as a picture" on the cookbook graph — its :param line, then its query,
as a user pastes them — and checks that Browser draws the nodes and relationships the query
returns. The page's screenshot is saved in the test's folder;
with ``LESIONDB_UPDATE_DOCS_IMAGES=1`` also as docs/images/neo4j-browser.png (docs/neo4j.md).
Skipped, with the reason, where chromium or playwright is missing.
"""
from __future__ import annotations

import os
import re
import shutil
import urllib.parse
from pathlib import Path

import pytest

from tests.conftest import NEO4J_URI, REPO
from tests.test_cookbook import BLOCKS, _cookbook_graph

HTTP = os.environ.get("LESIONDB_TEST_NEO4J_HTTP")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOT = REPO / "docs" / "images" / "neo4j-browser.png"
BLOCK = next(b for b in BLOCKS if b["title"].startswith("A lesion's neighbourhood as a picture"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def _statement(block: dict, params: dict) -> str:
    """The block as a Browser user pastes it: its :param lines, then the query."""
    lines = [f":param {k} => {v!r};" if isinstance(v, str) else f":param {k} => {v};" for k, v in params.items()]
    return "\n".join([*lines, block["query"]])


def _drawn(eng, params: dict) -> tuple[int, int, int]:
    """The nodes and relationships the block's paths hold, and the relationships among those
    nodes (Browser also draws these: "connect result nodes", on by default)."""
    nodes, rels = set(), set()
    with eng.driver.session(database=eng.database) as session:
        for rec in session.run(BLOCK["query"], params):
            path = rec["path"]
            nodes |= {n.element_id for n in path.nodes}
            rels |= {r.element_id for r in path.relationships}
        between = session.run("MATCH (a)-[r]->(b) WHERE elementId(a) IN $ids AND elementId(b) IN $ids "
                              "RETURN count(r) AS n", ids=list(nodes)).single()["n"]
    return len(nodes), len(rels), between


@pytest.mark.neo4j
def test_a_cookbook_query_renders_in_neo4j_browser(neo4j, tmp_path):
    if not HTTP:
        pytest.skip("LESIONDB_TEST_NEO4J_HTTP is not set: no Browser address (tools/neo4j-server start exports it)")
    if not Path(CHROMIUM).is_file():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    from tests.conftest import _neo4j_engine

    eng = _neo4j_engine()
    try:
        g = _cookbook_graph(eng)
        params = {**BLOCK["params"], "lesionId": g["lesionId"]}
        want = _drawn(eng, params)
    finally:
        eng.close()
    assert want[0] > 5 and want[1] > 5 and want[2] >= want[1]
    user, password = os.environ.get("LESIONDB_USER", "neo4j"), os.environ["LESIONDB_PASSWORD"]
    (param_line,) = _statement(BLOCK, params).splitlines()[:1]  # the block's one :param line
    # the :param line arrives in the editor through Browser's own URL arguments (cmd=edit), the
    # connection form is pre-filled with the server (dbms=)
    url = (f"{HTTP}/browser/?dbms={urllib.parse.quote(NEO4J_URI, safe='')}"
           f"&cmd=edit&arg={urllib.parse.quote(param_line.rstrip(';'), safe='')}")
    shot = tmp_path / "neo4j-browser.png"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(url)
            page.get_by_test_id("username").fill(user)
            page.get_by_test_id("password").fill(password)
            page.get_by_test_id("connect").click()
            page.get_by_text(f"You are connected as user {user}").wait_for(timeout=60_000)
            page.get_by_test_id("editor-Run").click()  # :param lesionId => '…'
            page.get_by_text(f'"lesionId": "{g["lesionId"]}"').first.wait_for(timeout=30_000)
            editor = page.get_by_test_id("activeEditor")
            editor.click()
            page.keyboard.press("Control+A")
            page.keyboard.insert_text(BLOCK["query"])  # pasted: no auto-closed brackets
            assert "RETURN\xa0path" in editor.inner_text()
            page.get_by_test_id("editor-Run").click()
            status = page.get_by_text(re.compile(r"Displaying \d+ nodes?, \d+ relationships?")).first
            status.wait_for(timeout=60_000)
            said = status.inner_text()
            banner = page.get_by_text("To help make Neo4j Browser better")
            if banner.count():  # the usage-data banner: closed for the picture
                banner.first.locator("xpath=following-sibling::span[1]").click(timeout=5_000)
            page.mouse.move(700, 890)  # away from the frame's buttons (their menus open on hover)
            page.wait_for_timeout(3_000)  # the force layout settles
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    m = re.search(r"Displaying (\d+) nodes?, (\d+) relationships?", said)
    assert m and int(m.group(1)) == want[0] and want[1] <= int(m.group(2)) <= want[2], (said, want)
    assert shot.stat().st_size > 20_000
    if os.environ.get("LESIONDB_UPDATE_DOCS_IMAGES") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, SCREENSHOT)
