"""Typed changes and the Plan: the one value that render and apply both interpret.

A change is a frozen value with its old and new state, one class per verb. The plan
keeps them in apply order (SPEC section 6): sync, models, descriptions and tags,
versions in manifest order, aliases, then removals.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

PLAN_FORMAT_VERSION = 2
"""2: the plan records what it was made from (`inputs`) and how (`options`)."""


@dataclass(frozen=True, slots=True)
class Change:
    """Base of every change. `model` is the registered model it belongs to."""

    verb: ClassVar[str] = ""
    symbol: ClassVar[str] = "~"
    phase: ClassVar[int] = 0
    writes: ClassVar[int] = 1
    model: str

    def to_json(self) -> dict[str, Any]:
        data = {"action": self.verb}
        data.update({f.name: _jsonable(getattr(self, f.name)) for f in fields(self)})
        return data


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in sorted(value.items())}
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class SyncRun(Change):
    """Log a run directory as a new MLflow run (done by sync before any registry write)."""

    verb: ClassVar[str] = "sync_run"
    symbol: ClassVar[str] = "+"
    phase: ClassVar[int] = 0
    experiment: str = ""
    run_name: str = ""
    run_dir: str = ""
    files: int = 0
    bytes: int = 0
    digest: str = ""


@dataclass(frozen=True, slots=True)
class CreateModel(Change):
    """Create a registered model, with its description and tags, marked as managed."""

    verb: ClassVar[str] = "create_model"
    symbol: ClassVar[str] = "+"
    phase: ClassVar[int] = 1
    description: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SetModelDescription(Change):
    verb: ClassVar[str] = "set_model_description"
    phase: ClassVar[int] = 2
    old: str = ""
    new: str = ""


@dataclass(frozen=True, slots=True)
class SetModelTag(Change):
    verb: ClassVar[str] = "set_model_tag"
    phase: ClassVar[int] = 2
    key: str = ""
    old: str | None = None
    new: str = ""


@dataclass(frozen=True, slots=True)
class CreateVersion(Change):
    """Register a version from a run. `run_id` is None while the run awaits sync.

    `expected_version` is the number MLflow should assign (observed maximum plus one,
    in manifest order); when `pinned`, apply refuses any other number.
    """

    verb: ClassVar[str] = "create_version"
    symbol: ClassVar[str] = "+"
    phase: ClassVar[int] = 3
    entry: int = 0
    experiment: str | None = None
    run_name: str | None = None
    run_id: str | None = None
    artifact_path: str = ""
    description: str | None = None
    expected_version: int = 0
    pinned: bool = False
    location: str = ""

    def source(self, run_id: str) -> str:
        return f"runs:/{run_id}/{self.artifact_path}" if self.artifact_path else f"runs:/{run_id}"


@dataclass(frozen=True, slots=True)
class SetVersionDescription(Change):
    verb: ClassVar[str] = "set_version_description"
    phase: ClassVar[int] = 3
    version: int = 0
    old: str = ""
    new: str = ""


@dataclass(frozen=True, slots=True)
class SetAlias(Change):
    """Point an alias at a version. `entry` names the manifest entry when its version is
    created by this plan (apply then uses the number MLflow actually assigned)."""

    verb: ClassVar[str] = "set_alias"
    phase: ClassVar[int] = 4
    alias: str = ""
    old: int | None = None
    new: int = 0
    entry: int | None = None
    run_name: str = ""

    @property
    def symbol_for(self) -> str:
        return "+" if self.old is None else "~"


@dataclass(frozen=True, slots=True)
class DeleteAlias(Change):
    verb: ClassVar[str] = "delete_alias"
    symbol: ClassVar[str] = "-"
    phase: ClassVar[int] = 5
    alias: str = ""
    old: int = 0


@dataclass(frozen=True, slots=True)
class DeleteVersion(Change):
    verb: ClassVar[str] = "delete_version"
    symbol: ClassVar[str] = "-"
    phase: ClassVar[int] = 6
    version: int = 0
    run_id: str = ""


@dataclass(frozen=True, slots=True)
class DeleteModel(Change):
    verb: ClassVar[str] = "delete_model"
    symbol: ClassVar[str] = "-"
    phase: ClassVar[int] = 7


CHANGE_TYPES: dict[str, type[Change]] = {
    c.verb: c
    for c in (
        SyncRun,
        CreateModel,
        SetModelDescription,
        SetModelTag,
        CreateVersion,
        SetVersionDescription,
        SetAlias,
        DeleteAlias,
        DeleteVersion,
        DeleteModel,
    )
}


@dataclass(frozen=True, slots=True)
class Note:
    """Something the plan leaves alone on purpose, said so the user knows."""

    model: str
    message: str


@dataclass(frozen=True, slots=True)
class Binding:
    """Which registry version a manifest entry is (or will be) bound to."""

    model: str
    entry: int
    version: int
    run_id: str | None
    created: bool


@dataclass(frozen=True, slots=True)
class PlanOptions:
    """How a plan was made: `prune`, and the models it covers (`scope`: None for every
    manifest). Applying a saved plan re-plans with the same options, and refuses flags
    that differ (SPEC section 6)."""

    prune: bool = False
    scope: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """The changes that take the registry to the desired state, in apply order.

    `inputs` holds the digests of what the plan was made from (`manifests`, `policies`:
    `sha256:` over every file's path and bytes); `fingerprint` digests the registry state.
    """

    target: str
    models: tuple[str, ...]
    changes: tuple[Change, ...]
    notes: tuple[Note, ...] = ()
    bindings: tuple[Binding, ...] = ()
    fingerprint: str = ""
    inputs: Mapping[str, str] = field(default_factory=dict)
    options: PlanOptions = PlanOptions()

    @property
    def empty(self) -> bool:
        return not self.changes

    def counts(self) -> dict[str, int]:
        add = sum(1 for c in self.changes if _symbol(c) == "+")
        destroy = sum(1 for c in self.changes if _symbol(c) == "-")
        return {"add": add, "change": len(self.changes) - add - destroy, "destroy": destroy}

    def for_model(self, name: str) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.model == name)

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": PLAN_FORMAT_VERSION,
            "target": self.target,
            "fingerprint": self.fingerprint,
            "inputs": dict(sorted(self.inputs.items())),
            "options": {
                "prune": self.options.prune,
                "scope": None if self.options.scope is None else list(self.options.scope),
            },
            "models": list(self.models),
            "summary": self.counts(),
            "changes": [c.to_json() for c in self.changes],
            "notes": [asdict(n) for n in self.notes],
            "bindings": [asdict(b) for b in self.bindings],
        }


def _symbol(change: Change) -> str:
    if isinstance(change, SetAlias):
        return change.symbol_for
    return change.symbol


def symbol(change: Change) -> str:
    """`+`, `~` or `-` for a change, as the text plan shows it."""
    return _symbol(change)


def order(changes: list[Change]) -> tuple[Change, ...]:
    """Sort into apply order: by phase, then model name; stable within a model."""
    return tuple(sorted(changes, key=lambda c: (c.phase, c.model)))


class PlanFileError(ValueError):
    """A saved plan that is not one regctl wrote; the message names the JSON path."""


_TOP_KEYS = frozenset(
    {
        "format_version",
        "target",
        "fingerprint",
        "inputs",
        "options",
        "models",
        "summary",
        "changes",
        "notes",
        "bindings",
        "policy",
        "comparisons",
    }
)
_MAX_INT = 2**63 - 1


def plan_from_json(data: object) -> Plan:
    """Read a plan written by `Plan.to_json` (for `apply PLAN.json`), strictly.

    A saved plan is hostile input: every key and type is checked (unknown keys and actions,
    wrong types, bools for numbers, numbers past 64 bits are errors naming the JSON path),
    and only what apply compares is kept: target, inputs, options, fingerprint, changes.
    Notes and bindings are outputs for people and are never read back.
    """
    if not isinstance(data, dict):
        raise PlanFileError(f"expected a JSON object at the top level, got {_kind(data)}")
    unknown = sorted(str(k) for k in data if k not in _TOP_KEYS)
    if unknown:
        raise PlanFileError(f"unknown key {unknown[0]!r}")
    version = data.get("format_version")
    if version != PLAN_FORMAT_VERSION or isinstance(version, bool):
        raise PlanFileError(
            f"format_version {version!r} is not {PLAN_FORMAT_VERSION} (made by another regctl "
            "version?): run `regctl diff --out` again"
        )
    target = _typed(data, "target", str, "target")
    fingerprint = _typed(data, "fingerprint", str, "fingerprint")
    raw_inputs = _typed(data, "inputs", dict, "inputs")
    inputs = {str(k): _typed(raw_inputs, k, str, f"inputs.{k}") for k in raw_inputs}
    raw_options = _typed(data, "options", dict, "options")
    extra = sorted(str(k) for k in raw_options if k not in ("prune", "scope"))
    if extra:
        raise PlanFileError(f"options: unknown key {extra[0]!r}")
    prune = _typed(raw_options, "prune", bool, "options.prune")
    scope_raw = raw_options.get("scope")
    scope = None
    if scope_raw is not None:
        if not isinstance(scope_raw, list) or not all(isinstance(x, str) for x in scope_raw):
            raise PlanFileError("options.scope: expected null or a list of model names")
        scope = tuple(scope_raw)
    models_raw = _typed(data, "models", list, "models")
    if not all(isinstance(x, str) for x in models_raw):
        raise PlanFileError("models: expected a list of model names")
    raw_changes = _typed(data, "changes", list, "changes")
    changes = [_change(raw, f"changes[{i}]") for i, raw in enumerate(raw_changes)]
    return Plan(
        target=target,
        models=tuple(models_raw),
        changes=tuple(changes),
        fingerprint=fingerprint,
        inputs=inputs,
        options=PlanOptions(prune=prune, scope=scope),
    )


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _typed(data: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in data:
        raise PlanFileError(f"{where}: missing")
    value = data[key]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise PlanFileError(f"{where}: expected {_kind(kind())}, got {_kind(value)}")
    return value


def _change(raw: object, where: str) -> Change:
    if not isinstance(raw, dict):
        raise PlanFileError(f"{where}: expected an object, got {_kind(raw)}")
    action = raw.get("action")
    cls = CHANGE_TYPES.get(action) if isinstance(action, str) else None
    if cls is None:
        raise PlanFileError(f"{where}.action: unknown action {action!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    given = {k for k in raw if k != "action"}
    if given != set(names):
        missing = sorted(set(names) - given)
        extra = sorted(str(k) for k in given - set(names))
        what = f"missing {missing[0]!r}" if missing else f"unknown key {extra[0]!r}"
        raise PlanFileError(f"{where}: {what} for action {action!r}")
    values = {name: _value(raw[name], hints[name], f"{where}.{name}") for name in names}
    return cls(**values)


def _value(value: object, kind: Any, where: str) -> Any:
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        (inner,) = [o for o in options if o is not type(None)]
        return _value(value, inner, where)
    if typing.get_origin(kind) in (Mapping, dict) or kind is Mapping:
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise PlanFileError(f"{where}: expected an object of strings")
        return dict(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise PlanFileError(f"{where}: expected a boolean, got {_kind(value)}")
        return value
    if kind is int:
        if not isinstance(value, int) or isinstance(value, bool) or abs(value) > _MAX_INT:
            raise PlanFileError(f"{where}: expected an integer, got {_kind(value)}")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise PlanFileError(f"{where}: expected a string, got {_kind(value)}")
        return value
    raise PlanFileError(f"{where}: unsupported field type {kind!r}")  # pragma: no cover


def first_difference(saved: tuple[Change, ...], now: tuple[Change, ...]) -> str | None:
    """Where two change lists first differ, as one line; None when they are equal."""
    for index, (a, b) in enumerate(zip(saved, now, strict=False)):
        if a != b:
            return (
                f"change {index + 1}: the saved plan has {_line(a)}, re-planning now gives "
                f"{_line(b)}"
            )
    if len(saved) > len(now):
        extra = len(saved) - len(now)
        return (
            f"the saved plan has {extra} change{'s' if extra > 1 else ''} that re-planning now "
            f"does not give, the first: {_line(saved[len(now)])}"
        )
    if len(now) > len(saved):
        extra = len(now) - len(saved)
        return (
            f"re-planning now gives {extra} change{'s' if extra > 1 else ''} that the saved plan "
            f"does not have, the first: {_line(now[len(saved)])}"
        )
    return None


def _line(change: Change) -> str:
    fields_text = ", ".join(
        f"{f.name}={getattr(change, f.name)!r}" for f in fields(change) if f.name != "model"
    )
    return f"{change.verb} {change.model!r} ({fields_text})"
