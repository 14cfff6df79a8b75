"""Inline SVG charts (no JavaScript library): a track's long diameter over time."""
from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

#: Colour of a RECIST response or track status (:mod:`lesiondb.core.recist` names them).
RESPONSE_COLOURS = {
    "baseline": "#9aa4b1", "stable": "#4e9af1", "progressing": "#e8554e", "responding": "#3cb371",
    "disappeared": "#2e8b57", "new": "#e0a030",
}


def _nice_max(v: float) -> float:
    if v <= 0:
        return 10.0
    mag = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * mag:
            return m * mag
    return 10 * mag


def diameter_chart(points: Sequence[tuple[float, float | None, str | None]], *, width: int = 260,
                   height: int = 120, title: str = "") -> str:
    """An SVG line chart of ``points`` = (study day, long diameter mm or None, response), the
    y axis from 0 mm; a visit without a measurement is a hollow mark on the axis. Returns markup."""
    left, right, top, bottom = 46, 16, 10, 22
    w, h = width - left - right, height - top - bottom
    days = [float(d) for d, _, _ in points] or [0.0]
    mms = [float(m) for _, m, _ in points if m is not None]
    d0, d1 = min(days), max(days)
    span = (d1 - d0) or 1.0
    ymax = _nice_max(max(mms) * 1.1 if mms else 10.0)

    def x(d: float) -> float:
        return left + (w * (float(d) - d0) / span if d1 > d0 else w / 2)

    def y(mm: float) -> float:
        return top + h - h * float(mm) / ymax

    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title or "long diameter over time")}">']
    if title:
        parts.append(f"<title>{escape(title)}</title>")
    for frac in (0.0, 0.5, 1.0):
        yy = y(ymax * frac)
        parts.append(f'<line x1="{left}" y1="{yy:.1f}" x2="{left + w}" y2="{yy:.1f}" class="grid"/>')
        label = f"{ymax * frac:g}" + (" mm" if frac == 1.0 else "")
        parts.append(f'<text x="{left - 4}" y="{yy + 3:.1f}" text-anchor="end" class="tick">{label}</text>')
    measured = [(d, m) for d, m, _ in points if m is not None]
    if len(measured) > 1:
        path = " ".join(f"{x(d):.1f},{y(m):.1f}" for d, m in measured)
        parts.append(f'<polyline points="{path}" class="line"/>')
    for d, m, resp in points:
        colour = RESPONSE_COLOURS.get(str(resp or "").lower(), "#cfd6df")
        label = f"day {d:g}: " + (f"{m:.1f} mm" if m is not None else "not measured") + (f" ({resp})" if resp else "")
        if m is None:
            parts.append(f'<circle cx="{x(d):.1f}" cy="{y(0):.1f}" r="4" fill="none" stroke="{colour}">'
                         f"<title>{escape(label)}</title></circle>")
        else:
            parts.append(f'<circle cx="{x(d):.1f}" cy="{y(m):.1f}" r="4" fill="{colour}">'
                         f"<title>{escape(label)}</title></circle>")
    for d in sorted(set(days)):
        parts.append(f'<text x="{x(d):.1f}" y="{height - 6}" text-anchor="middle" class="tick">d{d:g}</text>')
    parts.append("</svg>")
    return "".join(parts)
