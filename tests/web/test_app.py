"""Every route of ``lesiondb serve`` through Starlette's TestClient, on a synthetic cohort's graph
built by the library (ingest → match → mine): the pages, the crops, the review decisions (the
same change to the graph as ``lesiondb review accept``), the placeholder when images are missing,
the request guards, and privacy (no UID, PatientID or date of the cohort in any page)."""
from __future__ import annotations

import json
import re
import stat
from html import unescape

import numpy as np
import pytest
from click.testing import CliRunner

from lesiondb.cli.common import AppContext
from lesiondb.cli.main import cli
from lesiondb.core.pseudonym import Pseudonymizer
from lesiondb.mining import list_proposals
from lesiondb.tracking import list_possible
from lesiondb.web import create_app
from lesiondb.web.crops import WINDOWS

from .conftest import KEY

TestClient = pytest.importorskip("starlette.testclient").TestClient
BASE = "http://127.0.0.1"


def _png(data: bytes) -> np.ndarray:
    import png  # pypng: a dependency, so the check does not rely on the encoder under test

    w, h, rows, info = png.Reader(bytes=data).asRGB8()
    return np.vstack([np.asarray(r, np.uint8) for r in rows]).reshape(h, w, 3)


def _imgs(html: str) -> list[str]:
    return [unescape(u) for u in re.findall(r'<img src="([^"]+)"', html)]


@pytest.fixture(scope="module")
def client(site, tmp_path_factory):
    cache = tmp_path_factory.mktemp("data") / "cache" / "crops"
    app = create_app(site.engine, site.ids, [site.cohort], cache_dir=cache, reviewer="dr.web")
    with TestClient(app, base_url=BASE) as c:
        c.app_state = app.state.web
        c.cache_dir = cache
        yield c


# -- pages ---------------------------------------------------------------------------------------
def test_index_lists_every_patient_with_its_counts(client, site):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    patients = site.engine.run("patients")
    pending = list_proposals(site.engine, status="pending")
    for p in patients:
        row = re.search(rf'<a href="/patients/{p["patientId"]}[^"]*">{p["patientId"]}</a>(.*?)</tr>', r.text, re.S)
        assert row, p["patientId"]
        cells = [int(x) for x in re.findall(r'<td class="n">(?:<a [^>]*>)?(\d+)', row.group(1))]
        n_tracks = len({t["trackingUid"] for t in site.engine.run("patient_tracks", patientId=p["patientId"])})
        n_pending = sum(x["patientId"] == p["patientId"] for x in pending)
        n_links = len(list_possible(site.engine, status="pending", patient=p["patientId"]))
        assert cells == [p["studies"], p["lesions"], n_tracks, n_pending, n_links]
    assert f"{len(pending)} pending proposals" in r.text
    # privacy headers on every page
    assert r.headers["cache-control"] == "no-store" and "default-src 'self'" in r.headers["content-security-policy"]


def test_patient_timeline_has_every_study_track_and_lesion_crop(client, site):
    pid = max(site.engine.run("patients"), key=lambda p: p["studies"])["patientId"]
    r = client.get(f"/patients/{pid}")
    assert r.status_code == 200
    studies = site.engine.run("patient_studies", patientId=pid)
    heads = re.findall(r'study #(\d+)<br><span class="day">day (\d+)</span>', r.text)
    assert heads == [(str(s["study"]["studyIndex"]), str(s["study"]["studyDay"])) for s in studies]
    rows = site.engine.run("patient_timeline", patientId=pid)
    imgs = _imgs(r.text)
    for row in rows:  # every lesion's key-slice crop is in the page
        assert any(u.startswith(f"/crops/lesion/{row['lesionId']}.png") for u in imgs), row["lesionId"]
    tracks = {t["trackingUid"]: t for t in site.engine.run("patient_tracks", patientId=pid)}
    assert r.text.count('<svg class="chart"') == len(tracks)  # one chart per track
    for t in tracks.values():
        assert f'class="badge status-{t["status"]}"' in r.text
    # the track's pending proposals sit in their study's cell
    for p in list_proposals(site.engine, status="pending", patient=pid):
        assert any(u.startswith(f"/crops/proposal/{p['proposalId']}.png") for u in imgs)
    assert client.get("/patients/P-unknown").status_code == 404


