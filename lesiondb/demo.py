"""The demo: a synthetic CT cohort through the whole pipeline, on any workspace.

``run_demo(workspace, patients, seed)`` generates a cohort into ``DATA_DIR/demo`` and runs every
step a user would (:data:`STEPS`: synth → ingest, which embeds → match → mine), each through the
same library function as its command. A step that cannot run in this installation (no encoder
weights, say) is skipped with the reason and the demo goes on.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .core.progress import Progress
from .core.results import Result
from .graph import graph_stats
from .graph.embedded import default_data_dir
from .ingest import ingest_dicom
from .mining import StudyVolumes, load_embedder, mine
from .synth import generate_cohort
from .tracking import match_graph
from .workspace import Workspace

DEMO_DIR = "demo"


@dataclass
class DemoRun:
    """What the steps share: the workspace, the options and what earlier steps produced."""

    workspace: Workspace
    patients: int
    seed: int
    cohort_dir: Path
    progress: Progress | None = None
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


class StepSkipped(Exception):
    """A step that cannot run in this installation; the demo goes on."""


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[DemoRun], dict[str, Any]]
    about: str = ""


def _synth(run: DemoRun) -> dict[str, Any]:
    d = generate_cohort(run.cohort_dir, run.patients, seed=run.seed, images=True, overwrite=True,
                        progress=run.progress).to_json()
    return {k: d[k] for k in ("out", "patients", "studies", "lesion_instances", "annotated", "withheld",
                              "slices", "errors") if k in d}


def _ingest(run: DemoRun) -> dict[str, Any]:
    ws = run.workspace
    report = ingest_dicom(ws.engine(), run.cohort_dir, ws.ids(), progress=run.progress).to_json()
    out = {"written": report["written"], "unchanged": report["unchanged"], "rejected": report["rejected"],
           "studies": report.get("studies"), "errors": report["errors"][:20]}
    if "embedNote" in report:
        out["embedNote"] = report["embedNote"]
    else:
        out.update({k: report[k] for k in ("embedded", "totalEmbedded", "similarEdgesWritten") if k in report})
    return out


def _match(run: DemoRun) -> dict[str, Any]:
    d = match_graph(run.workspace.engine(), progress=run.progress, workers=1).to_json()
    return {k: d[k] for k in ("patients", "lesions", "tracks", "sameLesionEdges", "statuses") if k in d}


def _mine(run: DemoRun) -> dict[str, Any]:
    # like `lesiondb mine`: candidates are also scored by embedding distance to the track's
    # lesions when the default encoder is installed (a note says so when it is not)
    ws = run.workspace
    embedder, model_id, note = load_embedder()
    res = mine(ws.engine(), StudyVolumes(run.cohort_dir, ws.ids()), embedder=embedder, model_id=model_id,
               progress=run.progress)
    out = {k: v for k, v in res.to_json().items() if not isinstance(v, list | dict)}
    if note:
        out["embedNote"] = note
    return out


#: The demo pipeline, in order.
STEPS: list[Step] = [
    Step("synth", _synth, "generate a synthetic CT cohort (DICOM + annotations)"),
    Step("ingest", _ingest, "ingest its series and annotations; embed every lesion and link it to its nearest "
                            "(SIMILAR_TO)"),
    Step("match", _match, "match lesions across each patient's studies into tracks"),
    Step("mine", _mine, "propose lesions that tracks say were missed (for review)"),
]


@dataclass
class DemoResult(Result):
    """What the demo built, and commands to try next."""

    data_dir: str
    cohort: str
    seconds: float
    steps: list[dict[str, Any]]
    stats: dict[str, dict[str, int]]
    nodes_before: int
    nodes_added: int
    try_: list[str]  # "try" in JSON



def run_demo(workspace: Workspace, patients: int = 6, seed: int = 0, *, steps: list[Step] | None = None,
             progress: Progress | None = None) -> DemoResult:
    """Run the demo steps on ``workspace`` (its cohort goes to ``DATA_DIR/demo``)."""
    t0 = time.perf_counter()
    run = DemoRun(workspace, patients, seed, Path(workspace.data_dir) / DEMO_DIR, progress)
    before = graph_stats(workspace.engine())["nodes"]
    out_steps = []
    for step in STEPS if steps is None else steps:
        t = time.perf_counter()
        try:
            result = step.run(run)
        except StepSkipped as exc:
            out_steps.append({"name": step.name, "status": "skipped", "reason": str(exc)})
            continue
        run.results[step.name] = result
        out_steps.append({"name": step.name, "status": "done", "seconds": round(time.perf_counter() - t, 2),
                          "about": step.about, **result})
    stats = graph_stats(workspace.engine())
    return DemoResult(
        data_dir=str(workspace.data_dir), cohort=str(run.cohort_dir), seconds=round(time.perf_counter() - t0, 2),
        steps=out_steps, stats=stats, nodes_before=sum(before.values()),
        nodes_added=sum(stats["nodes"].values()) - sum(before.values()), try_=next_commands(workspace))


def next_commands(workspace: Workspace) -> list[str]:
    """What to try on the demo's graph (with the workspace's data dir when it is not the default)."""
    dd = "" if Path(workspace.data_dir) == default_data_dir() else f"--data-dir {workspace.data_dir} "
    py_dd = "" if not dd else f"data_dir={str(workspace.data_dir)!r}"
    return [
        f"lesiondb {dd}stats",
        f"lesiondb {dd}query patients",
        f"lesiondb {dd}query lesions -p typeName=liver --json",
        f"lesiondb {dd}query --list",
        f"lesiondb {dd}query patient_timeline -p patientId=<id from `query patients`>",
        f"lesiondb {dd}review list",
        f"lesiondb {dd}serve        # the review queue and patient timelines in your browser",
        f"python -c \"import lesiondb; db = lesiondb.connect({py_dd}); print(db.lesions().head())\"",
    ]
