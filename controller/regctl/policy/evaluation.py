"""Policies and waivers: rules over a version's run data, judged before anything is applied.

`policies/*.yaml` holds `kind: Policy` and `kind: Waiver` documents (SPEC section 4).
`load_policies` is the only function here that reads files; `evaluate` is a pure function
of values (the policies, the versions to judge, a lookup of the current alias holders and
today's date) and returns a PolicyReport whose `exit_code` is the command's.

Decisions taken where SPEC section 4 is silent (each is repeated where it is made):

- A rule holds exactly one check: `require_params`, `require_metrics`, `run_name`,
  `metrics` (absolute `min`/`max`), `metrics` + `compare_to` (relative `max_increase`/
  `max_decrease`), `require_description`, `allowed_aliases` or `allowed_params`.
- Fail closed. When a version's params are unavailable, every policy is judged (its
  `match` cannot be decided) and every rule that needs run data fails with "no run data".
  A run that lacks a `match` key gives a deny of `regctl/match` (missing data), unless
  another key rules the policy out. An alias that any rule scopes (`aliases:`) is
  protected: a version that is to hold it and that no policy with a non-empty `match`
  judges is denied (`regctl/protected-alias`). `regctl/...` results cannot be waived.
- `match` and `allowed_params` compare `model_type`, `objective` and `primary_metric`
  ignoring case, as sync's derivation reads them; other params exactly.
- A missing param or metric fails the rule. NaN, +-Infinity and MLflow's stand-in for
  them (+-1.797e308) fail every bound, absolute or relative, and the message names the
  value. An incumbent that lacks the compared metric fails the rule too.
- A failing rule's outcome is its severity (`deny` or `warn`), missing data included.
- `aliases:` scoping compares names case-insensitively, so a rule written for
  `Production` also judges `production` (which `allowed_aliases` then denies anyway).
  `allowed_aliases` itself compares exactly, as MLflow does.
- `run_name` is searched with `re.search`: anchor it with `^...$` (the shipped ones are).
- Bounds are inclusive, with a relative tolerance of 1e-9 so that a value equal to the
  bound up to float rounding passes. A percentage is taken of the incumbent's absolute
  value, so it works for negative metrics such as log-likelihoods.
- A waiver holds through its `expires` day. An expired waiver of a `deny` rule is the
  outcome `expired-waiver` (a deny); of a `warn` rule it stays a warning. A waiver binds
  to one run: `run_id`, or `run` (a name in the model's experiment) plus `digest` (the
  run's content digest). A waiver that names the run's name but not its digest, or whose
  digest or experiment differs, is not applied and the result says why (`waiver_note`);
  every failing result says how to bind a waiver to exactly its run (`waive_with`). Two
  waivers for the same (policy, rule, model, run) are an error, as are waivers naming an
  unknown policy or rule.
- Metric rules give one result per metric; `allowed_params` one per param; every other
  rule one result. Results follow subjects (model, run, version), then policies by name,
  then rules in file order: reports are byte-stable for golden files and PR comments.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Final, Literal, NamedTuple, TypeAlias

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainValidator,
    StringConstraints,
    WithJsonSchema,
)

from regctl import escape
from regctl.adapters.manifests import (
    _Strict,
    alias_problem,
    display_path,
    validate_document,
    yaml_files,
)
from regctl.adapters.yamlfile import Document, Path_, dotted, load_documents
from regctl.errors import ExitCode, InputError, Location, Problem, type_name

__all__ = [
    "FORMAT_VERSION",
    "OUTCOMES",
    "AllowedAliases",
    "AllowedParams",
    "Bound",
    "Check",
    "CompareTo",
    "ComparisonRow",
    "Incumbents",
    "MetricBounds",
    "Outcome",
    "Policy",
    "PolicyReport",
    "PolicySet",
    "PolicySpec",
    "Relative",
    "RelativeBound",
    "RequireDescription",
    "RequireMetrics",
    "RequireParams",
    "Result",
    "Rule",
    "RunNamePattern",
    "Severity",
    "Subject",
    "Waiver",
    "WaiverSpec",
    "alias_comparison",
    "evaluate",
    "load_policies",
    "policy_files",
    "render_report",
]

Severity: TypeAlias = Literal["deny", "warn"]
Outcome: TypeAlias = Literal["pass", "deny", "warn", "waived", "expired-waiver"]
OUTCOMES: Final[tuple[Outcome, ...]] = ("deny", "expired-waiver", "warn", "waived", "pass")
"""Every outcome, most serious first (the order of summaries)."""

FORMAT_VERSION: Final = 1
"""Version of the JSON report; bumped on any incompatible change."""

# Placeholders are `{identifier}` only, so regex quantifiers (`{8}`, `{2,3}`) stay
# quantifiers; `\{` is an escaped brace and never opens a placeholder.
_PLACEHOLDER_RE: Final = re.compile(r"\\.|\{([A-Za-z_][A-Za-z0-9_.]*)\}", re.DOTALL)
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_PERCENT_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*%\s*$")
_REL_TOL: Final = 1e-9
_ABS_TOL: Final = 1e-12


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Relative:
    """A relative bound: `value` percent of the incumbent (`percent`) or an absolute step."""

    value: float
    percent: bool

    def allowed(self, incumbent: float) -> float:
        """The largest change allowed from `incumbent`."""
        return abs(incumbent) * self.value / 100.0 if self.percent else self.value

    def __str__(self) -> str:
        return f"{_num(self.value)}%" if self.percent else _num(self.value)


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


# --------------------------------------------------------------------------- YAML schemas


def _name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError(
            f"{value!r}: use letters, digits, '_', '-' and '.', starting with a letter or digit"
        )
    return value


def _number(value: Any) -> Any:
    # Strict floats would say "Input should be a valid number" for a quoted "0.06";
    # say what YAML made of it instead.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {_type_name(value)}")
    return value


def _relative(value: Any) -> Relative:
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"must be a finite number >= 0, got {value!r}")
        return Relative(float(value), percent=False)
    if isinstance(value, str):
        m = _PERCENT_RE.match(value)
        if m is not None:
            return Relative(float(m.group(1)), percent=True)
    raise ValueError(
        f"expected a percentage like '5%' or an absolute number like 0.01, got {value!r}"
    )


def _date(value: Any) -> Any:
    # yamlfile reads an unquoted 2026-12-31 as a date; a quoted ISO date is just as clear.
    if isinstance(value, dt.datetime):
        raise ValueError(
            f"expected a date like 2026-12-31, got a date and time {value.isoformat()}"
        )
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"expected a date like 2026-12-31, got {value!r}")


def _type_name(value: Any) -> str:
    if isinstance(value, str) and _looks_numeric(value):
        return f"a string ({value!r}): unquote it"
    return type_name(value)


def _param_values(value: Any) -> tuple[str, ...]:
    # Param values are strings in MLflow: `1` must be written '1', or it would never
    # match. One validator instead of `str | list[str]` keeps the message about YAML.
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError("give at least one value")
    for item in items:
        if not isinstance(item, str):
            what = _type_name(item)
            hint = ": quote it" if isinstance(item, int | float | bool) else ""
            raise ValueError(f"expected a string or a list of strings, got {what} {item!r}{hint}")
        if not item:
            raise ValueError("values must not be empty")
    return tuple(items)


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


Name = Annotated[str, StringConstraints(min_length=1, max_length=128), AfterValidator(_name)]
NonEmpty = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Number = Annotated[
    float,
    BeforeValidator(_number),
    Field(allow_inf_nan=False),
]
RelativeValue = Annotated[
    Relative,
    PlainValidator(_relative),
    WithJsonSchema(
        {
            "oneOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?|\.\d+)\s*%\s*$"},
            ]
        }
    ),
]
Expiry = Annotated[
    dt.date,
    BeforeValidator(_date),
    WithJsonSchema({"type": "string", "format": "date"}),
]
ParamValues = Annotated[
    tuple[str, ...],
    PlainValidator(_param_values),
    WithJsonSchema(
        {
            "oneOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
            ]
        }
    ),
]


class MetricBoundSpec(_Strict):
    """Bounds of one metric: absolute (`min`, `max`) or, with `compare_to`, relative."""

    min: Number | None = Field(None, description="Lowest value allowed (inclusive).")
    max: Number | None = Field(None, description="Highest value allowed (inclusive).")
    max_increase: RelativeValue | None = Field(
        None, description="Largest rise over the incumbent: '5%' of it, or an absolute step."
    )
    max_decrease: RelativeValue | None = Field(
        None, description="Largest fall below the incumbent: '2%' of it, or an absolute step."
    )


class RuleSpec(_Strict):
    """One rule: a name, a severity, an optional alias scope and exactly one check."""

    name: Name
    severity: Literal["deny", "warn"] = Field("deny", description="Outcome when it fails.")
    aliases: list[NonEmpty] | None = Field(
        None, description="Judge only versions that will hold any of these aliases."
    )
    require_params: list[NonEmpty] | None = Field(None, description="Params that must exist.")
    require_metrics: list[NonEmpty] | None = Field(None, description="Metrics that must exist.")
    run_name: NonEmpty | None = Field(
        None, description="Regex the run name must match; {param} is the param's escaped value."
    )
    metrics: dict[NonEmpty, MetricBoundSpec] | None = Field(
        None, description="Bounds per metric: min/max, or max_increase/max_decrease."
    )
    compare_to: NonEmpty | None = Field(
        None, description="Alias whose current holder the relative metric bounds refer to."
    )
    require_description: bool | None = Field(None, description="The version needs a description.")
    allowed_aliases: list[NonEmpty] | None = Field(
        None, description="The only aliases a version may hold."
    )
    allowed_params: dict[NonEmpty, ParamValues] | None = Field(
        None, description="Allowed values per param (the param must exist)."
    )


class MatchSpec(_Strict):
    """Which versions a policy judges: each param equal to the value or one of the list."""

    params: dict[NonEmpty, ParamValues] = Field(default_factory=dict)


class PolicySpec(_Strict):
    """`kind: Policy`: named rules for the versions whose run params match."""

    apiVersion: Literal["regctl/v1"]
    kind: Literal["Policy"]
    name: Name
    match: MatchSpec = Field(description="`{}` judges every version.")
    rules: list[RuleSpec]


class WaiverSpec(_Strict):
    """`kind: Waiver`: one rule of one policy does not deny one run of one model until expiry."""

    apiVersion: Literal["regctl/v1"]
    kind: Literal["Waiver"]
    policy: Name
    rule: Name
    model: NonEmpty
    run: NonEmpty | None = Field(
        None, description="Run name inside the model's experiment; needs `digest`."
    )
    run_id: NonEmpty | None = Field(None, description="Run id (instead of `run` + `digest`).")
    digest: Annotated[str, StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$")] | None = Field(
        None, description="The run's content digest, as `regctl check` prints it."
    )
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
    expires: Expiry = Field(description="Last day the waiver holds (YYYY-MM-DD).")


# --------------------------------------------------------------------------- loading

_CHECK_FIELDS: Final = (
    "require_params",
    "require_metrics",
    "run_name",
    "metrics",
    "require_description",
    "allowed_aliases",
    "allowed_params",
)


def policy_files(repo: Path) -> list[Path]:
    """The policy files of a repository (`policies/*.yaml` and `*.yml`, the suffix in any
    case), sorted. Any other entry is an InputError, as in manifests/ (`yaml_files`): a
    skipped file would silently drop the policy it holds."""
    return yaml_files(repo / "policies", repo)


def load_policies(repo: Path, files: Sequence[Path] | None = None) -> PolicySet:
    """Load every policy and waiver under `repo/policies` (or `files`).

    A file may hold several documents (`---`). Every file is read and every problem is
    collected before raising one InputError (`file:line:col: field.path: message`).
    """
    paths = policy_files(repo) if files is None else list(files)
    problems: list[Problem] = []
    declared: dict[str, Location] = {}
    specs: dict[str, PolicySpec] = {}
    policies: list[Policy] = []
    waivers: list[tuple[WaiverSpec, Document]] = []
    # A file that does not parse, or a policy without a readable name, may declare a
    # policy we cannot see; waivers naming an unknown policy are then not blamed for it.
    names_complete = True
    for path in paths:
        shown = display_path(path, repo)
        try:
            docs = load_documents(path, shown)
        except InputError as err:
            problems.extend(err.problems)
            names_complete = False
            continue
        for doc in docs:
            if doc.value is None:  # an empty document, e.g. after a trailing `---`
                continue
            kind = doc.value.get("kind") if isinstance(doc.value, dict) else None
            if kind == "Waiver":
                wspec, found = validate_document(doc, WaiverSpec)
                problems.extend(found)
                if wspec is not None:
                    waivers.append((wspec, doc))
                continue
            if kind != "Policy" and isinstance(doc.value, dict):
                problems.append(_kind_problem(doc, kind))
                names_complete = False
                continue
            # Duplicates are found by the name as written, even in an invalid policy.
            name = doc.value.get("name") if isinstance(doc.value, dict) else None
            if isinstance(name, str) and name in declared:
                problems.append(
                    _at(doc, ("name",), f"policy {name!r} is already declared in {declared[name]}")
                )
                continue
            if isinstance(name, str):
                declared[name] = doc.location(("name",))
            else:
                names_complete = False
            pspec, found = validate_document(doc, PolicySpec)
            problems.extend(found)
            if pspec is None:
                continue
            specs[pspec.name] = pspec
            found = _check_policy(pspec, doc)
            problems.extend(found)
            if not found:
                policies.append(_to_policy(pspec, doc))
    waiver_values, found = _check_waivers(waivers, declared, specs, complete=names_complete)
    problems.extend(found)
    if problems:
        raise InputError(problems)
    return PolicySet(
        tuple(sorted(policies, key=lambda p: p.name)),
        tuple(sorted(waiver_values, key=lambda w: (w.policy, w.rule, w.model, w.names))),
    )


def _at(doc: Document, path: Path_, message: str, *, key: bool = False) -> Problem:
    return Problem(doc.location(path, key=key), dotted(path), message)


def _kind_problem(doc: Document, kind: Any) -> Problem:
    if kind is None:
        return Problem(doc.location(()), "kind", "required field is missing (Policy or Waiver)")
    return _at(doc, ("kind",), f"must be 'Policy' or 'Waiver' in policies/, got {kind!r}")


def _check_policy(spec: PolicySpec, doc: Document) -> list[Problem]:
    problems: list[Problem] = []
    if not spec.rules:
        problems.append(_at(doc, ("rules",), "a policy needs at least one rule"))
    seen: dict[str, int] = {}
    for i, rule in enumerate(spec.rules):
        base: Path_ = ("rules", i)
        if rule.name in seen:
            problems.append(
                _at(
                    doc,
                    (*base, "name"),
                    f"rule {rule.name!r} is already declared in this policy "
                    f"(line {seen[rule.name]})",
                )
            )
        else:
            seen[rule.name] = doc.location((*base, "name")).line
        problems.extend(_check_rule(rule, doc, base))
    return problems


def _check_rule(rule: RuleSpec, doc: Document, base: Path_) -> list[Problem]:
    problems: list[Problem] = []

    def at(path: Path_, message: str, *, key: bool = False) -> None:
        problems.append(_at(doc, (*base, *path), message, key=key))

    present = [f for f in _CHECK_FIELDS if getattr(rule, f) is not None]
    if not present:
        if rule.compare_to is not None:
            at(
                ("compare_to",),
                "compare_to needs `metrics` with max_increase/max_decrease",
                key=True,
            )
        else:
            at((), "a rule needs one check: " + ", ".join(_CHECK_FIELDS))
    for extra in present[1:]:
        at(
            (extra,),
            f"a rule holds exactly one check; this one has {present[0]!r} and {extra!r} "
            "(split it into two rules)",
            key=True,
        )
    if rule.compare_to is not None and rule.metrics is None and present:
        at(("compare_to",), "compare_to goes with `metrics` (relative bounds) only", key=True)
    for alias_field in ("aliases", "allowed_aliases"):
        names: list[str] | None = getattr(rule, alias_field)
        if names is not None and not names:
            at((alias_field,), "give at least one alias")
        for j, alias in enumerate(names or ()):
            why = alias_problem(alias)
            if why:
                at((alias_field, j), why)
    if rule.compare_to is not None:
        why = alias_problem(rule.compare_to)
        if why:
            at(("compare_to",), why)
    for list_field in ("require_params", "require_metrics"):
        if getattr(rule, list_field) == []:
            at((list_field,), "give at least one name")
    if rule.require_description is False:
        at(("require_description",), "set it to true, or remove the rule")
    if rule.run_name is not None:
        try:
            re.compile(_expand(rule.run_name, lambda _name: "x"))
        except re.error as exc:
            at(("run_name",), f"invalid regular expression: {exc}")
    if rule.allowed_params is not None and not rule.allowed_params:
        at(("allowed_params",), "give at least one param")
    if rule.metrics is not None:
        problems.extend(_check_metrics(rule, doc, base))
    return problems


def _check_metrics(rule: RuleSpec, doc: Document, base: Path_) -> list[Problem]:
    problems: list[Problem] = []
    assert rule.metrics is not None
    if not rule.metrics:
        problems.append(_at(doc, (*base, "metrics"), "give at least one metric"))
    relative = rule.compare_to is not None
    for metric, b in rule.metrics.items():
        path: Path_ = (*base, "metrics", metric)
        if relative:
            for key in ("min", "max"):
                if getattr(b, key) is not None:
                    problems.append(
                        _at(
                            doc,
                            (*path, key),
                            f"{key} is an absolute bound: put it in a rule without compare_to",
                            key=True,
                        )
                    )
            if (
                b.max_increase is None
                and b.max_decrease is None
                and b.min is None
                and b.max is None
            ):
                problems.append(_at(doc, path, "give max_increase, max_decrease or both"))
        else:
            for key in ("max_increase", "max_decrease"):
                if getattr(b, key) is not None:
                    problems.append(
                        _at(
                            doc,
                            (*path, key),
                            f"{key} is relative to an incumbent: add `compare_to: <alias>` to "
                            "the rule, or use min/max",
                            key=True,
                        )
                    )
            if (
                b.min is None
                and b.max is None
                and b.max_increase is None
                and b.max_decrease is None
            ):
                problems.append(_at(doc, path, "give min, max or both"))
            if b.min is not None and b.max is not None and b.min > b.max:
                problems.append(
                    _at(doc, (*path, "min"), f"min {_num(b.min)} is above max {_num(b.max)}")
                )
    return problems


def _to_policy(spec: PolicySpec, doc: Document) -> Policy:
    rules = tuple(
        Rule(
            name=r.name,
            severity=r.severity,
            aliases=tuple(r.aliases or ()),
            check=_to_check(r),
            location=doc.location(("rules", i)),
        )
        for i, r in enumerate(spec.rules)
    )
    match = MappingProxyType(dict(sorted(spec.match.params.items())))
    return Policy(spec.name, match, rules, doc.location(("name",)))


def _to_check(r: RuleSpec) -> Check:
    # _check_rule has made sure exactly one check is present.
    if r.require_params is not None:
        return RequireParams(tuple(r.require_params))
    if r.require_metrics is not None:
        return RequireMetrics(tuple(r.require_metrics))
    if r.run_name is not None:
        return RunNamePattern(r.run_name, _placeholders(r.run_name))
    if r.metrics is not None and r.compare_to is not None:
        return CompareTo(
            r.compare_to,
            tuple(RelativeBound(m, b.max_increase, b.max_decrease) for m, b in r.metrics.items()),
        )
    if r.metrics is not None:
        return MetricBounds(tuple(Bound(m, b.min, b.max) for m, b in r.metrics.items()))
    if r.allowed_aliases is not None:
        return AllowedAliases(tuple(r.allowed_aliases))
    if r.allowed_params is not None:
        return AllowedParams(MappingProxyType(dict(r.allowed_params)))
    return RequireDescription()


def _check_waivers(
    specs: Iterable[tuple[WaiverSpec, Document]],
    declared: Mapping[str, Location],
    policies: Mapping[str, PolicySpec],
    *,
    complete: bool,
) -> tuple[list[Waiver], list[Problem]]:
    problems: list[Problem] = []
    out: dict[tuple[str, str, str, str], Waiver] = {}
    for spec, doc in specs:
        if spec.policy not in declared and complete:
            known = ", ".join(sorted(declared)) or "none"
            problems.append(
                _at(doc, ("policy",), f"no policy named {spec.policy!r} (known: {known})")
            )
            continue
        policy = policies.get(spec.policy)
        if policy is None:
            # The policy is invalid (already reported) or unreadable: say nothing rather
            # than blame the waiver for another document's error.
            continue
        if all(r.name != spec.rule for r in policy.rules):
            known = ", ".join(r.name for r in policy.rules)
            problems.append(
                _at(doc, ("rule",), f"policy {spec.policy!r} has no rule {spec.rule!r} ({known})")
            )
            continue
        if (spec.run is None) == (spec.run_id is None):
            problems.append(
                _at(
                    doc,
                    ("run_id",) if spec.run_id is not None else (),
                    "give the run: `run_id`, or `run` (its name) with `digest` "
                    "(regctl check prints both)",
                    key=spec.run_id is not None,
                )
            )
            continue
        if spec.run_id is not None and spec.digest is not None:
            problems.append(
                _at(
                    doc,
                    ("digest",),
                    "`digest` goes with `run` (a run id names one run already)",
                    key=True,
                )
            )
            continue
        waiver = Waiver(
            spec.policy,
            spec.rule,
            spec.model,
            spec.run,
            spec.reason,
            spec.expires,
            doc.location(()),
            run_id=spec.run_id,
            digest=spec.digest,
        )
        key = (spec.policy, spec.rule, spec.model, waiver.names)
        if key in out:
            problems.append(
                _at(
                    doc,
                    (),
                    f"a waiver of {spec.policy}/{spec.rule} for {spec.model} {waiver.names} "
                    f"is already declared in {out[key].location}",
                )
            )
        else:
            out[key] = waiver
    return list(out.values()), problems


# --------------------------------------------------------------------------- placeholders


def _expand(pattern: str, value: Callable[[str], str]) -> str:
    """Replace each `{param}` of a run_name pattern by `value(param)`; escapes stay."""

    def sub(m: re.Match[str]) -> str:
        return m.group(0) if m.group(1) is None else value(m.group(1))

    return _PLACEHOLDER_RE.sub(sub, pattern)


def _placeholders(pattern: str) -> tuple[str, ...]:
    names = [m.group(1) for m in _PLACEHOLDER_RE.finditer(pattern) if m.group(1) is not None]
    return tuple(dict.fromkeys(names))


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True, slots=True)
class _Finding:
    check: str
    ok: bool
    observed: str
    bound: str
    detail: str


GATE_POLICY: Final = "regctl"
"""The policy name of the results regctl itself gives (protected aliases, undecidable
matches): no waiver can name it, so they cannot be waived."""

NORMALISED_PARAMS: Final = frozenset({"model_type", "objective", "primary_metric"})
"""Params compared ignoring case by `match` and `allowed_params`: enumerations of the
metadata schema that sync's derivation already reads case-insensitively (runs.py: a
config's `LGBM` is LightGBM), so a policy for `lgbm` judges an `LGBM` run."""


