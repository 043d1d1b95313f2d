"""Typed changes and the Plan: the one value that render and apply both interpret.

A change is a frozen value with its old and new state, one class per verb. The plan
keeps them in apply order (SPEC section 6): sync, models, descriptions and tags,
versions in manifest order, aliases, then removals.
"""

from __future__ import annotations

import contextlib
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, ClassVar, TypeVar

from regctl.errors import type_name

PLAN_FORMAT_VERSION = 2
"""2: the plan records what it was made from (`inputs`) and how (`options`)."""


@dataclass(frozen=True, slots=True)
class Change:
    """Base of every change. `model` is the registered model it belongs to.

    Each type declares here, once, what every interpreter needs to know about it: its
    `verb` (JSON), `symbol` (text plan), `phase` (apply order), `lane()` (what may run
    concurrently) and `touched_version()` (what the policies judge). Render, apply and
    policy dispatch on the type for the rest, so a new type is one class here plus one
    handler per interpreter.
    """

    verb: ClassVar[str] = ""
    symbol: ClassVar[str] = "~"
    phase: ClassVar[int] = 0
    model: str

    def sign(self) -> str:
        """`+`, `~` or `-`, as the text plan shows this change."""
        return self.symbol

    def lane(self) -> tuple[Any, ...]:
        """Changes in one lane run in plan order; lanes of one phase run concurrently.
        By default a change has a lane of its own kind within its model."""
        return (self.model, self.verb)

    def touched_version(self) -> int | None:
        """The version this change creates, promotes or re-describes: policies judge it."""
        return None

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
    """Log a run directory as a new MLflow run: apply's first phase, before any registry
    write (engine.sync.SyncExecutor does it)."""

    verb: ClassVar[str] = "sync_run"
    symbol: ClassVar[str] = "+"
    phase: ClassVar[int] = 0
    experiment: str = ""
    run_name: str = ""
    run_dir: str = ""
    files: int = 0
    bytes: int = 0
    digest: str = ""

    def lane(self) -> tuple[Any, ...]:
        return ("sync",)  # one run directory after another; its files upload concurrently


@dataclass(frozen=True, slots=True)
class CreateModel(Change):
    """Create a registered model, with its description and tags, marked as managed."""

    verb: ClassVar[str] = "create_model"
    symbol: ClassVar[str] = "+"
    phase: ClassVar[int] = 1
    description: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    def lane(self) -> tuple[Any, ...]:
        return (self.model,)  # before anything else of its model


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

    def lane(self) -> tuple[Any, ...]:
        return (self.model, "tag", self.key)


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
    digest: str | None = None
    """The content digest to record (`regctl.digest`), from the entry's run directory."""
    files: str | None = None
    """The per-file record (`regctl.files`), when it fits one tag."""

    def source(self, run_id: str) -> str:
        return f"runs:/{run_id}/{self.artifact_path}" if self.artifact_path else f"runs:/{run_id}"

    def lane(self) -> tuple[Any, ...]:
        return (self.model,)  # versions of one model are numbered in manifest order

    def touched_version(self) -> int | None:
        return self.expected_version


@dataclass(frozen=True, slots=True)
class RecordDigest(Change):
    """Record the content digest of an existing version (adopted, or registered before
    regctl recorded digests), computed from the entry's run directory."""

    verb: ClassVar[str] = "record_digest"
    symbol: ClassVar[str] = "+"
    phase: ClassVar[int] = 3
    version: int = 0
    digest: str = ""
    files: str | None = None

    def lane(self) -> tuple[Any, ...]:
        return (self.model, "version", self.version)


@dataclass(frozen=True, slots=True)
class SetVersionDescription(Change):
    verb: ClassVar[str] = "set_version_description"
    phase: ClassVar[int] = 3
    version: int = 0
    old: str = ""
    new: str = ""

    def lane(self) -> tuple[Any, ...]:
        return (self.model, "version", self.version)

    def touched_version(self) -> int | None:
        return self.version


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

    def sign(self) -> str:
        return "+" if self.old is None else "~"

    def lane(self) -> tuple[Any, ...]:
        return (self.model, "alias", self.alias)

    def touched_version(self) -> int | None:
        return self.new


