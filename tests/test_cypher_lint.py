"""The Neo4j-dialect Cypher lint (tools/cypher-lint/lint.mjs, Neo4j's own parser) on cypher/.

Needs node and `npm ci` in tools/cypher-lint; skipped with the reason otherwise (CI's lint job
runs the linter itself in any case).
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINT_DIR = REPO / "tools" / "cypher-lint"
LINT = LINT_DIR / "lint.mjs"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node is not installed (the Cypher lint needs Node >= 20)"),
    pytest.mark.skipif(not (LINT_DIR / "node_modules" / "@neo4j-cypher" / "language-support").is_dir(),
                       reason="Cypher lint not installed: run `npm ci` in tools/cypher-lint"),
]

HEADER = "// name: {name}\n// params: {params}\n// returns: x\n// idempotent: read-only\n"


def lint(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([NODE, str(LINT), "--root", str(root), *args], capture_output=True, text=True,
                          timeout=300, cwd=root)


def test_repo_queries_pass_neo4j_parser():
    res = lint(REPO / "cypher", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)
    assert out["failures"] == 0
    files = set(out["files"])
    # What the Neo4j engine runs: every core query not overridden, every neo4j variant and schema file.
    from lesiondb.graph import queries

    expected = {str(queries.load(n, "neo4j").path.relative_to(REPO / "cypher")) for n in queries.names("neo4j")}
    expected |= {str(q.path.relative_to(REPO / "cypher")) for q in queries.schema("neo4j")}
    assert files == expected
    assert not any(f.startswith("falkordb/") for f in files)


def _write(root: Path, rel: str, name: str, params: str, body: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(HEADER.format(name=name, params=params) + body, encoding="utf-8")


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """A copy of cypher/ with faults injected in some files; the linter's findings on it."""
    root = tmp_path_factory.mktemp("cypher") / "cypher"
    shutil.copytree(REPO / "cypher", root)
    # Faults the linter must report (each line 5 = first body line).
    _write(root, "core/broken_syntax.cypher", "broken_syntax", "none",
           "MATCH (p:Patient RETURN p\n")
    _write(root, "core/undeclared_param.cypher", "undeclared_param", "patientId: STRING",
           "MATCH (p:Patient {patientId: $patientId}) RETURN p LIMIT $limit\n")
    _write(root, "core/unused_param.cypher", "unused_param", "patientId: STRING, k: INTEGER",
           "MATCH (p:Patient {patientId: $patientId}) RETURN p\n")
    _write(root, "core/deprecated_fn.cypher", "deprecated_fn", "none",
           "MATCH (p:Patient) RETURN id(p) AS i\n")
    _write(root, "neo4j/falkor_fn.cypher", "falkor_fn", "v: LIST<FLOAT>",
           "MATCH (l:Lesion) RETURN vecf32($v) AS v\n")
    _write(root, "falkordb/falkor_fn.cypher", "falkor_fn", "v: LIST<FLOAT>",
           "MATCH (l:Lesion) RETURN vecf32($v) AS v\n")
    _write(root, "neo4j/schema/99_bad.cypher", "schema_bad", "none",
           "CREATE CONSTRAINT bad IF NOT EXISTS FOR (n:Lesion) REQUIRE n.lesionId IS UNIQE\n")
    _write(root, "core/typo_label.cypher", "typo_label", "none",
           "MATCH (l:Lesoin) RETURN l.lesionId AS lesionId\n")
    # GDS procedures only where the header says `// requires: gds`, and only ones that exist.
    _write(root, "neo4j/gds_unrequired.cypher", "gds_unrequired", "g: STRING",
           "CALL gds.graph.drop($g, false) YIELD graphName RETURN graphName\n")
    (root / "neo4j/gds/gds_typo.cypher").write_text(
        HEADER.format(name="gds_typo", params="g: STRING") + "// requires: gds\n"
        "CALL gds.louvian.stream($g) YIELD nodeId RETURN nodeId\n", encoding="utf-8")
    # Printed as a warning but passing: a cartesian product of two unique-id lookups (a common write).
    _write(root, "core/two_lookups.cypher", "two_lookups", "rows: LIST<MAP>",
           "UNWIND $rows AS row\nMATCH (a:Lesion {lesionId: row.a}), (b:Lesion {lesionId: row.b})\n"
           "MERGE (a)-[r:SIMILAR_TO]->(b)\nRETURN count(r) AS n\n")
    # Not linted for Neo4j: a FalkorDB-only variant, and a core file overridden by a valid neo4j one.
    _write(root, "falkordb/dialect_only.cypher", "dialect_only", "none", "MATCH (n RETURN n\n")
    _write(root, "core/overridden.cypher", "overridden", "none", "MATCH (n RETURN n\n")
    _write(root, "neo4j/overridden.cypher", "overridden", "none", "MATCH (n) RETURN count(n) AS n\n")
    _write(root, "falkordb/overridden.cypher", "overridden", "none", "MATCH (n) RETURN count(n) AS n\n")
    res = lint(root)
    return root, res


