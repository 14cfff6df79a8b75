"""DeepLesion ingest into a graph: counts, idempotency, bad rows, pseudonyms."""
from __future__ import annotations

import csv

from lesiondb.client import Client
from lesiondb.core.pseudonym import Pseudonymizer
from lesiondb.ingest import ingest_deeplesion

IDS = Pseudonymizer(b"t" * 32)


def _subset(dl_info, tmp_path, n_patients=30):
    """The rows of the first ``n_patients`` patients of the real file."""
    out = tmp_path / "subset.csv"
    with open(dl_info, newline="") as fh, open(out, "w", newline="") as oh:
        r, w = csv.reader(fh), csv.writer(oh)
        header = next(r)
        w.writerow(header)
        seen = []
        for row in r:
            if row[1] not in seen:
                seen.append(row[1])
            if len(seen) > n_patients:
                break
            w.writerow(row)
    return out


def test_ingest_counts_and_idempotent(engine, dl_info, tmp_path):
    path = _subset(dl_info, tmp_path)
    rows = list(csv.DictReader(open(path)))
    n_pat = len({r["Patient_index"] for r in rows})
    n_study = len({(r["Patient_index"], r["Study_index"]) for r in rows})
    rep = ingest_deeplesion(engine, path, IDS, batch_size=50)
    assert (rep.read, rep.written, rep.unchanged, len(rep.rejected)) == (len(rows), len(rows), 0, 0)
    client = Client(engine, owns_engine=False)
    stats = client.stats()
    assert stats["nodes"] == {"Lesion": len(rows), "Patient": n_pat, "Study": n_study}
    assert stats["relationships"] == {"HAS_LESION": len(rows), "HAS_STUDY": n_study}
    for _ in range(2):
        rep = ingest_deeplesion(engine, path, IDS, batch_size=37)
        assert (rep.written, rep.unchanged) == (0, len(rows))
        assert client.stats() == stats


def test_bad_rows_reported_valid_rows_land(engine, dl_info, tmp_path):
    path = _subset(dl_info, tmp_path, 5)
    lines = path.read_text().splitlines()
    n_good = len(lines) - 1
    bad = [
        lines[1].replace(",3,0,", ",42,0,", 1),        # unknown type code
        "garbage,row",                                   # wrong arity
        lines[2].replace('"11', '"-11', 1) if '"11' in lines[2] else "x" + lines[2],
    ]
    # Insert the bad rows at known positions: after line 3 and at the end.
    new = lines[:3] + [bad[0], bad[1]] + lines[3:] + [bad[2]]
    path.write_text("\n".join(new) + "\n")
    rep = ingest_deeplesion(engine, path, IDS, batch_size=4)
    assert len(rep.rejected) == 3
    assert [e["line"] for e in rep.rejected] == [4, 5, len(new)]
    assert "Coarse_lesion_type" in rep.rejected[0]["reason"]
    assert "expected 18 cells" in rep.rejected[1]["reason"]
    assert rep.written == n_good
    assert Client(engine, owns_engine=False).stats()["nodes"]["Lesion"] == n_good


def test_client_dataframes_and_networkx(engine, dl_info, tmp_path):
    path = _subset(dl_info, tmp_path, 3)
    ingest_deeplesion(engine, path, IDS)
    c = Client(engine, owns_engine=False)
    pats = c.patients()
    assert len(pats) == 3 and pats.lesions.sum() == sum(1 for _ in open(path)) - 1
    assert not pats.sourceId.notna().any()
    pid = pats.patientId[0]
    les = c.lesions(patient=pid)
    assert set(les.patientId) == {pid} and {"longDiameterMm", "locationZ", "typeName"} <= set(les.columns)
    g = c.to_networkx(pid)
    labels = [d["label"] for _, d in g.nodes(data=True)]
    assert labels.count("Patient") == 1
    assert labels.count("Lesion") == len(les)
    assert labels.count("Study") == pats.studies[0]
    assert all(d["type"] in ("HAS_STUDY", "HAS_LESION") for *_, d in g.edges(data=True))
