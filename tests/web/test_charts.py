"""lesiondb.web.charts: the long-diameter chart is valid SVG with one mark per visit, placed by day and size."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from lesiondb.web.charts import RESPONSE_COLOURS, diameter_chart

NS = "{http://www.w3.org/2000/svg}"


def test_chart_marks_each_visit_by_day_and_diameter():
    svg = diameter_chart([(0, 20.0, "baseline"), (60, 30.0, "progressing"), (120, None, None)], title="t <1>")
    root = ET.fromstring(svg)  # well-formed, the title escaped
    circles = root.findall(f"{NS}circle")
    assert len(circles) == 3
    xs = [float(c.get("cx")) for c in circles]
    ys = [float(c.get("cy")) for c in circles]
    assert xs[0] < xs[1] < xs[2]
    assert ys[1] < ys[0] < ys[2]  # 30 mm higher than 20 mm; the unmeasured visit on the axis
    assert circles[1].get("fill") == RESPONSE_COLOURS["progressing"]
    assert circles[2].get("fill") == "none"  # hollow: not measured
    assert len(root.findall(f"{NS}polyline")) == 1
    assert [t.text for t in root.findall(f"{NS}text") if t.text.startswith("d")] == ["d0", "d60", "d120"]
    assert root.find(f"{NS}title").text == "t <1>"


def test_one_visit_draws_no_line():
    svg = diameter_chart([(0, 12.5, "baseline")])
    assert "<polyline" not in svg and len(re.findall("<circle", svg)) == 1
