"""The metric comparison of an alias move: a candidate's metrics beside the incumbent's.

`regctl plan` and `check` show it next to the policy verdicts (`values.Comparison`); it
judges nothing, it only orders the rows so that the primary metric comes first.
"""

from __future__ import annotations

from regctl.policy.values import ComparisonRow, Subject

__all__ = ["alias_comparison"]


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
    split_order = {"test": 0, "val": 1, "train": 2, "final": 0}

    def primary_rank(name: str) -> int | None:
        if name == primary_metric:
            return -1
        if name.startswith(primary_metric + "_"):
            return split_order.get(name[len(primary_metric) + 1 :], 9)
        return None

    first = sorted(
        (n for n in names if primary_rank(n) is not None),
        key=lambda n: (primary_rank(n), n),
    )
    rest = sorted(n for n in names if primary_rank(n) is None)
    rows = []
    for name in (*first, *rest):
        a, b = mine.get(name), theirs.get(name)
        rows.append(ComparisonRow(name, a, b, a - b if a is not None and b is not None else None))
    return rows
