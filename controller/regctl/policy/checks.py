"""The checks: one handler per check type, each judging one subject into findings.

`judge` dispatches on the check's type (functools.singledispatch, the one place that
does): a new check type needs its value in `regctl.policy.values`, its spec field and
conversion in `regctl.policy.specs`/`loading`, and one handler here. Handlers are pure
functions of values; each gives a `Finding` (pass or fail, observed value, bound and
detail), which `regctl.policy.evaluation` turns into a Result with severity and waivers.

Decisions (SPEC section 4 is silent): a missing param or metric fails the rule, as does
missing run data; NaN, +-Infinity and MLflow's stand-in for them fail every bound; bounds
are inclusive up to a relative tolerance of 1e-9; a percentage is taken of the
incumbent's absolute value; `model_type`, `objective` and `primary_metric` are compared
ignoring case.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import singledispatch
from typing import Any, Final, TypeAlias

from regctl.policy.values import (
    AllowedAliases,
    AllowedParams,
    Bound,
    Check,
    CompareTo,
    MetricBounds,
    RelativeBound,
    RequireDescription,
    RequireMetrics,
    RequireParams,
    RunNamePattern,
    Subject,
    expand_placeholders,
    format_number,
)

__all__ = ["NORMALISED_PARAMS", "Finding", "Lookup", "judge", "normalise", "not_finite"]

_REL_TOL: Final = 1e-9
_ABS_TOL: Final = 1e-12

Lookup: TypeAlias = Callable[[str, str], tuple[Subject, ...]]
"""`(model, alias) -> the declared holders of `alias` before the change`, for `compare_to`."""


@dataclass(frozen=True, slots=True)
class Finding:
    """What one check found: `check` names the metric or param (else ""), `ok` passes."""

    check: str
    ok: bool
    observed: str
    bound: str
    detail: str


NORMALISED_PARAMS: Final = frozenset({"model_type", "objective", "primary_metric"})
"""Params compared ignoring case by `match` and `allowed_params`: enumerations of the
metadata schema that sync's derivation already reads case-insensitively (runs.py: a
config's `LGBM` is LightGBM), so a policy for `lgbm` judges an `LGBM` run."""


def normalise(key: str, value: str) -> str:
    """A param value as `match` and `allowed_params` compare it."""
    return value.casefold() if key in NORMALISED_PARAMS else value


@singledispatch
def judge(check: Check, s: Subject, incumbents: Lookup) -> list[Finding]:
    """The findings of `check` on `s`: one per metric for metric rules, one per param for
    `allowed_params`, else one. `incumbents` finds the holders `compare_to` refers to."""
    raise TypeError(f"no handler for the check {type(check).__name__}")


@judge.register
def _(check: RequireParams, s: Subject, incumbents: Lookup) -> list[Finding]:
    return [_require("params", "require_params", check.names, s.params)]


@judge.register
def _(check: RequireMetrics, s: Subject, incumbents: Lookup) -> list[Finding]:
    return [_require("metrics", "require_metrics", check.names, s.metrics)]


@judge.register
def _(check: RunNamePattern, s: Subject, incumbents: Lookup) -> list[Finding]:
    return [_run_name(check, s)]


@judge.register
def _(check: MetricBounds, s: Subject, incumbents: Lookup) -> list[Finding]:
    return [_bound(b, s.metrics) for b in check.bounds]


@judge.register
def _(check: CompareTo, s: Subject, incumbents: Lookup) -> list[Finding]:
    return _compare(check, s, incumbents(s.model, check.alias))


@judge.register
def _(check: AllowedAliases, s: Subject, incumbents: Lookup) -> list[Finding]:
    return [_allowed_aliases(check, s)]


@judge.register
def _(check: AllowedParams, s: Subject, incumbents: Lookup) -> list[Finding]:
    return [_allowed_param(k, v, s.params) for k, v in check.allowed.items()]


@judge.register
def _(check: RequireDescription, s: Subject, incumbents: Lookup) -> list[Finding]:
    return [_description(s)]


def _no_data(what: str, check: str, bound: str) -> Finding:
    return Finding(check, False, "no run data", bound, f"{what} unavailable: no run data")