def test_lesion_page_shows_its_data_track_and_similar_lesions_with_distances(client, site):
    lid = site.engine.run("patient_timeline", patientId=site.engine.run("patients")[0]["patientId"])[0]["lesionId"]
    r = client.get(f"/lesions/{lid}?window=lung")
    assert r.status_code == 200
    imgs = _imgs(r.text)
    assert f"/crops/lesion/{lid}.png?window=lung&size=320" in imgs
    from lesiondb.embedding import similar

    near = similar(site.engine, lid, k=8)
    assert len(near) == 8
    for n in near:
        assert f"/crops/lesion/{n['lesionId']}.png?window=lung&size=128" in imgs
        assert f"distance {n['distance']:.3f}" in r.text
    props = site.engine.run("lesion_detail", lesionId=lid)[0]["lesion"]
    assert props["seriesId"] in r.text and f"{props['longDiameterMm']:.4g} mm" in r.text
    assert client.get("/lesions/L-unknown").status_code == 404


def test_queue_shows_each_pending_proposal_with_its_box_track_lesions_and_score_terms(client, site):
    r = client.get("/proposals")
    assert r.status_code == 200
    pending = list_proposals(site.engine, status="pending")
    assert len(pending) >= 3
    members = {}
    for x in site.engine.run("track_members", trackingUids=[p["trackingUid"] for p in pending]):
        members.setdefault(x["trackingUid"], []).append(x["lesionId"])
    for p in pending:
        item = re.search(rf'<article class="review-item" id="item-{p["proposalId"]}".*?</article>', r.text, re.S)
        assert item, p["proposalId"]
        body = item.group(0)
        assert f"/crops/proposal/{p['proposalId']}.png" in body
        for lid in members[p["trackingUid"]]:
            assert f"/crops/lesion/{lid}.png" in body
        for term in p["scoreTerms"].split(", "):
            name, value = term.split("=")
            assert re.search(rf"<th>{name}</th>.*?{float(value):.2f}</td>", body, re.S), term
        assert f'action="/proposals/{p["proposalId"]}/accept"' in body and f"/proposals/{p['proposalId']}/reject" in body
    # the uncertain links are the second kind of item
    links = list_possible(site.engine, status="pending")
    assert links
    for x in links:
        assert f'id="item-{x["reviewId"]}"' in r.text and f"/crops/lesion/{x['candidateLesionId']}.png" in r.text
    assert '<script src="/static/review.js"' in r.text
    # one patient's queue
    pid = pending[0]["patientId"]
    r1 = client.get(f"/proposals?patient={pid}")
    assert r1.text.count('data-kind="proposal"') == sum(p["patientId"] == pid for p in pending)


def test_static_assets_are_served_locally(client):
    for path, kind in (("/static/review.js", "javascript"), ("/static/style.css", "text/css"),
                       ("/static/favicon.svg", "image/svg")):
        r = client.get(path)
        assert r.status_code == 200 and kind in r.headers["content-type"], path
    # no page refers to anything outside the server
    for path in ("/", "/proposals"):
        assert not re.search(r'(src|href)="(https?:)?//', client.get(path).text)


# -- crops ---------------------------------------------------------------------------------------
def test_crops_are_pngs_of_the_size_asked_whose_pixels_change_with_the_window(client, site):
    lid = site.engine.run("patient_timeline", patientId=site.engine.run("patients")[0]["patientId"])[0]["lesionId"]
    got = {}
    for w in WINDOWS:
        r = client.get(f"/crops/lesion/{lid}.png?window={w}&size=96")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert r.headers["x-lesiondb-crop"] == "image"
        got[w] = _png(r.content)
        assert got[w].shape == (96, 96, 3)
        assert got[w].std() > 5  # an image, not a flat square
    assert not np.array_equal(got["soft"], got["lung"]) and not np.array_equal(got["soft"], got["bone"])
    assert not np.array_equal(got["lung"], got["bone"])
    # soft tissue (~40 HU) is near white in the lung window, dark grey in the bone window
    assert got["lung"].mean() > got["bone"].mean()
    big = _png(client.get(f"/crops/lesion/{lid}.png?size=300").content)
    assert big.shape == (300, 300, 3)
    assert client.get(f"/crops/lesion/{lid}.png?window=brain").status_code == 400


def test_proposal_crop_draws_its_box(client, site):
    p = list_proposals(site.engine, status="pending")[0]
    page = client.get("/proposals").text
    url = next(u for u in _imgs(page) if u.startswith(f"/crops/proposal/{p['proposalId']}.png"))
    r = client.get(url)
    assert r.status_code == 200 and r.headers["x-lesiondb-crop"] == "image"
    rgb = _png(r.content)
    orange = (rgb[:, :, 0] > 200) & (rgb[:, :, 1] > 120) & (rgb[:, :, 1] < 220) & (rgb[:, :, 2] < 60)
    assert orange.sum() > 40  # the box, in the proposal colour; CT pixels are grey
    assert r.headers["cache-control"].startswith("private")


