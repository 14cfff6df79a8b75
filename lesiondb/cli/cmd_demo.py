"""``lesiondb demo``: a synthetic cohort through the whole pipeline that exists, then how to query it.

The demo is a list of pipeline steps (:data:`STEPS`). Each step names the modules it needs; a step
whose modules are not in this build is skipped (and listed as skipped), so later stages (embed,
match, mine) are added by appending a :class:`Step` here once their modules exist.
"""
from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from .common import emit, handle_errors, pass_app, progress_bar

DEMO_DIR = "demo"


@dataclass
class DemoRun:
    """What the steps share: the app, the options and what earlier steps produced."""

    app: Any
    patients: int
    seed: int
    cohort_dir: Path
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    name: str
    requires: tuple[str, ...]  # importable modules the step needs; missing → skipped
    run: Callable[[DemoRun], dict[str, Any]]
    about: str = ""

    def missing(self) -> list[str]:
        out = []
        for mod in self.requires:
            try:
                found = importlib.util.find_spec(mod) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                out.append(mod)
        return out


def _synth(run: DemoRun) -> dict[str, Any]:
    from ..synth.generate import generate_cohort

    with progress_bar(run.app, None, "demo: synth", "study") as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        summary = generate_cohort(run.cohort_dir, run.patients, seed=run.seed, images=True,
                                  overwrite=True, progress=progress)
    d = summary.to_dict()
    return {k: d[k] for k in ("out", "patients", "studies", "lesion_instances", "annotated", "withheld",
                              "slices", "errors") if k in d}


def _ingest(run: DemoRun) -> dict[str, Any]:
    from ..core.pseudonym import Pseudonymizer
    from ..ingest.dicom import ingest_cohort

    ids = Pseudonymizer.from_data_dir(run.app.data_dir)
    with progress_bar(run.app, None, "demo: ingest", "lesion") as bar:
        def set_total(n: int) -> None:
            bar.total = n
            bar.refresh()

        report = ingest_cohort(run.app.engine(), run.cohort_dir, ids, progress=bar.update, set_total=set_total)
    d = report.to_dict()
    return {"written": d["written"], "unchanged": d["unchanged"], "rejected": d["rejected"],
            "studies": d.get("studies"), "errors": d["errors"][:20]}


class StepSkipped(Exception):
    """A step that cannot run in this installation (e.g. no encoder weights); the demo goes on."""


def _embed(run: DemoRun) -> dict[str, Any]:
    from ..embedding.stage import embed_cohort, load_encoder
    from ..errors import ModelError

    try:
        load_encoder(None)
    except (ModelError, FileNotFoundError) as exc:
        raise StepSkipped(str(exc)) from exc
    out = embed_cohort(run.app, run.cohort_dir)
    return {k: v for k, v in out.items() if not isinstance(v, list | dict)}


def _match(run: DemoRun) -> dict[str, Any]:
    from ..tracking.match import match_graph

    with progress_bar(run.app, None, "demo: match", "patient") as bar:
        rep = match_graph(run.app.engine(), progress=bar.update, workers=1)
    d = rep.to_dict()
    return {k: d[k] for k in ("patients", "lesions", "tracks", "sameLesionEdges", "statuses") if k in d}


def _mine(run: DemoRun) -> dict[str, Any]:
    from ..mining.run import dicom_loader, embedder_or_note, mine

    # like `lesiondb mine`: candidates are also scored by embedding distance to the track's
    # lesions when the default encoder is installed (a note says so when it is not)
    embedder, model_id, note = embedder_or_note()
    with progress_bar(run.app, None, "demo: mine", "patient") as bar:
        out = mine(run.app.engine(), dicom_loader(run.cohort_dir), embedder=embedder, model_id=model_id,
                   progress=bar.update)
    out = {k: v for k, v in out.items() if not isinstance(v, list | dict)}
    out["modelId"] = model_id or "none"
    if note:
        out["embedNote"] = note
    return out


#: The demo pipeline, in order. Later stages append here (e.g. Step("embed", ("lesiondb.embedding.stage",), …)).
STEPS: list[Step] = [
    Step("synth", ("lesiondb.synth.generate",), _synth, "generate a synthetic CT cohort (DICOM + annotations)"),
    Step("ingest", ("lesiondb.ingest.dicom",), _ingest, "ingest its series and annotations into the graph"),
    Step("embed", ("lesiondb.embedding.stage", "lesiondb.nn"), _embed,
         "embed every lesion with the default encoder and link each to its nearest (SIMILAR_TO)"),
    Step("match", ("lesiondb.tracking.match",), _match, "match lesions across each patient's studies into tracks"),
    Step("mine", ("lesiondb.mining.run",), _mine, "propose lesions that tracks say were missed (for review)"),
]