def normalise(key: str, value: str) -> str:
    """A param value as `match` and `allowed_params` compare it."""
    return value.casefold() if key in NORMALISED_PARAMS else value


def protected_aliases(policies: PolicySet) -> frozenset[str]:
    """Aliases (case-folded) that some rule scopes: a version holding one must be judged by
    at least one policy with a non-empty `match`."""
    return frozenset(a.casefold() for p in policies.policies for r in p.rules for a in r.aliases)


def evaluate(
    policies: PolicySet,
    subjects: Sequence[Subject],
    incumbents: Incumbents,
    today: dt.date,
) -> PolicyReport:
    """Judge every subject by every policy that applies to it; a pure function.

    `incumbents(model, alias)` gives the version that holds `alias` before the change (the
    holder the base manifests declare), with its params and metrics, for `compare_to`
    rules. Waivers bound to the subject's run turn failures into `waived` results (or
    `expired-waiver` denies after `expires`).

    Fail closed (SPEC section 4): a policy whose `match` cannot be decided because the
    run lacks a match key gives a deny (missing data), and a version that is to hold a
    protected alias but is judged by no policy with a non-empty `match` is denied.
    """
    lookup = _incumbent_lookup(incumbents)
    protected = protected_aliases(policies)
    waivers: dict[tuple[str, str, str], list[Waiver]] = {}
    for w in policies.waivers:
        waivers.setdefault((w.policy, w.rule, w.model), []).append(w)
    results: list[Result] = []
    for subject in sorted(subjects, key=_subject_key):
        judged_by_match = False
        for policy in policies.policies:
            applies, missing = _applies(policy, subject)
            if missing:
                results.append(_undecided(subject, policy, missing))
                continue
            if not applies:
                continue
            if policy.match:
                judged_by_match = True
            for rule in policy.rules:
                if not _in_scope(rule, subject):
                    continue
                candidates = waivers.get((policy.name, rule.name, subject.model), [])
                for finding in _judge(rule.check, subject, lookup):
                    results.append(_result(subject, policy, rule, finding, candidates, today))
        held = [a for a in subject.aliases if a.casefold() in protected]
        if held and not judged_by_match:
            results.append(_unjudged(subject, held))
    return PolicyReport(tuple(results))


