"""The Cypher files reach an installed (non-editable) wheel."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.fail(f"building the wheel failed:\n{res.stderr[-2000:]}")
    [whl] = out.glob("lesiondb-*.whl")
    return whl


def test_wheel_contains_every_cypher_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    repo_files = {f"lesiondb/cypher/{p.relative_to(REPO / 'cypher').as_posix()}"
                  for p in (REPO / "cypher").rglob("*.cypher")}
    assert repo_files and repo_files <= names, sorted(repo_files - names)[:5]


def test_wheel_ships_the_default_model(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    model_dir = REPO / "lesiondb" / "models" / "default"
    if not (model_dir / "model.pt").is_file():
        pytest.fail(f"no default model in the checkout ({model_dir}); build it with {model_dir}/train_default.sh")
    assert {"lesiondb/models/default/model.pt", "lesiondb/models/default/model_card.json"} <= names


def test_wheel_ships_the_web_templates_and_assets(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    web = REPO / "lesiondb" / "web"
    assets = {f"lesiondb/web/{p.relative_to(web).as_posix()}" for sub in ("templates", "static")
              for p in (web / sub).rglob("*") if p.is_file()}
    assert {"lesiondb/web/templates/queue.html", "lesiondb/web/static/review.js"} <= assets
    assert assets <= names, sorted(assets - names)[:5]


def test_installed_wheel_loads_queries_from_inside_the_package(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import lesiondb, lesiondb.graph.queries as q; from pathlib import Path;"
        "d = q.query_dir(); assert Path(lesiondb.__file__).parent in d.parents, d;"
        "assert q.load('upsert_lesions', 'falkordb').text;"
        "assert q.schema('neo4j'); print(d)"
    )
    # Run from an empty folder with only the unpacked wheel on the path (not the checkout).
    res = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {code}"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert str(site) in res.stdout