def _findings(res) -> list[tuple[str, int, int, str]]:
    out = []
    for line in res.stdout.splitlines():
        path, ln, col, msg = line.split(":", 3)
        out.append((path, int(ln), int(col), msg.strip()))
    return out


def test_broken_queries_fail_the_lint(broken):
    _, res = broken
    assert res.returncode == 1, res.stdout + res.stderr
    findings = _findings(res)
    two = [f for f in findings if f[0] == "core/two_lookups.cypher"]  # a plain (non-failing) warning only
    assert two and all(f[1:3] == (6, 1) and f[3].startswith("warning: ") and "cartesian product" in f[3]
                       for f in two), two
    failing = {f[0] for f in findings if f[0] != "core/two_lookups.cypher"}
    assert failing == {"core/broken_syntax.cypher", "core/undeclared_param.cypher", "core/unused_param.cypher",
                       "core/deprecated_fn.cypher", "neo4j/falkor_fn.cypher", "neo4j/schema/99_bad.cypher",
                       "core/typo_label.cypher", "neo4j/gds_unrequired.cypher", "neo4j/gds/gds_typo.cypher"}


@pytest.mark.parametrize(("file", "line", "col", "pattern"), [
    ("core/broken_syntax.cypher", 5, 18, "error: Invalid input 'RETURN'"),
    ("core/undeclared_param.cypher", 5, 58, "error: Parameter $limit is not defined"),
    ("core/unused_param.cypher", 2, 1, "error: parameter $k is declared in the header but never used"),
    ("core/deprecated_fn.cypher", 5, 26, "warning (deprecation):"),
    ("neo4j/falkor_fn.cypher", 5, 25, "error: Function vecf32 is not present"),
    ("neo4j/schema/99_bad.cypher", 5, None, "error: Invalid input 'UNIQE'"),
    ("core/typo_label.cypher", 5, 10, "warning (unknown name): Label Lesoin is not present"),
    ("neo4j/gds_unrequired.cypher", 5, 6, "error: Procedure gds.graph.drop is not present"),
    ("neo4j/gds/gds_typo.cypher", 6, 6, "error: Procedure gds.louvian.stream is not present"),
    ("core/two_lookups.cypher", 6, 1, "warning: If a part of a query contains multiple disconnected patterns"),
])
def test_each_fault_is_reported_at_its_position(broken, file, line, col, pattern):
    _, res = broken
    hits = [f for f in _findings(res) if f[0] == file and f[1] == line and pattern in f[3]]
    assert hits, f"{file}:{line}: {pattern!r} not in\n{res.stdout}"
    if col is not None:
        assert hits[0][2] == col


def test_warnings_pass_unless_strict(tmp_path):
    root = tmp_path / "cypher"
    _write(root, "core/two_lookups.cypher", "two_lookups", "a: STRING, b: STRING",
           "MATCH (x:Lesion {lesionId: $a}), (y:Lesion {lesionId: $b})\nMERGE (x)-[:SIMILAR_TO]->(y)\n"
           "RETURN x.lesionId AS a\n")
    _write(root, "neo4j/schema/01_lesion_unique.cypher", "schema_lesion_unique", "none",
           "CREATE CONSTRAINT lesion_lesionId IF NOT EXISTS FOR (n:Lesion) REQUIRE n.lesionId IS UNIQUE\n")
    res = lint(root, "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)
    assert [(f["severity"], f["fails"]) for f in out["findings"]] == [("warning", False)]
    assert lint(root, "--strict", "--quiet").returncode == 1


def test_bad_root_is_a_usage_error(tmp_path):
    res = subprocess.run([NODE, str(LINT), "--root", str(tmp_path / "missing")], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2
    assert "is not a directory" in res.stderr