def _incumbent_lookup(incumbents: Incumbents) -> Callable[[str, str], tuple[Subject, ...]]:
    """A lookup by model and alias, the alias compared ignoring case as `aliases:` scoping
    compares it (so `compare_to: production` finds the holder of `Production`)."""
    if not isinstance(incumbents, Mapping):
        call = incumbents

        def ask(model: str, alias: str) -> tuple[Subject, ...]:
            found = call(model, alias)
            if found is None:
                return ()
            return (found,) if isinstance(found, Subject) else tuple(found)

        return ask
    table: dict[tuple[str, str], tuple[Subject, ...]] = {}
    for (model, alias), found in incumbents.items():
        many = (found,) if isinstance(found, Subject) else tuple(found)
        table.setdefault((model, alias.casefold()), ())
        table[(model, alias.casefold())] += many
    return lambda model, alias: table.get((model, alias.casefold()), ())


def _subject_key(s: Subject) -> tuple[str, str, int, str]:
    return (s.model, s.run, s.version if s.version is not None else 0, s.location)


def _applies(policy: Policy, subject: Subject) -> tuple[bool, list[str]]:
    """(applies, missing match keys). A key the run lacks is missing data, never a skip:
    the match is undecidable unless another key already rules the policy out."""
    if subject.params is None:
        return True, []  # fail closed: every rule then fails with "no run data"
    missing = []
    for key, values in policy.match.items():
        value = subject.params.get(key)
        if value is None:
            missing.append(key)
        elif normalise(key, value) not in {normalise(key, v) for v in values}:
            return False, []
    return not missing, missing


