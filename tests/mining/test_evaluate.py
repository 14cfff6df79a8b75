"""lesiondb.mining.evaluate: how proposals are scored against a synthetic cohort's ground truth."""
from __future__ import annotations

import math

from lesiondb.core import mining as M
from lesiondb.mining import PatientCase
from lesiondb.mining.evaluate import _true_tracks, inside_lesion


def test_true_track_of_a_matched_track_is_its_majority():
    def o(a):
        return M.Observation(a, "S", 0.0, 10.0)

    case = PatientCase("P", [], {"u1": [o("a1"), o("a2"), o("b1")], "u2": [o("b2")], "u3": [o("zz")]})
    insts = [{"annotation_id": "a1", "track_id": "TA"}, {"annotation_id": "a2", "track_id": "TA"},
             {"annotation_id": "b1", "track_id": "TB"}, {"annotation_id": "b2", "track_id": "TB"}]
    assert _true_tracks(case, insts) == {"u1": "TA", "u2": "TB"}


def test_inside_lesion_follows_the_ellipsoid():
    """A point a slice off the centre of a small lesion long along z is on it (though farther than
    its RECIST radius); the same offset across it is not; the in-plane angle is honoured."""
    gt = {"center_mm": [10.0, 20.0, 30.0], "semi_axes_mm": [1.5, 1.0, 3.0], "angle_rad": 0.0,
          "long_diameter_mm": 2.2}
    assert inside_lesion((10.0, 20.0, 32.0), gt)  # 2 mm along z: inside (radius 1.1 mm)
    assert not inside_lesion((12.0, 20.0, 30.0), gt)  # 2 mm along x: outside
    assert inside_lesion((11.4, 20.0, 30.0), gt) and not inside_lesion((10.0, 21.4, 30.0), gt)
    turned = dict(gt, angle_rad=math.pi / 2)  # long axis now along y
    assert inside_lesion((10.0, 21.4, 30.0), turned) and not inside_lesion((11.4, 20.0, 30.0), turned)
    assert not inside_lesion((10.0, 20.0, 30.0), {"center_mm": [10.0, 20.0, 30.0]})  # no extent known
