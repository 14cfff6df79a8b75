"""lesiondb.web.server: which hosts count as this machine, which Host headers are answered, the
demo's images by default, and uvicorn in a thread answering over real HTTP."""
from __future__ import annotations

import json
import urllib.request

from lesiondb.web import create_app
from lesiondb.web.server import ServerThread, allowed_hosts, demo_images, is_loopback


def test_loopback_hosts():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "192.168.1.5", "example.org", "::"))


def test_allowed_hosts_are_the_loopback_names_and_the_host_asked_for():
    assert allowed_hosts("127.0.0.1") == ["127.0.0.1", "localhost"]
    assert allowed_hosts("10.0.0.7") == ["10.0.0.7", "127.0.0.1", "localhost"]
    assert allowed_hosts("0.0.0.0") == ["*"]


def test_demo_images_only_where_the_demo_wrote_its_cohort(tmp_path):
    assert demo_images(tmp_path) is None
    (tmp_path / "demo").mkdir()
    assert demo_images(tmp_path) is None
    (tmp_path / "demo" / "cohort.json").write_text(json.dumps({"generator": "lesiondb synth"}))
    assert demo_images(tmp_path) == tmp_path / "demo"


def test_server_thread_serves_the_app_over_http(pristine):
    app = create_app(pristine, None, [], scan_images_on_start=False)
    with ServerThread(app) as url:
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{url}/proposals") as r:
            html = r.read().decode()
            assert r.status == 200 and r.headers["X-Content-Type-Options"] == "nosniff"
        assert "Review queue" in html and 'data-kind="proposal"' in html