def test_crops_are_cached_in_memory_and_in_a_private_folder(client, site):
    lid = site.engine.run("patient_timeline", patientId=site.engine.run("patients")[1]["patientId"])[0]["lesionId"]
    cache = client.app_state.cache
    first = client.get(f"/crops/lesion/{lid}.png?window=bone&size=70").content
    hits = cache.hits
    again = client.get(f"/crops/lesion/{lid}.png?window=bone&size=70").content
    assert again == first and cache.hits == hits + 1
    folder = client.cache_dir
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = list(folder.glob("*.png"))
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    cache.clear_memory()  # from the folder now
    assert client.get(f"/crops/lesion/{lid}.png?window=bone&size=70").content == first


def test_unknown_items_get_a_placeholder_not_an_error_page(client):
    r = client.get("/crops/lesion/L-nope.png")
    assert r.status_code == 404 and r.headers["content-type"] == "image/png"
    assert r.headers["x-lesiondb-crop"] == "placeholder"


@pytest.mark.parametrize("images", ["none", "elsewhere"])
def test_without_reachable_images_the_pages_show_placeholders(site, tmp_path, images):
    folders = [] if images == "none" else [tmp_path]  # an existing folder without the series
    app = create_app(site.engine, site.ids, folders)
    with TestClient(app, base_url=BASE) as c:
        page = c.get("/proposals")
        assert page.status_code == 200
        urls = _imgs(page.text)
        assert urls
        for u in urls[:6]:
            r = c.get(u)
            assert r.status_code == 200 and r.headers["content-type"] == "image/png"
            assert r.headers["x-lesiondb-crop"] == "placeholder"
            assert r.headers["x-lesiondb-crop-reason"] == ("no-images-folder" if images == "none" else "series-not-found")
            size = int(re.search(r"size=(\d+)", u).group(1))
            assert _png(r.content).shape == (size, size, 3)
            assert r.headers["cache-control"] == "no-store"  # images added later are shown
        pid = site.engine.run("patients")[0]["patientId"]
        assert c.get(f"/patients/{pid}").status_code == 200


# -- guards --------------------------------------------------------------------------------------
def test_requests_for_another_host_are_refused(site):
    app = create_app(site.engine, site.ids, [])
    with TestClient(app, base_url="http://attacker.example") as c:
        assert c.get("/").status_code == 400  # DNS rebinding: the Host is not ours


def test_a_decision_needs_the_page_token_and_the_same_origin(client, site):
    pid = list_proposals(site.engine, status="pending")[0]["proposalId"]
    r = client.post(f"/proposals/{pid}/accept", data={"by": "x"})
    assert r.status_code == 403
    token = client.app_state.token
    r = client.post(f"/proposals/{pid}/reject", data={"by": "x", "token": token},
                    headers={"Origin": "http://attacker.example"})
    assert r.status_code == 403
    assert list_proposals(site.engine, proposal=pid)[0]["status"] == "pending"  # nothing changed
    assert client.post(f"/proposals/{pid}/approve", data={"token": token}).status_code == 404


# -- privacy -------------------------------------------------------------------------------------
def test_no_source_identifier_in_any_page(client, site, cohort_identifiers):
    assert len(cohort_identifiers) > 10
    paths = ["/", "/proposals"]
    for p in site.engine.run("patients"):
        paths.append(f"/patients/{p['patientId']}")
        paths += [f"/lesions/{r['lesionId']}" for r in site.engine.run("patient_timeline", patientId=p["patientId"])]
    text = ""
    for path in paths:
        r = client.get(path)
        assert r.status_code == 200, path
        text += r.text
    found = {i for i in cohort_identifiers if i in text}
    assert found == set()
    assert str(site.cohort) not in text  # no local path either


# -- decisions: the same functions as the CLI ----------------------------------------------------
def _dump(engine) -> set[str]:
    """Every node and relationship as canonical JSON (ids by their id property; the times the
    two graphs were built at dropped — createdAt, keyClaimedAt, … — the review's times kept: the
    test fixes them)."""
    def clean(props):
        return {k: v for k, v in props.items()
                if k != "embedding" and (not k.endswith("At") or k in ("reviewedAt", "annotatedAt"))}

    def key(labels, props):
        for k in ("proposalId", "lesionId", "studyId", "patientId", "trackingUid", "modelId", "clusterId"):
            if k in props:
                return f"{labels[0]}:{props[k]}"
        return json.dumps([labels, clean(props)], sort_keys=True, default=str)

    nodes = engine._read("MATCH (n) RETURN labels(n) AS l, properties(n) AS p", {})
    rels = engine._read("MATCH (a)-[r]->(b) RETURN labels(a) AS la, properties(a) AS pa, type(r) AS t, "
                        "properties(r) AS p, labels(b) AS lb, properties(b) AS pb", {})
    out = {json.dumps(["node", sorted(n["l"]), clean(n["p"])], sort_keys=True, default=str) for n in nodes}
    out |= {json.dumps(["rel", key(r["la"], r["pa"]), r["t"], clean(r["p"]), key(r["lb"], r["pb"])], sort_keys=True,
                       default=str) for r in rels}
    return out