def _verdict(
    subject: Subject,
    policy: str,
    rule: str,
    severity: Severity,
    outcome: Outcome,
    finding: _Finding,
    suffix: str = "",
    **extra: Any,
) -> Result:
    """A Result whose one-line message names the model, version, run, policy, rule, the
    finding with its observed value and bound, and `suffix` (waivers)."""
    version = f"v{subject.version}" if subject.version is not None else "(new version)"
    message = (
        f"{subject.model} {version}, run {subject.run}: {policy}/{rule}: "
        f"{finding.detail} (observed {finding.observed}; bound {finding.bound}){suffix}"
    )
    return Result(
        model=subject.model,
        run=subject.run,
        run_id=subject.run_id,
        version=subject.version,
        location=subject.location,
        policy=policy,
        rule=rule,
        check=finding.check,
        severity=severity,
        outcome=outcome,
        observed=_oneline(finding.observed),
        bound=_oneline(finding.bound),
        detail=_oneline(finding.detail),
        message=_oneline(message),
        **extra,
    )


def _gate_result(subject: Subject, rule: str, observed: str, bound: str, detail: str) -> Result:
    finding = _Finding("", False, observed, bound, detail)
    return _verdict(subject, GATE_POLICY, rule, "deny", "deny", finding)


def _undecided(subject: Subject, policy: Policy, missing: list[str]) -> Result:
    keys = ", ".join(missing)
    return _gate_result(
        subject,
        "match",
        f"param {keys} missing",
        f"policy {policy.name} match " + ", ".join(sorted(policy.match)),
        f"cannot tell whether policy {policy.name} judges this version: the run has no "
        f"param {keys} (missing data fails closed)",
    )


