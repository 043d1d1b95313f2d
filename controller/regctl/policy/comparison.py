"""The metric comparison of an alias move: a candidate's metrics beside the incumbent's,
and the primary metric across the model's versions (the chart of the pull-request comment).

`regctl plan` and `check` show it next to the policy verdicts (`values.Comparison`); it
judges nothing, it only orders the rows so that the primary metric comes first, and picks
which versions a chart shows.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from regctl.policy.values import ComparisonRow, MetricSeries, SeriesPoint, Subject

__all__ = ["alias_comparison", "chart_versions", "charted_metric", "metric_series"]

_SPLIT_ORDER = {"test": 0, "val": 1, "train": 2, "final": 0}


def _primary_rank(name: str, primary_metric: str) -> int | None:
    """Where a metric sorts among the primary ones (`rmse_test` before `rmse_val`), or None
    when it is not one of them."""
    if name == primary_metric:
        return -1
    if name.startswith(primary_metric + "_"):
        return _SPLIT_ORDER.get(name[len(primary_metric) + 1 :], 9)
    return None


def alias_comparison(
    candidate: Subject, incumbent: Subject | None, primary_metric: str
) -> list[ComparisonRow]:
    """Rows comparing a candidate's metrics with the current alias holder's.

    `primary_metric` is a metric name (`rmse_test`) or the schema's param (`rmse`, `bic`):
    then the metrics named `<primary>_*` come first, test before val before train. The
    rest follow sorted by name. `delta` is candidate minus incumbent when both exist.
    """
    mine = candidate.metrics or {}
    theirs = (incumbent.metrics or {}) if incumbent is not None else {}
    names = set(mine) | set(theirs)

    def rank(name: str) -> int | None:
        return _primary_rank(name, primary_metric)

    first = sorted((n for n in names if rank(n) is not None), key=lambda n: (rank(n), n))
    rest = sorted(n for n in names if rank(n) is None)
    rows = []
    for name in (*first, *rest):
        a, b = mine.get(name), theirs.get(name)
        rows.append(ComparisonRow(name, a, b, a - b if a is not None and b is not None else None))
    return rows


def charted_metric(rows: tuple[ComparisonRow, ...], primary_metric: str) -> str | None:
    """The metric an alias move's chart shows: the first row when it is a primary metric
    (`rmse_test` for `rmse`), else None (no primary metric is logged: no chart)."""
    if primary_metric and rows and _primary_rank(rows[0].metric, primary_metric) is not None:
        return rows[0].metric
    return None


def chart_versions(known: Collection[int], marked: Collection[int], cap: int) -> list[int]:
    """The versions a chart shows, sorted: every `marked` one that is `known` (candidate,
    incumbent), then the newest others, `cap` in all (more only when more are marked)."""
    keep = sorted(set(marked) & set(known))
    others = sorted(set(known) - set(keep), reverse=True)
    return sorted(keep + others[: max(0, cap - len(keep))])


def metric_series(
    metric: str,
    values: Mapping[int, Mapping[str, float] | None],
    *,
    candidate: int,
    incumbent: int | None,
    total: int,
) -> MetricSeries:
    """`metric` of each version in `values` (version -> its run's metrics, None when
    unknown), sorted by version."""
    points = tuple(
        SeriesPoint(n, m.get(metric) if m is not None else None) for n, m in sorted(values.items())
    )
    return MetricSeries(metric, points, candidate, incumbent, total)