@dataclass(frozen=True, slots=True)
class DeleteAlias(Change):
    verb: ClassVar[str] = "delete_alias"
    symbol: ClassVar[str] = "-"
    phase: ClassVar[int] = 5
    alias: str = ""
    old: int = 0

    def lane(self) -> tuple[Any, ...]:
        return (self.model, "alias", self.alias)


@dataclass(frozen=True, slots=True)
class DeleteVersion(Change):
    verb: ClassVar[str] = "delete_version"
    symbol: ClassVar[str] = "-"
    phase: ClassVar[int] = 6
    version: int = 0
    run_id: str = ""

    def lane(self) -> tuple[Any, ...]:
        return (self.model, "version", self.version)


@dataclass(frozen=True, slots=True)
class DeleteModel(Change):
    verb: ClassVar[str] = "delete_model"
    symbol: ClassVar[str] = "-"
    phase: ClassVar[int] = 7

    def lane(self) -> tuple[Any, ...]:
        return (self.model,)


CHANGE_TYPES: dict[str, type[Change]] = {
    c.verb: c
    for c in (
        SyncRun,
        CreateModel,
        SetModelDescription,
        SetModelTag,
        CreateVersion,
        RecordDigest,
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
        add = sum(1 for c in self.changes if c.sign() == "+")
        destroy = sum(1 for c in self.changes if c.sign() == "-")
        return {"add": add, "change": len(self.changes) - add - destroy, "destroy": destroy}

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


def order(changes: list[Change]) -> tuple[Change, ...]:
    """Sort into apply order: by phase, then model name; stable within a model."""
    return tuple(sorted(changes, key=lambda c: (c.phase, c.model)))


class PlanFormatError(ValueError):
    """A plan file that `plan_from_json` cannot read: `field` is the path to the bad value
    (`changes[3].version`), `reason` says what is wrong; both are one line."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}" if field else reason)


_MAX_INT = 2**63 - 1  # what MLflow's stores hold; a plan never needs more


def plan_from_json(data: Any) -> Plan:
    """Read a plan written by `Plan.to_json` (for `apply PLAN.json`).

    The file is hostile input: every value is checked against the type its field
    declares (a string is never taken for a number, `true` never for 1), an unknown
    action or field and a missing required field are refused, integers are whole
    numbers from 0 to 2**63-1. Anything else raises PlanFormatError naming the field.
    Keys at the top level that this version does not know are ignored (`summary`): apply
    compares only target, inputs, options and changes with a plan it makes itself.
    """
    if not isinstance(data, Mapping):
        got = _json_kind(data)
        raise PlanFormatError("", f"expected a JSON object at the top level, got {got}")
    version = data.get("format_version")
    if version != PLAN_FORMAT_VERSION or isinstance(version, bool):
        shown = repr(version) if isinstance(version, int | str) else _json_kind(version)
        raise PlanFormatError(
            "format_version",
            f"unsupported plan format_version {_clip(shown)} "
            f"(this regctl reads {PLAN_FORMAT_VERSION})",
        )
    changes: list[Change] = []
    for i, raw in enumerate(_list(data, "changes", required=True)):
        where = f"changes[{i}]"
        if not isinstance(raw, Mapping):
            raise PlanFormatError(where, f"expected an object, got {_json_kind(raw)}")
        action = raw.get("action")
        if not isinstance(action, str) or action not in CHANGE_TYPES:
            shown = _clip(repr(action)) if isinstance(action, str) else _json_kind(action)
            raise PlanFormatError(
                f"{where}.action",
                f"unknown action {shown} (one of {', '.join(sorted(CHANGE_TYPES))})",
            )
        item = {k: v for k, v in raw.items() if k != "action"}
        changes.append(_build(CHANGE_TYPES[action], item, where))
    return Plan(
        target=_field(data, "target", str, "target", required=True),
        models=tuple(
            _conform(m, str, f"models[{i}]")
            for i, m in enumerate(_list(data, "models", required=True))
        ),
        changes=tuple(changes),
        notes=tuple(_build(Note, n, f"notes[{i}]") for i, n in enumerate(_list(data, "notes"))),
        bindings=tuple(
            _build(Binding, b, f"bindings[{i}]") for i, b in enumerate(_list(data, "bindings"))
        ),
        fingerprint=_field(data, "fingerprint", str, "fingerprint", default=""),
        inputs=_field(data, "inputs", Mapping[str, str], "inputs", required=True),
        options=_build(PlanOptions, data.get("options"), "options"),
    )


T = TypeVar("T")


def _build(cls: type[T], raw: Any, where: str) -> T:
    """An instance of the dataclass `cls` from a JSON object, every field type-checked."""
    if not isinstance(raw, Mapping):
        raise PlanFormatError(where, f"expected an object, got {_json_kind(raw)}")
    hints = _hints(cls)
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    for key in raw:
        if key not in known:
            shown = _clip(repr(key))
            raise PlanFormatError(where, f"unknown field {shown} for {_label(cls)}")
    values: dict[str, Any] = {}
    for name, f in known.items():
        if name in raw:
            values[name] = _conform(raw[name], hints[name], f"{where}.{name}")
        elif f.default is MISSING and f.default_factory is MISSING:
            raise PlanFormatError(f"{where}.{name}", "required field is missing")
    return cls(**values)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _label(cls: type) -> str:
    verb = getattr(cls, "verb", "")
    return repr(verb) if verb else cls.__name__


def _field(
    data: Mapping[str, Any],
    key: str,
    hint: Any,
    where: str,
    *,
    required: bool = False,
    default: Any = None,
) -> Any:
    if key not in data:
        if required:
            raise PlanFormatError(where, "required field is missing")
        return default
    return _conform(data[key], hint, where)


def _list(data: Mapping[str, Any], key: str, *, required: bool = False) -> list[Any]:
    value = _field(data, key, list, key, required=required, default=[])
    return list(value)


def _conform(value: Any, hint: Any, where: str) -> Any:
    """`value` as the type `hint` names, or PlanFormatError; JSON lists become tuples."""
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return _conform_union(value, hint, where)
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if 0 <= value <= _MAX_INT:
                return value
            raise PlanFormatError(where, "expected a whole number from 0 to 2**63-1")
    elif hint is str:
        if isinstance(value, str):
            return value
    elif hint is list:
        if isinstance(value, list):
            return value
    elif origin in (Mapping, dict):
        key_type, value_type = typing.get_args(hint)
        if isinstance(value, Mapping):
            return {
                _conform(k, key_type, where): _conform(v, value_type, f"{where}.{_clip(str(k))}")
                for k, v in value.items()
            }
    elif origin in (tuple, list):
        (item_type, *_) = typing.get_args(hint)
        if isinstance(value, list):
            return tuple(_conform(v, item_type, f"{where}[{i}]") for i, v in enumerate(value))
    else:  # a field type this reader does not know: a bug, found by the round-trip test
        raise TypeError(f"plan_from_json cannot check the type {hint!r} of {where}")
    raise PlanFormatError(where, f"expected {_describe(hint)}, got {_json_kind(value)}")


def _conform_union(value: Any, hint: Any, where: str) -> Any:
    """`value` as the first non-null option of the union `hint` that takes it, or null."""
    options = typing.get_args(hint)
    if value is None and type(None) in options:
        return None
    for option in options:
        if option is not type(None):
            with contextlib.suppress(PlanFormatError):
                return _conform(value, option, where)
    raise PlanFormatError(where, f"expected {_describe(hint)}, got {_json_kind(value)}")


def _describe(hint: Any) -> str:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    names = {str: "a string", int: "a whole number", bool: "true or false", list: "a list"}
    if hint is type(None):
        return "null"
    if hint in names:
        return names[hint]
    if typing.get_origin(hint) in (Mapping, dict):
        return f"an object of {_describe(args[1]).removeprefix('a ').removeprefix('an ')}s"
    return "a list"


def _json_kind(value: Any) -> str:
    return type_name(value, mapping="an object")


def _clip(text: str, limit: int = 60) -> str:
    """At most `limit` characters of a value from the file, for a message."""
    return text if len(text) <= limit else text[:limit] + "..."


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