def _unjudged(subject: Subject, aliases: list[str]) -> Result:
    version = f"v{subject.version}" if subject.version is not None else "(new version)"
    run = subject.run_id or subject.run
    names = ", ".join(aliases)
    return _gate_result(
        subject,
        "protected-alias",
        "no policy with a non-empty match applies",
        f"{names} is scoped by a policy rule",
        f"no policy judges {subject.model} {version} (run {run}) for {names}",
    )


def _in_scope(rule: Rule, subject: Subject) -> bool:
    if not rule.aliases:
        return True
    wanted = {a.casefold() for a in rule.aliases}
    return any(a.casefold() in wanted for a in subject.aliases)


def waiver_binding(waiver: Waiver, subject: Subject) -> tuple[bool, str | None]:
    """(applies, why not) for a waiver of the subject's model, policy and rule.

    A waiver binds to one run: by `run_id`, or by run name inside the model's experiment
    plus the run's content digest. A waiver for another run is simply not about this one
    (no note); one that names this run's name but whose id, experiment or digest does not
    fit is not applied, and the note says why.
    """
    if waiver.run_id is not None:
        return waiver.run_id == subject.run_id, None
    if waiver.run != subject.run:
        return False, None
    where = f"waiver at {waiver.location} for run {waiver.run}"
    if not subject.in_experiment:
        return False, f"{where} not applied: this run is not in the model's experiment"
    if waiver.digest is None:
        return False, (
            f"{where} not applied: it names the run by name only; bind it to this run with "
            f"{_binding_hint(subject)}"
        )
    if subject.digest is None:
        return False, (
            f"{where} not applied: this run's content digest is not known (logged without a "
            f"run directory); bind it with {_binding_hint(subject)}"
        )
    if waiver.digest != subject.digest:
        return False, (
            f"{where} not applied: its digest {waiver.digest} is not this run's "
            f"{subject.digest} (another run of that name, or the run directory changed)"
        )
    return True, None


