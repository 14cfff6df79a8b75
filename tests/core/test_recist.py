"""RECIST 1.1 change classification of one track (lesiondb/core/recist.py)."""
from __future__ import annotations

import pytest

from lesiondb.core import recist


@pytest.mark.parametrize(("nadir", "now", "expected"), [
    (25.0, 30.0, "progressing"),      # +20 % and +5 mm exactly: both thresholds are inclusive
    (25.0, 29.975, "stable"),         # +19.9 %, +4.975 mm
    (30.0, 35.97, "stable"),          # +19.9 % although +5.97 mm
    (30.0, 36.0, "progressing"),      # +20 %, +6 mm
    (10.0, 12.0, "stable"),           # +20 % but only +2 mm: the 5 mm rule
    (10.0, 14.9, "stable"),           # +49 %, +4.9 mm
    (10.0, 15.0, "progressing"),      # +50 %, +5 mm
])
def test_progression_needs_20_percent_and_5_mm_over_the_nadir(nadir, now, expected):
    assert recist.response(now, baseline_mm=nadir, nadir_mm=nadir) == expected


@pytest.mark.parametrize(("baseline", "now", "expected"), [
    (20.0, 14.0, "responding"),   # −30 % exactly
    (20.0, 14.02, "stable"),      # −29.9 %
    (20.0, 0.5, "responding"),
])
def test_response_needs_30_percent_below_baseline(baseline, now, expected):
    assert recist.response(now, baseline_mm=baseline, nadir_mm=now) == expected


def test_nadir_is_the_smallest_earlier_measurement_not_the_baseline():
    ch = recist.classify([(1, 30.0), (2, 20.0), (3, 25.0)], [1, 2, 3])
    # 25 mm is below the 30 mm baseline, yet +25 % and +5 mm over the 20 mm nadir
    assert ch.status == "progressing"
    assert ch.baseline_mm == 30.0 and ch.nadir_mm == 20.0 and ch.last_mm == 25.0
    assert [v.response for v in ch.visits] == ["baseline", "responding", "progressing"]
    assert ch.change_from_nadir_pct == pytest.approx(25.0)
    assert ch.change_from_baseline_pct == pytest.approx(-16.67)


def test_stable_and_responding_tracks():
    assert recist.classify([(1, 20.0), (2, 21.0)], [1, 2]).status == "stable"
    assert recist.classify([(1, 20.0), (2, 13.0)], [1, 2]).status == "responding"
    # responding at visit 2, then regrowth under 20 % of the nadir: stable, not responding
    assert recist.classify([(1, 20.0), (2, 13.0), (3, 15.0)], [1, 2, 3]).status == "stable"


def test_new_disappeared_and_baseline():
    visits = [1, 2, 3]
    assert recist.classify([(2, 10.0), (3, 30.0)], visits).status == "new"  # new beats progressing
    assert recist.classify([(1, 10.0), (2, 12.0)], visits).status == "disappeared"
    assert recist.classify([(2, 10.0)], visits).status == "disappeared"  # seen once, gone since
    assert recist.classify([(3, 10.0)], visits).status == "new"
    assert recist.classify([(1, 10.0)], [1]).status == "baseline"


def test_two_measurements_at_one_visit_are_averaged():
    ch = recist.classify([(1, 20.0), (1, 30.0), (2, 29.0)], [1, 2])
    assert ch.baseline_mm == 25.0
    assert ch.status == "stable"  # +16 % over the mean; over the 20 mm reading alone it would progress
    ch = recist.classify([(1, 20.0), (1, 20.0), (2, 25.0)], [1, 2])
    assert ch.status == "progressing"


def test_to_props_and_bad_input():
    props = recist.classify([(1, 20.0), (2, 26.0)], [1, 2]).to_props()
    assert props["status"] == "progressing" and props["nVisits"] == 2
    assert props["changeFromNadirPct"] == pytest.approx(30.0)
    with pytest.raises(ValueError):
        recist.classify([(1, 0.0)], [1])