def run_demo(app: Any, patients: int, seed: int, steps: list[Step] | None = None) -> dict[str, Any]:
    """Run the demo steps; returns what was built (for JSON) — used by the command and tests."""
    t0 = time.perf_counter()
    run = DemoRun(app=app, patients=patients, seed=seed, cohort_dir=Path(app.data_dir) / DEMO_DIR)
    before = app.client().stats()["nodes"]
    out_steps = []
    for step in STEPS if steps is None else steps:
        missing = step.missing()
        if missing:
            out_steps.append({"name": step.name, "status": "skipped",
                              "reason": f"module(s) not in this build: {', '.join(missing)}"})
            continue
        t = time.perf_counter()
        try:
            result = step.run(run)
        except StepSkipped as exc:
            out_steps.append({"name": step.name, "status": "skipped", "reason": str(exc)})
            continue
        run.results[step.name] = result
        out_steps.append({"name": step.name, "status": "done", "seconds": round(time.perf_counter() - t, 2),
                          "about": step.about, **result})
    stats = app.client().stats()
    return {
        "dataDir": str(app.data_dir), "cohort": str(run.cohort_dir), "seconds": round(time.perf_counter() - t0, 2),
        "steps": out_steps, "stats": stats, "nodesBefore": sum(before.values()),
        "nodesAdded": sum(stats["nodes"].values()) - sum(before.values()),
        "try": _next_commands(app),
    }


def _next_commands(app: Any) -> list[str]:
    from ..graph.embedded import default_data_dir

    dd = "" if Path(app.data_dir) == default_data_dir() else f"--data-dir {app.data_dir} "
    py_dd = "" if not dd else f"data_dir={str(app.data_dir)!r}"
    return [
        f"lesiondb {dd}stats",
        f"lesiondb {dd}query patients",
        f"lesiondb {dd}query lesions -p typeName=liver --json",
        f"lesiondb {dd}query --list",
        f"lesiondb {dd}query patient_timeline -p patientId=<id from `query patients`>",
        f"lesiondb {dd}review list",
        f"python -c \"import lesiondb; db = lesiondb.connect({py_dd}); print(db.lesions().head())\"",
    ]


def _text(o: dict[str, Any]) -> str:
    lines = [f"lesiondb demo: done in {o['seconds']:.1f} s (data dir {o['dataDir']})"]
    for s in o["steps"]:
        if s["status"] == "skipped":
            lines.append(f"  {s['name']:<7} skipped: {s['reason']}")
        elif s["name"] == "synth":
            lines.append(f"  {s['name']:<7} {s.get('patients')} patients, {s.get('studies')} studies, "
                         f"{s.get('lesion_instances')} lesions ({s.get('annotated')} annotated, "
                         f"{s.get('withheld')} withheld), {s.get('slices')} CT slices in {o['cohort']} "
                         f"({s['seconds']:.1f} s)")
        elif s["name"] == "ingest":
            lines.append(f"  {s['name']:<7} {s.get('written')} lesions written, {s.get('unchanged')} unchanged, "
                         f"{s.get('rejected')} rejected, {s.get('studies')} studies ({s['seconds']:.1f} s)")
            lines += [f"          rejected {e['source']}: {e['reason']}" for e in s.get("errors", [])]
        else:
            extra = ", ".join(f"{k} {v}" for k, v in s.items() if k not in ("name", "status", "seconds", "about"))
            lines.append(f"  {s['name']:<7} {extra} ({s['seconds']:.1f} s)")
    nodes = ", ".join(f"{k} {v}" for k, v in o["stats"]["nodes"].items())
    rels = ", ".join(f"{k} {v}" for k, v in o["stats"]["relationships"].items())
    lines.append(f"graph: {nodes}; {rels}")
    if o["nodesBefore"] and o["nodesAdded"]:
        lines.append(f"note: the graph already held {o['nodesBefore']} nodes; the demo cohort was added beside "
                     "them (use a fresh --data-dir for a demo on its own)")
    lines.append("try:")
    lines += [f"  {c}" for c in o["try"]]
    return "\n".join(lines)


@click.command("demo")
@click.option("--patients", default=6, show_default=True, type=click.IntRange(1, 200),
              help="Synthetic patients to generate (1–6 studies each).")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed of the cohort.")
@click.option("--json", "as_json", is_flag=True, help="Print what was built as JSON.")
@pass_app
@handle_errors
def command(app, patients: int, seed: int, as_json: bool) -> None:
    """Run the whole pipeline on a synthetic CT cohort and show how to query the result.

    The cohort is written to DATA_DIR/demo and goes through every pipeline step this build has
    (synth → ingest → embed → match → mine); then the graph's contents and example queries are printed.
    Re-running with the same options changes nothing in the graph; the cohort folder is regenerated.
    """
    emit(run_demo(app, patients, seed), as_json, _text)
