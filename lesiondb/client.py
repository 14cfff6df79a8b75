"""The Python client: every use case of lesiondb, and its reads as pandas DataFrames and networkx graphs.

>>> import lesiondb
>>> with lesiondb.connect(data_dir="~/lesions") as db:      # or uri="bolt://…"
...     db.ingest_dicom("cohort/")                            # records + embeddings + SIMILAR_TO
...     db.match(); db.mine(images="cohort/")                 # tracks, then proposals
...     df = db.lesions(typeName="liver")
...     g = db.to_networkx(df.patientId[0])

Each method calls the same library function as the matching ``lesiondb`` command and returns its
typed result (``.to_json()`` gives what ``--json`` prints), or a DataFrame for reads.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import embedding, ingest, mining, tracking
from .core.progress import Progress
from .datasets.deeplesion import file_names
from .embedding import EmbedOptions
from .graph import Engine, graph_stats
from .workspace import Workspace

_NO_LIMIT = 10**9


class Client:
    """A connection to one lesion graph. Use :func:`connect`, or pass a :class:`Workspace` (or an
    engine) in."""

    def __init__(self, workspace: Workspace | Engine, data_dir: str | os.PathLike | None = None,
                 owns_engine: bool = True, progress: Progress | None = None):
        if isinstance(workspace, Workspace):
            self.workspace = workspace
        else:  # an engine opened elsewhere
            self.workspace = Workspace(Path(data_dir) if data_dir else Workspace().data_dir, _engine=workspace)
        self._owns = owns_engine
        self.progress = progress

    @property
    def engine(self) -> Engine:
        return self.workspace.engine()

    @property
    def data_dir(self) -> Path:
        return self.workspace.data_dir

    # -- raw -----------------------------------------------------------------------------------
    def query(self, name: str, **params: Any) -> list[dict[str, Any]]:
        """Run a named read query; parameters the query declares but you omit are null."""
        q = self.engine.query(name)
        for k in q.params:
            params.setdefault(k, _NO_LIMIT if k == "limit" else None)
        return self.engine.run(name, **params)

    def stats(self) -> dict[str, dict[str, int]]:
        """``{"nodes": {label: count}, "relationships": {type: count}}``."""
        return graph_stats(self.engine)

    # -- ingest and embed ------------------------------------------------------------------------
    def ingest_deeplesion(self, dl_info: str | os.PathLike, images: str | os.PathLike | None = None, *,
                          embed: bool = True, model: str | os.PathLike | None = None,
                          keep_source_ids: bool = False, **embed_options: Any) -> ingest.IngestReport:
        """Ingest a DeepLesion DL_info.csv; with ``images`` (Images_png) embed its lesions too."""
        return ingest.ingest_deeplesion(self.engine, dl_info, self.workspace.ids(), images=images, embed=embed,
                                        model=model, embed_options=self._embed_options(**embed_options),
                                        keep_source_ids=keep_source_ids, progress=self.progress)

    def ingest_dicom(self, cohort: str | os.PathLike, annotations: str | os.PathLike | None = None, *,
                     embed: bool = True, model: str | os.PathLike | None = None, keep_source_ids: bool = False,
                     **embed_options: Any) -> ingest.IngestReport:
        """Ingest a folder of CT DICOM series with its annotations.csv, and embed its lesions."""
        return ingest.ingest_dicom(self.engine, cohort, self.workspace.ids(), annotations=annotations, embed=embed,
                                   model=model, embed_options=self._embed_options(**embed_options),
                                   keep_source_ids=keep_source_ids, progress=self.progress)

    def ingest_sr(self, reports: str | os.PathLike, images: str | os.PathLike, *, embed: bool = True,
                  model: str | os.PathLike | None = None, keep_source_ids: bool = False,
                  **embed_options: Any) -> ingest.IngestReport:
        """Ingest DICOM SR measurement reports (a folder or one file) over the CT series under
        ``images``, and embed their lesions (``lesiondb ingest sr``)."""
        from .interop import ingest_sr  # highdicom: loaded by the calls that need it

        return ingest_sr(self.engine, reports, images, self.workspace.ids(), keep_source_ids=keep_source_ids,
                         embed=embed, model=model, embed_options=self._embed_options(**embed_options),
                         progress=self.progress)

    def export_sr(self, out_dir: str | os.PathLike, images: str | os.PathLike, *, patient: str | None = None,
                  include_proposals: bool = False, overwrite: bool = False):
        """One DICOM SR measurement report per study into ``out_dir`` (``lesiondb export sr``);
        returns :class:`lesiondb.interop.SRExportResult`."""
        from .interop import export_sr  # highdicom: loaded by the calls that need it

        return export_sr(self.engine, out_dir, images, self.workspace.ids(), patient=patient,
                         include_proposals=include_proposals, overwrite=overwrite, progress=self.progress)

    def embed(self, images: str | os.PathLike | None = None, cohort: str | os.PathLike | None = None, *,
              model: str | os.PathLike | None = None, dl_info: str | os.PathLike | None = None,
              **embed_options: Any) -> dict[str, Any]:
        """Embed the graph's lesions from DeepLesion ``images`` and/or a DICOM ``cohort`` folder;
        with neither, rebuild the SIMILAR_TO edges from the stored embeddings (e.g. another ``k``).
        Returns ``{"deeplesion": EmbedResult, "cohort": EmbedResult}`` or ``{"edges": …}``."""
        opts = self._embed_options(**embed_options)
        out: dict[str, Any] = {}
        if images is None and cohort is None:
            out["edges"] = embedding.rebuild_edges(self.engine, k=opts.k, cache_dir=opts.cache_dir)
            return out
        encoder = embedding.load_encoder(model)
        ids = self.workspace.ids()
        if images is not None:
            names = file_names(dl_info, ids) if dl_info else None
            out["deeplesion"] = embedding.embed_deeplesion(self.engine, images, encoder, ids, file_names=names,
                                                           options=opts, progress=self.progress)
        if cohort is not None:
            out["cohort"] = embedding.embed_cohort(self.engine, cohort, encoder, ids, options=opts,
                                                   progress=self.progress)
        return out

    def _embed_options(self, **kw: Any) -> EmbedOptions:
        return EmbedOptions(**{"cache_dir": self.workspace.embedding_cache, **kw})

    # -- similarity services ---------------------------------------------------------------------
    def similar(self, lesion_id: str, k: int = 10, type: str | int | None = None,
                exclude_same_patient: bool = False):
        """The ``k`` lesions most similar to ``lesion_id`` (nearest first): lesionId, distance, rank,
        typeName, patientId, … (from its SIMILAR_TO edges; an exact scan when filters need more)."""
        return _similar_frame(embedding.similar(self.engine, lesion_id, k=k, type_name=type,
                                                exclude_same_patient=exclude_same_patient))

    def similar_to_vector(self, vector, k: int = 10, type: str | int | None = None, exact: bool = False):
        """The ``k`` lesions nearest to an embedding of the graph's model (vector index, or ``exact``)."""
        return _similar_frame(embedding.similar_to_vector(self.engine, vector, k=k, type_name=type, exact=exact))

    def similar_to_region(self, image: str | os.PathLike, box_px: tuple[float, float, float, float], k: int = 10,
                          *, model: str | os.PathLike | None = None, **kw: Any):
        """The ``k`` lesions nearest to a box drawn on an image (a DeepLesion PNG, a DICOM file or
        series folder); ``df.attrs["query"]`` says what was read."""
        res = embedding.similar_to_region(self.engine, embedding.load_encoder(model), image, box_px, k=k, **kw)
        df = _similar_frame(res.results)
        df.attrs["query"] = res.query
        return df

    def predict_types(self, k: int = 10, method: str = "embeddings", write: bool = True):
        """Predict the type of unlabelled embedded lesions (k-NN vote; written as predictedType*,
        never over a label). One row per prediction: lesionId, typeCode, typeName, confidence, votes;
        the run's summary is in ``df.attrs``."""
        import pandas as pd  # pandas (0.4 s) only for the reads that return frames

        out = embedding.predict_types(self.engine, k=k, method=method, write=write,
                                      cache_dir=self.workspace.embedding_cache).to_json()
        df = pd.DataFrame(out.pop("predictions"), columns=["lesionId", "typeCode", "typeName", "confidence", "votes"])
        df.attrs.update(out)
        return df

    def clusters(self, compute: bool = False, resolution: float = 1.0, seed: int = 0, method: str = "auto"):
        """The stored (:Cluster) nodes, largest first; ``compute=True`` first re-clusters the
        SIMILAR_TO graph (Louvain: networkx, seeded, or Neo4j GDS) and stores the result."""
        import pandas as pd

        summary = embedding.cluster(self.engine, resolution=resolution, seed=seed, method=method) if compute else None
        df = pd.DataFrame(embedding.clusters(self.engine),
                          columns=["clusterId", "size", "dominantType", "dominantTypeShare", "labelled", "modelId",
                                   "method", "resolution", "seed", "createdAt"])
        if summary:
            df.attrs.update({k: v for k, v in summary.to_json().items() if k != "largest"})
        return df

    def cluster_members(self, cluster_id: str, limit: int | None = None):
        """The lesions of one cluster: lesionId, typeName, predictedTypeName, patientId, longDiameterMm."""
        import pandas as pd

        return pd.DataFrame(embedding.cluster_members(self.engine, cluster_id, limit=limit or _NO_LIMIT),
                            columns=["lesionId", "typeName", "predictedTypeName", "patientId", "longDiameterMm"])

    # -- matching ---------------------------------------------------------------------------------
    def match(self, patient: str | None = None, calibrate: bool = True, **kw: Any) -> tracking.MatchReport:
        """Match lesions across each patient's studies: SAME_LESION edges, tracks, RECIST status."""
        return tracking.match_graph(self.engine, patient, calibrate=calibrate, progress=self.progress, **kw)

    def tracks(self, patient: str, possible: bool = True):
        """One row per (track, lesion) of a patient after :meth:`match`: trackingUid, status
        (RECIST 1.1), nVisits, baselineMm, nadirMm, lastMm, changeFromBaselinePct,
        changeFromNadirPct, studyId, studyIndex, studyDay, lesionId, seriesIndex, typeName,
        longDiameterMm, response (at that visit), visitChangeFromBaselinePct, and ``membership``
        ``member``. With ``possible``, also one row per pending POSSIBLE_SAME_LESION edge of the
        patient (``membership`` ``possible``: a plausible lesion of a study where the track has
        none, with its ``probability`` and ``reviewId``; RECIST columns empty)."""
        import pandas as pd

        q = self.engine.query("patient_tracks")
        cols = [c.strip() for c in q.returns.split(",")]
        df = pd.DataFrame(self.query("patient_tracks", patientId=patient), columns=cols)
        df["membership"] = "member"
        df["probability"] = None
        df["reviewId"] = None
        if not possible:
            return df
        rows = [{"trackingUid": r["trackingUid"], "studyId": r["candidateStudyId"],
                 "studyIndex": r["candidateStudyIndex"], "studyDay": r["candidateStudyDay"],
                 "lesionId": r["candidateLesionId"], "seriesIndex": r["candidateSeriesIndex"],
                 "typeName": r["candidateTypeName"], "longDiameterMm": r["candidateLongDiameterMm"],
                 "membership": "possible", "probability": r["probability"], "reviewId": r["reviewId"]}
                for r in tracking.list_possible(self.engine, status="pending", patient=patient)]
        if not rows:
            return df
        status = df.drop_duplicates("trackingUid").set_index("trackingUid")["status"] if len(df) else {}
        extra = pd.DataFrame(rows)
        extra["status"] = extra["trackingUid"].map(status)
        out = pd.concat([df, extra], ignore_index=True)[list(df.columns)]
        return out.sort_values(["trackingUid", "studyIndex", "membership", "lesionId"], kind="stable",
                               ignore_index=True)

    def possible(self, status: str | None = "pending", patient: str | None = None, limit: int | None = None):
        """The POSSIBLE_SAME_LESION review items: links matching found plausible but not sure enough
        to make (``reviewId``, ``probability``, the track and the candidate lesion)."""
        import pandas as pd

        return pd.DataFrame(tracking.list_possible(self.engine, status=status, patient=patient, limit=limit))

    def accept_possible(self, review_id: str, by: str | None = None):
        """Accept a possible link: the candidate joins the track (the patient is re-matched)."""
        return tracking.accept_possible(self.engine, review_id, by=by)

    def reject_possible(self, review_id: str, by: str | None = None, reason: str | None = None):
        """Reject a possible link: later matches keep the two apart and never propose it again."""
        return tracking.reject_possible(self.engine, review_id, by=by, reason=reason)

    # -- mining and review ------------------------------------------------------------------------
    def mine(self, images: str | os.PathLike | None = None, *, patient: str | None = None,
             min_score: float = mining.DEFAULT_MIN_SCORE, embed: bool = True, model: str | os.PathLike | None = None,
             rank_calibration: bool = True, dl_info: str | os.PathLike | None = None,
             image_format: str = "auto") -> mining.MiningResult:
        """Propose the lesions the tracks say were missed (``images``: the folder of the studies'
        DICOM series, or DeepLesion's Images_png). Run :meth:`match` first."""
        ids = self.workspace.ids()
        loader = mining.StudyVolumes(images, ids, file_names(dl_info, ids) if dl_info else None, image_format)
        embedder, model_id, note = mining.load_embedder(model) if embed else (None, None, None)
        res = mining.mine(self.engine, loader, patient=patient, config=mining.MiningConfig(min_score=min_score),
                          embedder=embedder, model_id=model_id, rank_calibration=rank_calibration,
                          progress=self.progress)
        res.embed_note = note
        return res

    def proposals(self, status: str | None = None, patient: str | None = None, limit: int | None = None):
        """One row per mining proposal (``status`` pending / accepted / rejected, or all)."""
        import pandas as pd

        return pd.DataFrame(mining.list_proposals(self.engine, status=status, patient=patient, limit=limit))

    def accept(self, proposal_id: str, by: str | None = None) -> mining.ReviewDecision:
        """Accept a proposal: it becomes an annotated lesion of its track (idempotent)."""
        return mining.accept(self.engine, proposal_id, by=by)

    def reject(self, proposal_id: str, by: str | None = None, reason: str | None = None) -> mining.ReviewDecision:
        """Reject a proposal (idempotent; re-mining will not propose it again)."""
        return mining.reject(self.engine, proposal_id, by=by, reason=reason)

    # -- networkx ------------------------------------------------------------------------------
    def to_networkx(self, patient: str):
        """A patient's subgraph: patient, studies, lesions and every relationship leaving a lesion."""
        import networkx as nx  # networkx only for this read

        g = nx.MultiDiGraph()
        studies = self.query("patient_studies", patientId=patient)
        if not studies:
            return g
        p = studies[0]["patient"]
        g.add_node(p["patientId"], label="Patient", **p)
        for r in studies:
            s = r["study"]
            g.add_node(s["studyId"], label="Study", **s)
            g.add_edge(p["patientId"], s["studyId"], type="HAS_STUDY")
        for r in self.query("patient_lesion_links", patientId=patient):
            lesion = {k: v for k, v in r["lesion"].items() if k != "embedding"}
            lid = lesion["lesionId"]
            if lid not in g:
                g.add_node(lid, label="Lesion", **lesion)
                g.add_edge(r["studyId"], lid, type="HAS_LESION")
            if r.get("type"):
                target = {k: v for k, v in (r.get("target") or {}).items() if k != "embedding"}
                tid = _node_key(r["targetLabel"], target)
                if tid not in g:
                    g.add_node(tid, label=r["targetLabel"], **target)
                g.add_edge(lid, tid, type=r["type"], **(r.get("rel") or {}))
        return g

    # -- pandas reads ----------------------------------------------------------------------------
    def patients(self):
        """One row per patient: patientId, sex, sourceId, studies, lesions."""
        import pandas as pd

        return pd.DataFrame(self.query("patients"), columns=["patientId", "sex", "sourceId", "studies", "lesions"])

    def lesions(self, patient: str | None = None, study: str | None = None, typeName: str | None = None,
                limit: int | None = None):
        """One row per lesion with every stored property (embeddings left out)."""
        import pandas as pd

        rows = self.query("lesions", patientId=patient, studyId=study, typeName=typeName, limit=limit or _NO_LIMIT)
        flat = []
        for r in rows:
            props = {k: v for k, v in r["lesion"].items() if k != "embedding"}
            flat.append({"patientId": r["patientId"], "studyId": r["studyId"], "studyIndex": r["studyIndex"],
                         **props})
        return pd.DataFrame(flat)

    # -- lifecycle -----------------------------------------------------------------------------
    def close(self) -> None:
        if self._owns:
            self.workspace.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


_SIMILAR_COLUMNS = ["rank", "lesionId", "distance", "typeName", "typeCode", "predictedTypeName", "patientId",
                    "studyId", "longDiameterMm", "locationX", "locationY", "locationZ", "source"]


def _similar_frame(rows: list[dict[str, Any]]):
    import pandas as pd

    return pd.DataFrame(rows, columns=_SIMILAR_COLUMNS)


def _node_key(label: str, props: dict[str, Any]) -> str:
    for k in ("lesionId", "trackingUid", "proposalId", "clusterId", "studyId", "patientId", "modelId"):
        if k in props:
            return str(props[k])
    return f"{label}:{sorted(props.items())!r}"


def connect(data_dir: str | os.PathLike | None = None, uri: str | None = None, user: str | None = None,
            password: str | None = None, database: str | None = None, pseudonym_key: str | None = None,
            progress: Progress | None = None) -> Client:
    """Open the data dir's embedded graph, or Neo4j when ``uri`` / ``LESIONDB_URI`` is given."""
    ws = Workspace.open(data_dir, uri, user, password, database, pseudonym_key)
    ws.engine()  # fail here, not at the first call
    return Client(ws, progress=progress)
