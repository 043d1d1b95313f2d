"""Typed changes and the Plan: the one value that render and apply both interpret.

A change is a frozen value with its old and new state, one class per verb. The plan
keeps them in apply order (SPEC section 6): sync, models, descriptions and tags,
versions in manifest order, aliases, then removals.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

PLAN_FORMAT_VERSION = 1


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
class Plan:
    """The changes that take the registry to the desired state, in apply order."""

    target: str
    models: tuple[str, ...]
    changes: tuple[Change, ...]
    notes: tuple[Note, ...] = ()
    bindings: tuple[Binding, ...] = ()
    fingerprint: str = ""

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


def plan_from_json(data: Mapping[str, Any]) -> Plan:
    """Read a plan written by `Plan.to_json` (for `apply PLAN.json`)."""
    if data.get("format_version") != PLAN_FORMAT_VERSION:
        raise ValueError(f"unsupported plan format_version {data.get('format_version')!r}")
    changes: list[Change] = []
    for raw in data["changes"]:
        item = dict(raw)
        cls = CHANGE_TYPES[item.pop("action")]
        changes.append(cls(**item))
    return Plan(
        target=str(data["target"]),
        models=tuple(data["models"]),
        changes=tuple(changes),
        notes=tuple(Note(**n) for n in data.get("notes", [])),
        bindings=tuple(Binding(**b) for b in data.get("bindings", [])),
        fingerprint=str(data.get("fingerprint", "")),
    )
