"""The Python client: named queries, pandas DataFrames and networkx graphs.

>>> import lesiondb
>>> with lesiondb.connect(data_dir="~/lesions") as db:      # or uri="bolt://…"
...     df = db.lesions(typeName="liver")
...     g = db.to_networkx(df.patientId[0])
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .graph import Engine, default_data_dir, open_engine

_NO_LIMIT = 10**9


class Client:
    """A connection to one lesion graph. Pass an engine in, or use :func:`connect`."""

    def __init__(self, engine: Engine, data_dir: str | os.PathLike | None = None, owns_engine: bool = True):
        self.engine = engine
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()
        self._owns = owns_engine

    # -- raw -----------------------------------------------------------------------------------
    def query(self, name: str, **params: Any) -> list[dict[str, Any]]:
        """Run a named read query; parameters the query declares but you omit are null."""
        q = self.engine.query(name)
        for k in q.params:
            params.setdefault(k, _NO_LIMIT if k == "limit" else None)
        return self.engine.run(name, **params)

    def stats(self) -> dict[str, dict[str, int]]:
        """``{"nodes": {label: count}, "relationships": {type: count}}``."""
        return {
            "nodes": {r["label"]: int(r["count"]) for r in self.query("count_nodes")},
            "relationships": {r["type"]: int(r["count"]) for r in self.query("count_relationships")},
        }

    # -- pandas --------------------------------------------------------------------------------
    def patients(self):
        """One row per patient: patientId, sex, sourceId, studies, lesions."""
        import pandas as pd

        return pd.DataFrame(self.query("patients"),
                            columns=["patientId", "sex", "sourceId", "studies", "lesions"])

    def lesions(self, patient: str | None = None, study: str | None = None, typeName: str | None = None,
                limit: int | None = None):
        """One row per lesion with every stored property (embeddings left out)."""
        import pandas as pd

        rows = self.query("lesions", patientId=patient, studyId=study, typeName=typeName,
                          limit=limit or _NO_LIMIT)
        flat = []
        for r in rows:
            props = {k: v for k, v in r["lesion"].items() if k != "embedding"}
            flat.append({"patientId": r["patientId"], "studyId": r["studyId"], "studyIndex": r["studyIndex"],
                         **props})
        return pd.DataFrame(flat)

    # -- missing-annotation proposals (lesiondb.mining.run) ----------------------------------------
    def tracks(self, patient: str, possible: bool = True):
        """One row per (track, lesion) of a patient after ``lesiondb match``: trackingUid, status
        (RECIST 1.1), nVisits, baselineMm, nadirMm, lastMm, changeFromBaselinePct,
        changeFromNadirPct, studyId, studyIndex, studyDate, lesionId, seriesIndex, typeName,
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
        from .tracking.review import list_possible

        rows = [{"trackingUid": r["trackingUid"], "studyId": r["candidateStudyId"],
                 "studyIndex": r["candidateStudyIndex"], "studyDate": r["candidateStudyDate"],
                 "lesionId": r["candidateLesionId"], "seriesIndex": r["candidateSeriesIndex"],
                 "typeName": r["candidateTypeName"], "longDiameterMm": r["candidateLongDiameterMm"],
                 "membership": "possible", "probability": r["probability"], "reviewId": r["reviewId"]}
                for r in list_possible(self.engine, status="pending", patient=patient)]
        if not rows:
            return df
        status = df.drop_duplicates("trackingUid").set_index("trackingUid")["status"] if len(df) else {}
        extra = pd.DataFrame(rows)
        extra["status"] = extra["trackingUid"].map(status)
        out = pd.concat([df, extra], ignore_index=True)[list(df.columns)]
        return out.sort_values(["trackingUid", "studyIndex", "membership", "lesionId"], kind="stable",
                               ignore_index=True)

    def proposals(self, status: str | None = None, patient: str | None = None, limit: int | None = None):
        """One row per mining proposal (``status`` pending / accepted / rejected, or all)."""
        import pandas as pd

        from .mining.run import list_proposals

        return pd.DataFrame(list_proposals(self.engine, status=status, patient=patient, limit=limit))

    def accept(self, proposal_id: str, by: str | None = None) -> dict[str, Any]:
        """Accept a proposal: it becomes an annotated lesion of its track (idempotent)."""
        from .mining.run import accept

        return accept(self.engine, proposal_id, by=by)

    def reject(self, proposal_id: str, by: str | None = None, reason: str | None = None) -> dict[str, Any]:
        """Reject a proposal (idempotent; re-mining will not propose it again)."""
        from .mining.run import reject

        return reject(self.engine, proposal_id, by=by, reason=reason)

    # -- similarity services (lesiondb.embedding.services) ----------------------------------------------
    def similar(self, lesion_id: str, k: int = 10, type: str | int | None = None,
                exclude_same_patient: bool = False):
        """The ``k`` lesions most similar to ``lesion_id`` (nearest first): lesionId, distance, rank,
        typeName, patientId, … (from its SIMILAR_TO edges; an exact scan when filters need more)."""
        from .embedding import services

        return _similar_frame(services.similar(self.engine, lesion_id, k=k, type_name=type,
                                               exclude_same_patient=exclude_same_patient))

    def similar_to_vector(self, vector, k: int = 10, type: str | int | None = None, exact: bool = False):
        """The ``k`` lesions nearest to an embedding of the graph's model (vector index, or ``exact``)."""
        from .embedding import services

        return _similar_frame(services.similar_to_vector(self.engine, vector, k=k, type_name=type, exact=exact))

    def predict_types(self, k: int = 10, method: str = "embeddings", write: bool = True):
        """Predict the type of unlabelled embedded lesions (k-NN vote; written as predictedType*,
        never over a label). One row per prediction: lesionId, typeCode, typeName, confidence, votes;
        the run's summary is in ``df.attrs``."""
        import pandas as pd

        from .embedding import services

        out = services.predict_types(self.engine, k=k, method=method, write=write,
                                     cache_dir=self.data_dir / "embeddings")
        df = pd.DataFrame(out.pop("predictions"), columns=["lesionId", "typeCode", "typeName", "confidence", "votes"])
        df.attrs.update(out)
        return df

    def clusters(self, compute: bool = False, resolution: float = 1.0, seed: int = 0, method: str = "auto"):
        """The stored (:Cluster) nodes, largest first; ``compute=True`` first re-clusters the
        SIMILAR_TO graph (Louvain: networkx, seeded, or Neo4j GDS; see ``services.cluster``)
        and stores the result."""
        import pandas as pd

        from .embedding import services

        summary = services.cluster(self.engine, resolution=resolution, seed=seed, method=method) if compute else None
        df = pd.DataFrame(services.clusters(self.engine),
                          columns=["clusterId", "size", "dominantType", "dominantTypeShare", "labelled", "modelId",
                                   "method", "resolution", "seed", "createdAt"])
        if summary:
            df.attrs.update({k: v for k, v in summary.items() if k != "largest"})
        return df

    def cluster_members(self, cluster_id: str, limit: int | None = None):
        """The lesions of one cluster: lesionId, typeName, predictedTypeName, patientId, longDiameterMm."""
        import pandas as pd

        from .embedding import services

        return pd.DataFrame(services.cluster_members(self.engine, cluster_id, limit=limit or _NO_LIMIT),
                            columns=["lesionId", "typeName", "predictedTypeName", "patientId", "longDiameterMm"])

    # -- networkx ------------------------------------------------------------------------------
    def to_networkx(self, patient: str):
        """A patient's subgraph: patient, studies, lesions and every relationship leaving a lesion."""
        import networkx as nx

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

    # -- lifecycle -----------------------------------------------------------------------------
    def close(self) -> None:
        if self._owns:
            self.engine.close()

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
            password: str | None = None, database: str | None = None) -> Client:
    """Open the data dir's embedded graph, or Neo4j when ``uri`` / ``LESIONDB_URI`` is given."""
    data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
    engine = open_engine(data_dir, uri=uri, user=user, password=password, database=database)
    return Client(engine, data_dir=data_dir)
