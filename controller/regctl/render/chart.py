"""The chart of an alias move in the pull-request comment: a ```mermaid `xychart-beta`
block of the primary metric across the model's versions (GitHub draws it).

The chart is horizontal (versions down the left, the metric along the top) because
xychart-beta has no per-point markers: the candidate and the incumbent are marked in
their version labels (`v5 (candidate)`, `v2 (Production)`), and labels that long overlap
under each other on a horizontal axis of 20 versions, never in a column. One line, no
bars: mermaid starts the value axis at the smallest value, so bars would exaggerate the
differences and make the best version look empty.

Every string in it (model, alias, metric) goes through `escape.mermaid`; the values are
numbers written without an exponent (mermaid's grammar has none). A point without a
finite value is left out of the chart and named in a note below it.
"""

from __future__ import annotations

import math
from decimal import Decimal

from regctl import escape
from regctl.policy.values import Comparison, MetricSeries, SeriesPoint

__all__ = ["chart_lines"]

# regctl's own configuration of the chart (not a value's): a colour that shows on GitHub's
# light and dark themes, a title that fits, one row per version.
_INIT = (
    '%%{{init: {{"xyChart": {{"width": 720, "height": {height}, "titleFontSize": 16}}, '
    '"themeVariables": {{"xyChart": {{"plotColorPalette": "#1f6feb"}}}}}}}}%%'
)


def _number(value: float) -> str:
    """A finite value as mermaid reads it: 6 significant digits, never an exponent."""
    text = format(Decimal(f"{value:.6g}"), "f")
    return text if text != "-0" else "0"


def _why(point: SeriesPoint) -> str:
    if point.value is None:
        return f"v{point.version} (no value)"
    return f"v{point.version} ({point.value!r})"  # nan, inf, -inf


def _label(point: SeriesPoint, series: MetricSeries, alias: str) -> str:
    marks = []
    if point.version == series.candidate:
        marks.append("candidate")
    if point.version == series.incumbent:
        marks.append(escape.mermaid(alias, 20))
    return f'"v{point.version}' + (f" ({', '.join(marks)})" if marks else "") + '"'


def chart_lines(comp: Comparison) -> list[str]:
    """The markdown lines of an alias move's chart (with its notes), or [] without one."""
    series = comp.series
    if series is None:
        return []
    shown = [p for p in series.points if p.value is not None and math.isfinite(p.value)]
    skipped = [p for p in series.points if p.value is None or not math.isfinite(p.value)]
    capped = (
        [
            f"The chart shows {len(series.points)} of {series.total} versions: "
            "the newest, the candidate and the incumbent."
        ]
        if series.total > len(series.points)
        else []
    )
    if not shown:
        metric = escape.md_code(series.metric)
        return ["", " ".join([f"No chart of {metric}: no version has a finite value.", *capped])]
    notes = [f"Not charted: {', '.join(_why(p) for p in skipped)}."] if skipped else []
    notes += capped
    title = (
        f"{escape.mermaid(comp.model, 40)} {escape.mermaid(comp.alias, 20)}, "
        f"{escape.mermaid(series.metric, 24)} per version"
    )
    values = ", ".join(_number(p.value) for p in shown if p.value is not None)
    out = [
        "",
        "```mermaid",
        _INIT.format(height=max(280, 120 + 28 * len(shown))),
        "xychart-beta horizontal",
        f'    title "{title}"',
        f"    x-axis [{', '.join(_label(p, series, comp.alias) for p in shown)}]",
        f'    y-axis "{escape.mermaid(series.metric, 40)}"',
        f"    line [{values}]",
        "```",
    ]
    if notes:
        out += ["", " ".join(notes)]
    return out