@pytest.fixture
def decisions_at_a_fixed_time(monkeypatch):
    monkeypatch.setattr("lesiondb.mining.review.now_iso", lambda: "2030-01-01T00:00:00Z")
    monkeypatch.setattr("lesiondb.tracking.review._now", lambda: "2030-01-01T00:00:00Z")


def test_accept_in_the_page_changes_the_graph_as_lesiondb_review_accept(fresh_graph, decisions_at_a_fixed_time,
                                                                         monkeypatch):
    """Two identical graphs (the embedded engine: the Neo4j tier runs the read-only tests above);
    one proposal accepted in the page on one, by `lesiondb review accept` on the other."""
    page_graph, cli_graph, ids = fresh_graph(), fresh_graph(), Pseudonymizer.from_text(KEY)
    pid = list_proposals(page_graph, status="pending")[0]["proposalId"]
    assert [p["proposalId"] for p in list_proposals(cli_graph, status="pending")][0] == pid
    before_page, before_cli = _dump(page_graph), _dump(cli_graph)
    assert before_page == before_cli

    app = create_app(page_graph, ids, [], reviewer="server-default")
    with TestClient(app, base_url=BASE) as c:
        token = app.state.web.token
        r = c.post(f"/proposals/{pid}/accept", data={"by": "dr.smith", "token": token},
                   headers={"Accept": "application/json"})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["status"] == "accepted" and out["lesionId"]
        # the queue no longer holds it; its track now does
        assert f'id="item-{pid}"' not in c.get("/proposals").text

    monkeypatch.setattr(AppContext, "engine", lambda self: cli_graph)
    monkeypatch.setattr(AppContext, "close", lambda self: None)
    res = CliRunner().invoke(cli, ["--no-progress", "review", "accept", pid, "--by", "dr.smith", "--json"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["lesionId"] == out["lesionId"]

    after_page, after_cli = _dump(page_graph), _dump(cli_graph)
    assert after_page != before_page  # the page changed the graph …
    assert (after_page - before_page, before_page - after_page) == (after_cli - before_cli, before_cli - after_cli)
    assert after_page == after_cli  # … exactly as the CLI did


def test_reject_from_a_plain_form_post_redirects_back_to_the_queue(fresh_graph):
    graph, ids = fresh_graph(), Pseudonymizer.from_text(KEY)
    pid = list_proposals(graph, status="pending")[1]["proposalId"]
    app = create_app(graph, ids, [], reviewer="server-default")
    with TestClient(app, base_url=BASE) as c:
        r = c.post(f"/proposals/{pid}/reject", data={"by": "", "reason": "a vessel", "token": app.state.web.token},
                   follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == f"/proposals?done={pid}"
        got = list_proposals(graph, proposal=pid)[0]
        assert (got["status"], got["reviewedBy"], got["rejectReason"]) == ("rejected", "server-default", "a vessel")
        # accepting it now contradicts the decision: refused with the library's message
        r = c.post(f"/proposals/{pid}/accept", data={"token": app.state.web.token},
                   headers={"Accept": "application/json"})
        assert r.status_code == 409 and "rejected" in r.json()["error"]


def test_links_are_accepted_into_the_track_or_rejected_with_a_reason(fresh_graph, decisions_at_a_fixed_time):
    graph, other, ids = fresh_graph(), fresh_graph(), Pseudonymizer.from_text(KEY)
    link, *_ = list_possible(graph, status="pending")
    app = create_app(graph, ids, [])
    with TestClient(app, base_url=BASE) as c:
        tok = {"token": app.state.web.token}
        r = c.post(f"/links/{link['reviewId']}/accept", data={"by": "dr.a", **tok}, headers={"Accept": "application/json"})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "accepted"
    members = {x["lesionId"] for x in graph.run("lesion_track", lesionId=link["memberLesionId"])}
    assert link["candidateLesionId"] in members  # it joined the member's track
    other_link, *_ = list_possible(other, status="pending")
    app2 = create_app(other, ids, [])
    with TestClient(app2, base_url=BASE) as c:
        r = c.post(f"/links/{other_link['reviewId']}/reject",
                   data={"by": "dr.b", "reason": "different organ", "token": app2.state.web.token},
                   headers={"Accept": "application/json"})
        assert r.status_code == 200 and r.json()["status"] == "rejected"
    got = list_possible(other, review_id=other_link["reviewId"])[0]
    assert (got["status"], got["reviewedBy"], got["rejectReason"]) == ("rejected", "dr.b", "different organ")