def _require(
    what: str, field: str, names: tuple[str, ...], data: Mapping[str, Any] | None
) -> Finding:
    bound = f"{field} {', '.join(names)}"
    if data is None:
        return _no_data(what, "", bound)
    missing = [n for n in names if n not in data]
    if missing:
        noun = what if len(missing) > 1 else what[:-1]
        return Finding(
            "",
            False,
            f"missing {', '.join(missing)}",
            bound,
            f"{noun} {', '.join(missing)} missing",
        )
    return Finding("", True, f"all {len(names)} present", bound, f"required {what} present")


def _run_name(check: RunNamePattern, s: Subject) -> Finding:
    if check.placeholders and s.params is None:
        return _no_data("params", "", f"run_name {check.pattern}")
    params = s.params or {}
    missing = [p for p in check.placeholders if p not in params]
    if missing:
        return Finding(
            "",
            False,
            f"{s.run} (param {', '.join(missing)} missing)",
            f"run_name {check.pattern}",
            f"run_name pattern needs param {', '.join(missing)}, which the run does not have",
        )
    expanded = expand_placeholders(check.pattern, lambda name: re.escape(params[name]))
    try:
        ok = re.search(expanded, s.run) is not None
    except re.error as exc:  # a param value cannot break an escaped pattern; be safe anyway
        return Finding("", False, s.run, f"run_name {expanded}", f"run_name pattern: {exc}")
    detail = "run name matches" if ok else "run name does not match the pattern"
    return Finding("", ok, s.run, f"run_name {expanded}", detail)


def _le(a: float, b: float) -> bool:
    # NaN compares False both ways, so it never satisfies a bound.
    return a <= b or math.isclose(a, b, rel_tol=_REL_TOL, abs_tol=_ABS_TOL)


