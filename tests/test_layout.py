"""The package's layout holds: feature packages over a pure core; click only in cli/; no torch on
import of the package, its CLI or any feature package; ``lesiondb --help`` imports no command."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PKG = REPO / "lesiondb"
FEATURES = ("ingest", "embedding", "tracking", "mining", "synth", "interop")


def _imports(path: Path) -> set[str]:
    """Every module a file imports (relative imports resolved against its package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    pkg = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def test_nothing_below_the_cli_imports_click_or_the_cli():
    offenders = {}
    for f in PKG.rglob("*.py"):
        if "cli" in f.relative_to(PKG).parts[:1]:
            continue
        bad = {m for m in _imports(f) if m == "click" or m.startswith("click.") or m == "lesiondb.cli" or m.startswith("lesiondb.cli.")}
        if bad:
            offenders[str(f.relative_to(REPO))] = sorted(bad)
    assert offenders == {}


def test_the_core_imports_no_feature_package_engine_or_reader():
    for f in (PKG / "core").rglob("*.py"):
        mods = _imports(f)
        assert not {m for m in mods if m.split(".")[:2] in (["lesiondb", x] for x in
                    (*FEATURES, "graph", "datasets", "imaging", "nn", "cli"))}, f


def test_few_modules_at_the_top_and_no_stale_copies():
    top = sorted(p.name for p in PKG.glob("*.py"))
    assert len(top) <= 6, top
    assert not (REPO / "ithp").exists()
    for feature in FEATURES:
        assert (PKG / feature / "__init__.py").is_file()


def _fresh(code: str) -> dict:
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_importing_the_package_its_cli_and_features_does_not_import_torch():
    out = _fresh(
        "import importlib, json, pkgutil, sys\n"
        "import lesiondb, lesiondb.cli.main, lesiondb.client, lesiondb.demo, lesiondb.web\n"
        f"for f in {FEATURES!r}: importlib.import_module('lesiondb.' + f)\n"
        "import lesiondb.cli as c\n"
        "for m in pkgutil.iter_modules(c.__path__): importlib.import_module('lesiondb.cli.' + m.name)\n"
        "print(json.dumps({'torch': 'torch' in sys.modules}))")
    assert out == {"torch": False}


def test_help_lists_every_command_without_importing_one():
    out = _fresh(
        "import json, sys\n"
        "from click.testing import CliRunner\n"
        "from lesiondb.cli.main import cli\n"
        "r = CliRunner().invoke(cli, ['--help'])\n"
        "mods = sorted(m for m in sys.modules if m.startswith('lesiondb.cli.cmd_'))\n"
        "print(json.dumps({'code': r.exit_code, 'text': r.output, 'imported': mods}))")
    assert out["code"] == 0 and out["imported"] == []
    for name in ("demo", "ingest", "embed", "export", "match", "mine", "review", "similar", "stats", "synth", "train"):
        assert f"  {name} " in out["text"]
    assert "Run the whole pipeline" in out["text"]  # one-line help read from the command's source
