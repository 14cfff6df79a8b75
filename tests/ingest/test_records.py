"""The ingest writer: the pseudonym key's fingerprint in the graph, exact vs conflicting duplicates."""
from __future__ import annotations

import csv
import io

import pytest

from lesiondb.client import Client
from lesiondb.core.pseudonym import KEY_FILE, Pseudonymizer
from lesiondb.datasets.deeplesion import COLUMNS
from lesiondb.errors import ConfigError
from lesiondb.graph.keys import check_pseudonym_key, claim_pseudonym_key
from lesiondb.ingest import ingest_deeplesion

GOOD = ["000001_01_01_109.png", "1", "1", "1", "109",
        "233.537, 95.0204, 234.057, 106.977, 231.169, 101.605, 236.252, 101.143",
        "226.169, 90.0204, 241.252, 111.977", "11.9677, 5.10387", "0.44666, 0.283794, 0.434454",
        "3", "0", "103, 115", "0.488281, 0.488281, 5", "512, 512", "-175, 275", "F", "62", "3"]
OTHER = ["000002_01_01_020.png", "2", "1", "1", "20",
         "200, 95, 210, 106, 203, 102, 207, 99", "195, 90, 215, 111", "14.8661, 5",
         "0.5, 0.5, 0.5", "4", "0", "10, 30", "0.7, 0.7, 2.5", "512, 512", "-175, 275", "M", "50", "2"]


def _csv(tmp_path, rows, name="DL_info.csv"):
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS)
    w.writerows(rows)
    p = tmp_path / name
    p.write_text(buf.getvalue())
    return p


def test_first_ingest_records_the_key_and_another_key_is_refused(engine, tmp_path):
    path = _csv(tmp_path, [GOOD])
    first = Pseudonymizer.from_data_dir(tmp_path)
    ingest_deeplesion(engine, str(path), first)
    assert engine.run("graph_info")[0]["fingerprint"] == first.fingerprint
    # the key file's text, as `--pseudonym-key "$(cat DATA_DIR/pseudonym.key)"` passes it: same graph
    same = Pseudonymizer.from_data_dir(tmp_path / "x", key=(tmp_path / KEY_FILE).read_text().strip())
    rep = ingest_deeplesion(engine, str(path), same)
    assert (rep.written, rep.unchanged) == (0, 1)
    # another key: refused before any write, with the way out in the message
    other = _csv(tmp_path, [OTHER], "other.csv")
    with pytest.raises(ConfigError, match="not the key this graph's ids were made with") as err:
        ingest_deeplesion(engine, str(other), Pseudonymizer(b"another-key-of-32-bytes-length!!"))
    assert "pseudonym.key" in str(err.value) and first.fingerprint in str(err.value)
    stats = Client(engine, owns_engine=False).stats()
    assert stats["nodes"] == {"Lesion": 1, "Patient": 1, "Study": 1}  # :GraphInfo is not counted as data
    assert engine.run("graph_info")[0]["fingerprint"] == first.fingerprint


def test_claim_is_idempotent(engine):
    ids = Pseudonymizer(b"q" * 32)
    assert claim_pseudonym_key(engine, ids) == claim_pseudonym_key(engine, ids) == ids.fingerprint
    assert len(engine.run("graph_info")) == 1


def test_exact_duplicate_counted_conflicting_duplicate_names_both_lines(engine, tmp_path):
    conflict = list(GOOD)
    conflict[COLUMNS.index("Coarse_lesion_type")] = "5"
    conflict[COLUMNS.index("Patient_age")] = "63"
    path = _csv(tmp_path, [GOOD, OTHER, list(GOOD), conflict])
    rep = ingest_deeplesion(engine, str(path), Pseudonymizer(b"d" * 32))
    assert rep.duplicates == 1 and rep.written == 2 and rep.read == 4
    [err] = rep.rejected
    assert err["line"] == 5 and "line 2" in err["reason"] and "line 5" in err["reason"]
    assert "Coarse_lesion_type" in err["reason"] and "Patient_age" in err["reason"]
    assert "Lesion_diameters_Pixel_" not in err["reason"]
    # the first row stands (type 3), the conflicting one (type 5) changed nothing
    assert sorted(Client(engine, owns_engine=False).lesions().typeCode) == [3, 4]


def test_check_is_read_only_and_refuses_another_key(engine):
    ids, other = Pseudonymizer(b"q" * 32), Pseudonymizer(b"r" * 32)
    assert check_pseudonym_key(engine, other) is None  # nothing recorded: nothing to compare, nothing written
    assert engine.run("graph_info") == []
    claim_pseudonym_key(engine, ids)
    assert check_pseudonym_key(engine, ids) == ids.fingerprint
    with pytest.raises(ConfigError, match="no file name would match"):
        check_pseudonym_key(engine, other)