def _binding_hint(subject: Subject) -> str:
    if subject.run_id is not None:
        return f"run_id: {subject.run_id}"
    if subject.digest is not None:
        return f"run: {subject.run}, digest: {subject.digest}"
    return "run_id: <the run's id>"


def _result(
    subject: Subject,
    policy: Policy,
    rule: Rule,
    finding: _Finding,
    waivers: Sequence[Waiver],
    today: dt.date,
) -> Result:
    outcome: Outcome = "pass"
    suffix = ""
    used = None
    notes: list[str] = []
    if not finding.ok:
        outcome = rule.severity
        for candidate in waivers:
            applies, note = waiver_binding(candidate, subject)
            if note is not None:
                notes.append(note)
            if applies and (used is None or candidate.expires > used.expires):
                used = candidate
        if used is not None:
            notes = []
            if used.expires >= today:
                outcome = "waived"
                suffix = f"; waived until {used.expires.isoformat()}: {used.reason}"
            else:
                outcome = "expired-waiver" if rule.severity == "deny" else "warn"
                suffix = f"; waiver expired on {used.expires.isoformat()} ({used.reason})"
        elif notes:
            suffix = "; " + "; ".join(notes)
    return _verdict(
        subject,
        policy.name,
        rule.name,
        rule.severity,
        outcome,
        finding,
        suffix,
        waiver_reason=used.reason if used else None,
        waiver_expires=used.expires if used else None,
        waiver_note=_oneline("; ".join(notes)) if notes else None,
        waive_with=None if finding.ok else _oneline(_binding_hint(subject)),
    )


def _judge(
    check: Check, s: Subject, incumbents: Callable[[str, str], tuple[Subject, ...]]
) -> list[_Finding]:
    if isinstance(check, RequireParams):
        return [_require("params", "require_params", check.names, s.params)]
    if isinstance(check, RequireMetrics):
        return [_require("metrics", "require_metrics", check.names, s.metrics)]
    if isinstance(check, RunNamePattern):
        return [_run_name(check, s)]
    if isinstance(check, MetricBounds):
        return [_bound(b, s.metrics) for b in check.bounds]
    if isinstance(check, CompareTo):
        return _compare(check, s, incumbents(s.model, check.alias))
    if isinstance(check, AllowedAliases):
        return [_allowed_aliases(check, s)]
    if isinstance(check, AllowedParams):
        return [_allowed_param(k, v, s.params) for k, v in check.allowed.items()]
    return [_description(s)]


def _no_data(what: str, check: str, bound: str) -> _Finding:
    return _Finding(check, False, "no run data", bound, f"{what} unavailable: no run data")


def _require(
    what: str, field: str, names: tuple[str, ...], data: Mapping[str, Any] | None
) -> _Finding:
    bound = f"{field} {', '.join(names)}"
    if data is None:
        return _no_data(what, "", bound)
    missing = [n for n in names if n not in data]
    if missing:
        noun = what if len(missing) > 1 else what[:-1]
        return _Finding(
            "",
            False,
            f"missing {', '.join(missing)}",
            bound,
            f"{noun} {', '.join(missing)} missing",
        )
    return _Finding("", True, f"all {len(names)} present", bound, f"required {what} present")


def _run_name(check: RunNamePattern, s: Subject) -> _Finding:
    if check.placeholders and s.params is None:
        return _no_data("params", "", f"run_name {check.pattern}")
    params = s.params or {}
    missing = [p for p in check.placeholders if p not in params]
    if missing:
        return _Finding(
            "",
            False,
            f"{s.run} (param {', '.join(missing)} missing)",
            f"run_name {check.pattern}",
            f"run_name pattern needs param {', '.join(missing)}, which the run does not have",
        )
    expanded = _expand(check.pattern, lambda name: re.escape(params[name]))
    try:
        ok = re.search(expanded, s.run) is not None
    except re.error as exc:  # a param value cannot break an escaped pattern; be safe anyway
        return _Finding("", False, s.run, f"run_name {expanded}", f"run_name pattern: {exc}")
    detail = "run name matches" if ok else "run name does not match the pattern"
    return _Finding("", ok, s.run, f"run_name {expanded}", detail)


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


