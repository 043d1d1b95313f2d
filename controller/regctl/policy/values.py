"""The policy values: checks, rules, policies, waivers, subjects, results and reports.

Frozen dataclasses built by `regctl.policy.loading` from the YAML specs and judged by
`regctl.policy.evaluation`; nothing here reads files or talks to a registry. Also the
`{param}` placeholder syntax of `run_name` patterns (`expand_placeholders`,
`placeholders`), which loading validates and the run-name check expands, and
`format_number`, how a bound or metric value is written in messages.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple, TypeAlias

from regctl.errors import ExitCode, Location

__all__ = [
    "OUTCOMES",
    "AllowedAliases",
    "AllowedParams",
    "Bound",
    "Check",
    "CompareTo",
    "Comparison",
    "ComparisonRow",
    "Incumbents",
    "MetricBounds",
    "MetricSeries",
    "Outcome",
    "Policy",
    "PolicyReport",
    "PolicySet",
    "Relative",
    "RelativeBound",
    "RequireDescription",
    "RequireMetrics",
    "RequireParams",
    "Result",
    "Review",
    "Rule",
    "RunNamePattern",
    "SeriesPoint",
    "Severity",
    "Subject",
    "Waiver",
    "expand_placeholders",
    "format_number",
    "placeholders",
]

Severity: TypeAlias = Literal["deny", "warn"]
Outcome: TypeAlias = Literal["pass", "deny", "warn", "waived", "expired-waiver"]
OUTCOMES: Final[tuple[Outcome, ...]] = ("deny", "expired-waiver", "warn", "waived", "pass")
"""Every outcome, most serious first (the order of summaries)."""

# Placeholders are `{identifier}` only, so regex quantifiers (`{8}`, `{2,3}`) stay
# quantifiers; `\{` is an escaped brace and never opens a placeholder.
_PLACEHOLDER_RE: Final = re.compile(r"\\.|\{([A-Za-z_][A-Za-z0-9_.]*)\}", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Relative:
    """A relative bound: `value` percent of the incumbent (`percent`) or an absolute step."""

    value: float
    percent: bool

    def allowed(self, incumbent: float) -> float:
        """The largest change allowed from `incumbent`."""
        return abs(incumbent) * self.value / 100.0 if self.percent else self.value

    def __str__(self) -> str:
        return f"{format_number(self.value)}%" if self.percent else format_number(self.value)


@dataclass(frozen=True, slots=True)
class RequireParams:
    """Every named param must be present (with any value)."""

    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RequireMetrics:
    """Every named metric must be present."""

    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RunNamePattern:
    """The run name must match `pattern` once each `{param}` is replaced by its escaped value."""

    pattern: str
    placeholders: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Bound:
    """Absolute, inclusive bounds of one metric."""

    metric: str
    min: float | None
    max: float | None


@dataclass(frozen=True, slots=True)
class MetricBounds:
    """`metrics: {name: {min, max}}`: each metric within its absolute bounds."""

    bounds: tuple[Bound, ...]


@dataclass(frozen=True, slots=True)
class RelativeBound:
    """How far one metric may move from the incumbent's value, up and down."""

    metric: str
    max_increase: Relative | None
    max_decrease: Relative | None


@dataclass(frozen=True, slots=True)
class CompareTo:
    """`compare_to: alias` + `metrics`: no worse than the version holding `alias` now."""

    alias: str
    bounds: tuple[RelativeBound, ...]


@dataclass(frozen=True, slots=True)
class RequireDescription:
    """The version must have a non-blank description."""


@dataclass(frozen=True, slots=True)
class AllowedAliases:
    """The version may hold only these aliases (exact names, as MLflow compares them)."""

    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AllowedParams:
    """Each named param must be present and hold one of its allowed values."""

    allowed: Mapping[str, tuple[str, ...]]


Check: TypeAlias = (
    RequireParams
    | RequireMetrics
    | RunNamePattern
    | MetricBounds
    | CompareTo
    | RequireDescription
    | AllowedAliases
    | AllowedParams
)


@dataclass(frozen=True, slots=True)
class Rule:
    """One named check of a policy; `aliases` limits it to versions holding any of them."""

    name: str
    severity: Severity
    aliases: tuple[str, ...]
    check: Check
    location: Location


