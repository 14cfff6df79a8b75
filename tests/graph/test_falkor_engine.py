"""FalkorDB engine: parameters survive the trip as values, never as query text."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lesiondb.errors import QueryError
from lesiondb.graph.falkor_engine import cypher_literal, cypher_params_header

NASTY = ['plain', 'quote " inside', "single ' quote", 'back\\slash', 'key-like {"a":1}, "b":', 'new\nline',
         'tab\there', 'unicode µm ü 肝', '', "}) MATCH (n) DETACH DELETE n //"]


@pytest.mark.parametrize("value", NASTY)
def test_strings_round_trip_exactly(falkor_engine, value):
    rows = falkor_engine._read("RETURN $v AS v, $m.k AS k, $l[1] AS l", {"v": value, "m": {"k": value},
                                                                           "l": [0, value]})
    assert rows == [{"v": value, "k": value, "l": value}]


def test_numbers_lists_maps_round_trip(falkor_engine):
    params = {"i": -42, "f": 0.1 + 0.2, "b": False, "n": None, "arr": np.array([1.5, 2.5], dtype=np.float32),
              "rows": [{"id": "a", "props": {"x": 1.25, "tags": ["p", "q"]}}]}
    r = falkor_engine._read("RETURN $i AS i, $f AS f, $b AS b, $n AS n, $arr AS arr, $rows AS rows", params)[0]
    # FalkorDB prints doubles with 15 significant digits
    assert r["i"] == -42 and r["f"] == pytest.approx(0.1 + 0.2, rel=1e-14) and r["b"] is False and r["n"] is None
    assert r["arr"] == [1.5, 2.5]
    assert r["rows"] == [{"id": "a", "props": {"x": 1.25, "tags": ["p", "q"]}}]


def test_non_finite_and_bad_names_rejected():
    with pytest.raises(ValueError, match="finite"):
        cypher_literal({"x": math.nan})
    with pytest.raises(ValueError, match="bad parameter name"):
        cypher_params_header({"a b": 1})


def test_query_errors_name_the_query(falkor_engine):
    with pytest.raises(QueryError, match="'lesions'.*missing parameter"):
        falkor_engine.run("lesions")