def not_finite(value: float) -> str | None:
    """How a metric value that is not a finite number reads, or None for a finite one.

    MLflow's stores keep +-Infinity as +-1.7976931348623157e308 (measured on 3.17), so a
    value at the float limit is an infinity too: it must not pass a `max` bound."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Infinity" if value > 0 else "-Infinity"
    if abs(value) >= sys.float_info.max:
        sign = "+" if value > 0 else "-"
        return f"{value!r} (MLflow's stand-in for {sign}Infinity)"
    return None


def _bound(b: Bound, metrics: Mapping[str, float] | None) -> Finding:
    parts = [f"min {format_number(b.min)}" if b.min is not None else "", ""]
    if b.max is not None:
        parts[1] = f"max {format_number(b.max)}"
    bound = f"{b.metric} " + ", ".join(p for p in parts if p)
    if metrics is None:
        return _no_data("metrics", b.metric, bound)
    value = metrics.get(b.metric)
    if value is None:
        return Finding(b.metric, False, "missing", bound, f"{b.metric} is missing")
    odd = not_finite(value)
    if odd is not None:  # NaN and the infinities fail every bound
        return Finding(
            b.metric, False, f"{b.metric} {odd}", bound, f"{b.metric} is {odd}, not a finite number"
        )
    low = b.min is None or _le(b.min, value)
    high = b.max is None or _le(value, b.max)
    if not low:
        detail = f"{b.metric} is below the minimum"
    elif not high:
        detail = f"{b.metric} is above the maximum"
    else:
        detail = f"{b.metric} is within bounds"
    return Finding(b.metric, low and high, f"{b.metric} {format_number(value)}", bound, detail)


def _same_version(a: Subject, b: Subject) -> bool:
    """By version number, else by run id; never by run name (anyone can reuse a name)."""
    if a.version is not None and b.version is not None:
        return a.version == b.version
    if a.run_id is not None and b.run_id is not None:
        return a.run_id == b.run_id
    return False


def _compare(check: CompareTo, s: Subject, declared: Sequence[Subject]) -> list[Finding]:
    bound_all = f"compare_to {check.alias}"
    if not declared:
        return [
            Finding(
                "",
                True,
                "no incumbent",
                bound_all,
                f"the base manifests declare no holder of {check.alias}",
            )
        ]
    out: list[Finding] = []
    for inc in declared:
        if inc.source == "unknown":  # nothing trustworthy is known about the holder before
            out.append(Finding("", False, "incumbent unknown", bound_all, inc.location))
        elif inc.model == s.model and _same_version(s, inc):
            # Moving the alias back to the declared holder repairs drift: not a promotion.
            out.append(
                Finding(
                    "",
                    True,
                    "is the incumbent",
                    bound_all,
                    f"this version is the declared holder of {check.alias}",
                )
            )
        else:
            who = f"{check.alias} v{inc.version}" if inc.version is not None else check.alias
            out.extend(_relative_finding(b, s, inc, who) for b in check.bounds)
    return out


def _relative_finding(b: RelativeBound, s: Subject, inc: Subject, who: str) -> Finding:
    limits = [
        f"max_increase {b.max_increase}" if b.max_increase is not None else "",
        f"max_decrease {b.max_decrease}" if b.max_decrease is not None else "",
    ]
    bound = f"{b.metric} " + ", ".join(p for p in limits if p) + f" vs {who} (run {inc.run})"
    if s.metrics is None:
        return _no_data("metrics", b.metric, bound)
    cand = s.metrics.get(b.metric)
    if cand is None:
        return Finding(b.metric, False, "missing", bound, f"{b.metric} is missing")
    odd = not_finite(cand)
    if odd is not None:
        return Finding(
            b.metric, False, f"{b.metric} {odd}", bound, f"{b.metric} is {odd}, not a finite number"
        )
    old = inc.metrics.get(b.metric) if inc.metrics is not None else None
    if old is None:
        return Finding(
            b.metric,
            False,
            f"{b.metric} {format_number(cand)}, incumbent value missing",
            bound,
            f"the incumbent {who} has no {b.metric} to compare with",
        )
    odd = not_finite(old)
    if odd is not None:
        return Finding(
            b.metric,
            False,
            f"{b.metric} {format_number(cand)}, incumbent {odd}",
            bound,
            f"the incumbent {who}'s {b.metric} is {odd}: nothing finite to compare with",
        )
    delta = cand - old
    pct = f", {delta / abs(old) * 100:+.2f}%" if old != 0 and math.isfinite(delta) else ""
    observed = f"{b.metric} {format_number(cand)} vs {format_number(old)} ({delta:+.6g}{pct})"
    ok = True
    detail = f"{b.metric} changed within the allowed range vs {who}"
    if b.max_increase is not None and not _le(delta, b.max_increase.allowed(old)):
        ok = False
        detail = (
            f"{b.metric} rose by more than {b.max_increase} "
            f"(+{b.max_increase.allowed(old):.6g}) over {who}"
        )
    if b.max_decrease is not None and not _le(-delta, b.max_decrease.allowed(old)):
        ok = False
        detail = (
            f"{b.metric} fell by more than {b.max_decrease} "
            f"(-{b.max_decrease.allowed(old):.6g}) below {who}"
        )
    if math.isnan(delta):
        ok = False
        detail = f"{b.metric} cannot be compared with {who} (NaN)"
    return Finding(b.metric, ok, observed, bound, detail)


def _allowed_aliases(check: AllowedAliases, s: Subject) -> Finding:
    bound = f"allowed_aliases {', '.join(check.names)}"
    extra = [a for a in s.aliases if a not in check.names]
    observed = f"aliases {', '.join(s.aliases)}" if s.aliases else "no aliases"
    if extra:
        return Finding("", False, observed, bound, f"alias {', '.join(extra)} is not allowed")
    return Finding("", True, observed, bound, "aliases allowed")


def _allowed_param(key: str, values: tuple[str, ...], params: Mapping[str, str] | None) -> Finding:
    bound = f"{key} one of {', '.join(values)}"
    if params is None:
        return _no_data("params", key, bound)
    value = params.get(key)
    if value is None:
        return Finding(key, False, "missing", bound, f"param {key} is missing")
    ok = normalise(key, value) in {normalise(key, v) for v in values}
    detail = f"param {key} is allowed" if ok else f"param {key} has a value outside the list"
    return Finding(key, ok, f"{key} {value}", bound, detail)


def _description(s: Subject) -> Finding:
    bound = "require_description"
    if s.description is None or not s.description.strip():
        return Finding("", False, "no description", bound, "the version has no description")
    return Finding("", True, f"description of {len(s.description)} characters", bound, "described")