@dataclass(frozen=True, slots=True)
class Policy:
    """A named set of rules for the versions whose params `match` (empty: every version)."""

    name: str
    match: Mapping[str, tuple[str, ...]]
    rules: tuple[Rule, ...]
    location: Location

    def rule(self, name: str) -> Rule | None:
        """The rule called `name`, or None."""
        return next((r for r in self.rules if r.name == name), None)


@dataclass(frozen=True, slots=True)
class Waiver:
    """An accepted exception: `rule` of `policy` does not deny one run of `model` until
    `expires`.

    The run is bound by `run_id`, or by `run` (a name inside the model's experiment) plus
    `digest`, the run's content digest: a name alone never carries a waiver to another run
    (a `run` without `digest` is kept, so that `check` can say how to bind it, but it
    never applies).
    """

    policy: str
    rule: str
    model: str
    run: str | None
    reason: str
    expires: dt.date
    location: Location
    run_id: str | None = None
    digest: str | None = None

    @property
    def names(self) -> str:
        """How the waiver names its run, for messages."""
        if self.run_id is not None:
            return f"run_id {self.run_id}"
        return f"run {self.run}" + (f" digest {self.digest}" if self.digest else "")


@dataclass(frozen=True, slots=True)
class PolicySet:
    """Every policy (sorted by name) and waiver (sorted by what they waive) of a repository."""

    policies: tuple[Policy, ...] = ()
    waivers: tuple[Waiver, ...] = ()

    def policy(self, name: str) -> Policy | None:
        """The policy called `name`, or None."""
        return next((p for p in self.policies if p.name == name), None)


@dataclass(frozen=True, slots=True)
class Subject:
    """One model version to judge, as the desired state will have it.

    `run` is the run's name (or its id when the name is unknown); `version` is None when
    the version is not registered yet; `aliases` are the aliases the version will hold;
    `description` is the description it will have. `params`/`metrics` are None when the
    run data is unavailable (neither logged nor readable from a run directory): rules
    then fail closed. `source` says where the data came from (`mlflow` or `run_dir`);
    `location` is the manifest entry (`file:line`).
    """

    model: str
    run: str
    run_id: str | None
    version: int | None
    aliases: tuple[str, ...]
    description: str | None
    params: Mapping[str, str] | None
    metrics: Mapping[str, float] | None
    source: str
    location: str
    digest: str | None = None
    """The run's content digest (its run directory's, or the ledger's), when known."""
    in_experiment: bool = True
    """The run lives in the model's experiment (where a waiver's run name is resolved)."""


Incumbents: TypeAlias = (
    Callable[[str, str], "Subject | Sequence[Subject] | None"]
    | Mapping[tuple[str, str], Subject]
    | Mapping[tuple[str, str], Sequence[Subject]]
)
"""`(model, alias) -> the declared holders of `alias` before the change (none, one, or one
per base revision): `compare_to` must hold against each."""