def _bound(b: Bound, metrics: Mapping[str, float] | None) -> _Finding:
    parts = [f"min {_num(b.min)}" if b.min is not None else "", ""]
    if b.max is not None:
        parts[1] = f"max {_num(b.max)}"
    bound = f"{b.metric} " + ", ".join(p for p in parts if p)
    if metrics is None:
        return _no_data("metrics", b.metric, bound)
    value = metrics.get(b.metric)
    if value is None:
        return _Finding(b.metric, False, "missing", bound, f"{b.metric} is missing")
    odd = not_finite(value)
    if odd is not None:  # NaN and the infinities fail every bound
        return _Finding(
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
    return _Finding(b.metric, low and high, f"{b.metric} {_num(value)}", bound, detail)


def _same_version(a: Subject, b: Subject) -> bool:
    """By version number, else by run id; never by run name (anyone can reuse a name)."""
    if a.version is not None and b.version is not None:
        return a.version == b.version
    if a.run_id is not None and b.run_id is not None:
        return a.run_id == b.run_id
    return False


def _compare(check: CompareTo, s: Subject, declared: Sequence[Subject]) -> list[_Finding]:
    bound_all = f"compare_to {check.alias}"
    if not declared:
        return [
            _Finding(
                "",
                True,
                "no incumbent",
                bound_all,
                f"the base manifests declare no holder of {check.alias}",
            )
        ]
    out: list[_Finding] = []
    for inc in declared:
        if inc.source == "unknown":  # nothing trustworthy is known about the holder before
            out.append(_Finding("", False, "incumbent unknown", bound_all, inc.location))
        elif inc.model == s.model and _same_version(s, inc):
            # Moving the alias back to the declared holder repairs drift: not a promotion.
            out.append(
                _Finding(
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


def _relative_finding(b: RelativeBound, s: Subject, inc: Subject, who: str) -> _Finding:
    limits = [
        f"max_increase {b.max_increase}" if b.max_increase is not None else "",
        f"max_decrease {b.max_decrease}" if b.max_decrease is not None else "",
    ]
    bound = f"{b.metric} " + ", ".join(p for p in limits if p) + f" vs {who} (run {inc.run})"
    if s.metrics is None:
        return _no_data("metrics", b.metric, bound)
    cand = s.metrics.get(b.metric)
    if cand is None:
        return _Finding(b.metric, False, "missing", bound, f"{b.metric} is missing")
    odd = not_finite(cand)
    if odd is not None:
        return _Finding(
            b.metric, False, f"{b.metric} {odd}", bound, f"{b.metric} is {odd}, not a finite number"
        )
    old = inc.metrics.get(b.metric) if inc.metrics is not None else None
    if old is None:
        return _Finding(
            b.metric,
            False,
            f"{b.metric} {_num(cand)}, incumbent value missing",
            bound,
            f"the incumbent {who} has no {b.metric} to compare with",
        )
    odd = not_finite(old)
    if odd is not None:
        return _Finding(
            b.metric,
            False,
            f"{b.metric} {_num(cand)}, incumbent {odd}",
            bound,
            f"the incumbent {who}'s {b.metric} is {odd}: nothing finite to compare with",
        )
    delta = cand - old
    pct = f", {delta / abs(old) * 100:+.2f}%" if old != 0 and math.isfinite(delta) else ""
    observed = f"{b.metric} {_num(cand)} vs {_num(old)} ({delta:+.6g}{pct})"
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
    return _Finding(b.metric, ok, observed, bound, detail)


def _allowed_aliases(check: AllowedAliases, s: Subject) -> _Finding:
    bound = f"allowed_aliases {', '.join(check.names)}"
    extra = [a for a in s.aliases if a not in check.names]
    observed = f"aliases {', '.join(s.aliases)}" if s.aliases else "no aliases"
    if extra:
        return _Finding("", False, observed, bound, f"alias {', '.join(extra)} is not allowed")
    return _Finding("", True, observed, bound, "aliases allowed")


def _allowed_param(key: str, values: tuple[str, ...], params: Mapping[str, str] | None) -> _Finding:
    bound = f"{key} one of {', '.join(values)}"
    if params is None:
        return _no_data("params", key, bound)
    value = params.get(key)
    if value is None:
        return _Finding(key, False, "missing", bound, f"param {key} is missing")
    ok = normalise(key, value) in {normalise(key, v) for v in values}
    detail = f"param {key} is allowed" if ok else f"param {key} has a value outside the list"
    return _Finding(key, ok, f"{key} {value}", bound, detail)


def _description(s: Subject) -> _Finding:
    bound = "require_description"
    if s.description is None or not s.description.strip():
        return _Finding("", False, "no description", bound, "the version has no description")
    return _Finding("", True, f"description of {len(s.description)} characters", bound, "described")


# --------------------------------------------------------------------------- comparison


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


# --------------------------------------------------------------------------- rendering


def render_report(report: PolicyReport, fmt: str, *, verbose: bool = False) -> str:
    """Render a report as `text`, `json`, `markdown` or `github` (workflow annotations).

    Text and markdown list passing results only when `verbose` (markdown folds them into
    a collapsed section); json always holds every result. The output ends with a newline.
    Names, runs, locations, policy and rule names, findings and waiver reasons are
    hostile: each format escapes them with `regctl.escape` (text lines, code spans in
    table cells, workflow-command escaping, inert JSON).
    """
    if fmt == "text":
        return _render_text(report, verbose=verbose)
    if fmt == "json":
        return _render_json(report)
    if fmt == "markdown":
        return _render_markdown(report, verbose=verbose)
    if fmt == "github":
        return _render_github(report)
    raise ValueError(f"unknown report format {fmt!r} (text, json, markdown, github)")


def _summary(report: PolicyReport) -> str:
    c = report.counts()
    if not report.results:
        return "policy check: no policy applies to the selected versions"
    expired = f" ({c['expired-waiver']} by expired waivers)" if c["expired-waiver"] else ""
    return (
        f"policy check: {c['deny'] + c['expired-waiver']} denied{expired}, "
        f"{c['warn']} warned, {c['waived']} waived, {c['pass']} passed"
    )


_LABELS: Final[Mapping[Outcome, str]] = {
    "deny": "DENY",
    "expired-waiver": "DENY (waiver expired)",
    "warn": "WARN",
    "waived": "WAIVED",
    "pass": "pass",
}


def _render_text(report: PolicyReport, *, verbose: bool) -> str:
    lines = []
    for r in report.results:
        if not verbose and r.outcome == "pass":
            continue
        where = r.location + ": " if r.location else ""
        lines.append(escape.text(f"{where}{_LABELS[r.outcome]}: {r.message}"))
        if r.failed and r.waive_with is not None and r.waiver_note is None:
            # the binding a waiver of exactly this run needs, ready to paste
            lines.append(escape.text(f"  a waiver of this run gives: {r.waive_with}"))
    lines.append(_summary(report))
    return "\n".join(lines) + "\n"


def _render_json(report: PolicyReport) -> str:
    summary: dict[str, int] = dict(report.counts().items())
    summary["denied"] = len(report.denied)
    summary["exit_code"] = report.exit_code
    doc = {
        "format_version": FORMAT_VERSION,
        "results": [r.to_json() for r in report.results],
        "summary": summary,
    }
    return escape.json_text(json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False)) + "\n"


_MD_HEADER: Final = (
    "| Outcome | Model | Version | Run | Policy / rule | Observed | Bound | Detail |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- |"
)


def _md_row(r: Result) -> str:
    outcome = f"**{r.outcome}**" if r.failed else r.outcome
    version = f"v{r.version}" if r.version is not None else "new"
    detail = r.detail
    if r.waiver_expires is not None:
        state = "waived until" if r.outcome == "waived" else "waiver expired on"
        detail += f"; {state} {r.waiver_expires.isoformat()}: {r.waiver_reason}"
    # Every cell but the outcome and the version number is a value: a code span.
    md = escape.md_cell
    cells = (
        outcome,
        md(r.model),
        version,
        md(r.run),
        md(f"{r.policy} / {r.rule}"),
        md(r.observed),
        md(r.bound),
        md(detail),
    )
    return "| " + " | ".join(cells) + " |"


def _render_markdown(report: PolicyReport, *, verbose: bool) -> str:
    c = report.counts()
    out = ["### Policy check", ""]
    if not report.results:
        out.append("No policy applies to the selected versions.")
        return "\n".join(out) + "\n"
    denied = c["deny"] + c["expired-waiver"]
    out.append(
        f"{'**' if denied else ''}{denied} denied{'**' if denied else ''} · "
        f"{c['warn']} warned · {c['waived']} waived · {c['pass']} passed"
    )
    findings = [r for r in report.results if r.outcome != "pass"]
    if findings:
        out += ["", _MD_HEADER, *(_md_row(r) for r in findings)]
    passes = report.passed
    if verbose and passes:
        out += [
            "",
            f"<details><summary>{len(passes)} passed</summary>",
            "",
            _MD_HEADER,
            *(_md_row(r) for r in passes),
            "",
            "</details>",
        ]
    return "\n".join(out) + "\n"


_LOCATION_RE: Final = re.compile(r"^(?P<file>.+?)(?::(?P<line>\d+))?(?::(?P<col>\d+))?$", re.S)
_GH_LEVELS: Final[Mapping[Outcome, str]] = {
    "deny": "error",
    "expired-waiver": "error",
    "warn": "warning",
    "waived": "notice",
}


def _render_github(report: PolicyReport) -> str:
    lines = []
    for r in report.results:
        level = _GH_LEVELS.get(r.outcome)
        if level is None:
            continue
        props = []
        m = _LOCATION_RE.match(r.location)
        if m is not None and r.location:
            props.append(f"file={escape.annotation_property(m.group('file'))}")
            if m.group("line"):
                props.append(f"line={m.group('line')}")
            if m.group("col"):
                props.append(f"col={m.group('col')}")
        props.append(f"title={escape.annotation_property(f'{r.policy}/{r.rule}')}")
        message = r.message if r.outcome != "waived" else f"waived: {r.message}"
        lines.append(f"::{level} {','.join(props)}::{escape.annotation(message)}")
    lines.append(_summary(report))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- helpers


def _num(x: float) -> str:
    """A metric value as written: shortest round-trip form, integers without `.0`."""
    if math.isfinite(x) and x == int(x) and abs(x) < 1e16:
        return str(int(x))
    return repr(x)


def _oneline(text: str) -> str:
    """Escape control characters so that a message stays one line (`escape.text`)."""
    return escape.text(text)


# --------------------------------------------------------------------------- review


@dataclass(frozen=True, slots=True)
class Comparison:
    """An alias move's evidence: the candidate's metrics beside the incumbent's."""

    model: str
    alias: str
    candidate: str
    incumbent: str | None
    primary_metric: str
    rows: tuple[ComparisonRow, ...]


@dataclass(frozen=True, slots=True)
class Review:
    """Policy verdicts for a plan, and the metric comparison of each alias move."""

    report: PolicyReport
    comparisons: tuple[Comparison, ...]