@dataclass(frozen=True, slots=True)
class Result:
    """The verdict of one check of one rule on one version.

    `check` names the metric or param for rules that give one result per metric or
    param, else it is "". `detail` is the finding alone; `message` is one line naming the
    model, run, policy, rule, observed value and bound (and the waiver, if any).
    """

    model: str
    run: str
    run_id: str | None
    version: int | None
    location: str
    policy: str
    rule: str
    check: str
    severity: Severity
    outcome: Outcome
    observed: str
    bound: str
    detail: str
    message: str
    waiver_reason: str | None = None
    waiver_expires: dt.date | None = None
    waiver_note: str | None = None
    """Why a waiver naming this run was not applied (bound to another run, no digest)."""
    waive_with: str | None = None
    """What a waiver must give to bind to exactly this run (`run_id: ...`, or `run: ...`
    with `digest: ...`), for `check` to print; None when it passes."""

    @property
    def failed(self) -> bool:
        """True for outcomes that stop an apply (deny and expired waivers)."""
        return self.outcome in ("deny", "expired-waiver")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping (format version 1)."""
        waiver = (
            None
            if self.waiver_expires is None
            else {"reason": self.waiver_reason, "expires": self.waiver_expires.isoformat()}
        )
        return {
            "model": self.model,
            "run": self.run,
            "run_id": self.run_id,
            "version": self.version,
            "location": self.location,
            "policy": self.policy,
            "rule": self.rule,
            "check": self.check,
            "severity": self.severity,
            "outcome": self.outcome,
            "observed": self.observed,
            "bound": self.bound,
            "detail": self.detail,
            "message": self.message,
            "waiver": waiver,
            "waiver_note": self.waiver_note,
            "waive_with": self.waive_with,
        }


@dataclass(frozen=True, slots=True)
class PolicyReport:
    """Every result of one evaluation, in a deterministic order; carries the exit code."""

    results: tuple[Result, ...]

    @property
    def denied(self) -> tuple[Result, ...]:
        """Results that deny: `deny` and `expired-waiver`."""
        return tuple(r for r in self.results if r.failed)

    @property
    def warned(self) -> tuple[Result, ...]:
        """Results that warn."""
        return tuple(r for r in self.results if r.outcome == "warn")

    @property
    def waived(self) -> tuple[Result, ...]:
        """Failures that a valid waiver accepts (reported, never hidden)."""
        return tuple(r for r in self.results if r.outcome == "waived")

    @property
    def passed(self) -> tuple[Result, ...]:
        """Results that pass."""
        return tuple(r for r in self.results if r.outcome == "pass")

    def counts(self) -> dict[Outcome, int]:
        """How many results of each outcome, every outcome present."""
        out: dict[Outcome, int] = dict.fromkeys(OUTCOMES, 0)
        for r in self.results:
            out[r.outcome] += 1
        return out

    @property
    def exit_code(self) -> int:
        """3 when anything is denied (expired waivers included), else 0."""
        return int(ExitCode.DENIED if self.denied else ExitCode.OK)


class ComparisonRow(NamedTuple):
    """One metric of a candidate beside the current alias holder's (None when absent)."""

    metric: str
    candidate: float | None
    incumbent: float | None
    delta: float | None


class SeriesPoint(NamedTuple):
    """One version's value of the charted metric: None when the version's run has no such
    metric (or its run data is unavailable); NaN and infinities are kept as they are."""

    version: int
    value: float | None


@dataclass(frozen=True, slots=True)
class MetricSeries:
    """One metric across a model's versions, for an alias move's chart.

    `points` are sorted by version: at most a cap of them, the newest ones plus the
    candidate and the incumbent (`total` says how many versions were known before the
    cap). `candidate` is the version the alias moves to; `incumbent` the version holding
    it before the change (None when there is none or it has no version any more).
    """

    metric: str
    points: tuple[SeriesPoint, ...]
    candidate: int
    incumbent: int | None
    total: int


@dataclass(frozen=True, slots=True)
class Comparison:
    """An alias move's evidence: the candidate's metrics beside the incumbent's, and the
    primary metric across the model's versions (`series`, None when there is no primary
    metric to chart)."""

    model: str
    alias: str
    candidate: str
    incumbent: str | None
    primary_metric: str
    rows: tuple[ComparisonRow, ...]
    series: MetricSeries | None = None


@dataclass(frozen=True, slots=True)
class Review:
    """Policy verdicts for a plan, and the metric comparison of each alias move."""

    report: PolicyReport
    comparisons: tuple[Comparison, ...]


# --------------------------------------------------------------------------- placeholders


def expand_placeholders(pattern: str, value: Callable[[str], str]) -> str:
    """Replace each `{param}` of a run_name pattern by `value(param)`; escapes stay."""

    def sub(m: re.Match[str]) -> str:
        return m.group(0) if m.group(1) is None else value(m.group(1))

    return _PLACEHOLDER_RE.sub(sub, pattern)


def placeholders(pattern: str) -> tuple[str, ...]:
    """The `{param}` names of a run_name pattern, each once, in order of appearance."""
    names = [m.group(1) for m in _PLACEHOLDER_RE.finditer(pattern) if m.group(1) is not None]
    return tuple(dict.fromkeys(names))


# --------------------------------------------------------------------------- numbers


def format_number(x: float) -> str:
    """A metric value as written: shortest round-trip form, integers without `.0`."""
    if math.isfinite(x) and x == int(x) and abs(x) < 1e16:
        return str(int(x))
    return repr(x)
