"""Frozen value types shared by the pipeline: desired state, observed state, run lookups.

Everything here is plain data. Nothing in this module touches the world.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from regctl.errors import Location

MANAGED_TAG = "regctl.managed"
"""Registered-model tag that marks a model as managed by regctl (value `true`)."""

PROVENANCE_TAG = "regctl.applied"
"""Provenance: on a model, the last apply that changed it,
`commit <sha> by <actor> at <UTC time>[ via <CI run url>]` followed by
`; aliases: <alias> -> v<N>, <alias> removed` when it moved aliases; on a version, the
apply that created it (the same record, without the aliases)."""

ENTRY_TAG = "regctl.entry"
"""Version tag apply writes when it registers a version: which manifest entry it is for
(`entry_identity`). A name is not proof: when the run an entry names is renamed or
replaced, the mark makes the plan refuse to register another run for the entry. Anyone may
write a tag, but a forged mark can only make a plan refuse, never bind a run."""


def entry_identity(experiment: str | None, run: str | None, run_id: str | None) -> str:
    """How `ENTRY_TAG` names a manifest entry's run: by name in its experiment, or by id."""
    if run is not None:
        return f"run {run} in experiment {experiment or ''}"
    return f"run_id {run_id or ''}"


LEDGER_MODEL = "regctl-ledger"
"""Registered model whose tags record the runs regctl has proven to be the runs of their run
directories: `regctl.proven.<run id>` = the run's content digest (see `regctl.engine.proof`)."""

LEDGER_TAG_PREFIX = "regctl.proven."

PROVENANCE_PREFIX = "regctl."
"""Tag keys with this prefix belong to regctl; manifests may not declare them."""

LEASE_PREFIX = "regctl-lease"
"""Registered models named `regctl-lease-<n>` (and the legacy `regctl-lease`) are regctl's
apply lease (see regctl.engine.lease), never models to manage."""


def is_lease_model(name: str) -> bool:
    """Whether a registered model name belongs to regctl's apply lease."""
    if name == LEASE_PREFIX:
        return True
    rest = name.removeprefix(LEASE_PREFIX + "-")
    return rest != name and rest.isascii() and rest.isdigit()


def is_internal_model(name: str) -> bool:
    """regctl's own registered models (the lease, the ledger): never managed, imported or
    declared by a manifest."""
    return is_lease_model(name) or name == LEDGER_MODEL


def frozen_map(items: Mapping[str, str] | None = None) -> Mapping[str, str]:
    """A read-only mapping sorted by key, so values compare and render deterministically."""
    return MappingProxyType(dict(sorted((items or {}).items())))


@dataclass(frozen=True, slots=True)
class DesiredVersion:
    """One `versions:` entry of a manifest.

    `run` is a run name resolved inside the model's experiment; `run_id` names the run
    directly. Exactly one of them is set. `artifact_path` is "" for the run's whole
    artifact root (the default). `description` is None when the key is absent (then
    the registry's value is left alone).
    """

    index: int
    location: Location
    run: str | None
    run_id: str | None
    run_dir: str | None
    artifact_path: str
    artifact_path_given: bool
    version: int | None
    description: str | None
    aliases: tuple[str, ...]
    digest: str | None = None

    @property
    def run_ref(self) -> str:
        """How the manifest names the run, for messages."""
        return self.run if self.run is not None else f"run_id {self.run_id}"


@dataclass(frozen=True, slots=True)
class DesiredModel:
    """A registered model as one manifest declares it."""

    name: str
    location: Location
    description: str | None
    experiment: str | None
    tags: Mapping[str, str]
    prune: bool
    versions: tuple[DesiredVersion, ...]


@dataclass(frozen=True, slots=True)
class DesiredState:
    """Every manifest, validated. Models are sorted by name."""

    models: tuple[DesiredModel, ...]

    def model(self, name: str) -> DesiredModel | None:
        for m in self.models:
            if m.name == name:
                return m
        return None

    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models)


@dataclass(frozen=True, slots=True)
class ObservedVersion:
    """A model version as the registry reports it (version numbers normalised to int)."""

    version: int
    run_id: str
    source: str
    description: str
    tags: Mapping[str, str]
    status: str = "READY"
    stage: str = "None"


@dataclass(frozen=True, slots=True)
class ObservedModel:
    """A registered model with its versions and aliases, as observed."""

    name: str
    description: str
    tags: Mapping[str, str]
    aliases: Mapping[str, int]
    versions: Mapping[int, ObservedVersion]

    @property
    def managed(self) -> bool:
        # a lease model is never managed, whatever its tags say: prune must not delete it
        return self.tags.get(MANAGED_TAG) == "true" and not is_internal_model(self.name)


@dataclass(frozen=True, slots=True)
class RunRef:
    """A logged run as far as planning needs it."""

    run_id: str
    name: str
    experiment_id: str
    status: str
    artifact_uri: str = ""


@dataclass(frozen=True, slots=True)
class ObservedState:
    """What the registry holds for the models regctl looked at, plus run lookups.

    `runs` maps (experiment name, run name) to every active run of that name;
    `runs_by_id` holds the runs named by id. `experiments` maps names to ids for the
    experiments that exist.
    """

    models: Mapping[str, ObservedModel]
    experiments: Mapping[str, str] = field(default_factory=dict)
    runs: Mapping[tuple[str, str], tuple[RunRef, ...]] = field(default_factory=dict)
    runs_by_id: Mapping[str, RunRef] = field(default_factory=dict)
    ledger: Mapping[str, str] = field(default_factory=dict)
    """Run id -> content digest, for the runs regctl has proven (LEDGER_MODEL's tags)."""


def ledger_entries(tags: Mapping[str, str] | None) -> dict[str, str]:
    """The proven runs recorded on the ledger model's tags: run id -> `sha256:...` digest."""
    if tags is None:
        return {}
    out = {}
    for key, value in tags.items():
        if key.startswith(LEDGER_TAG_PREFIX) and value.startswith("sha256:"):
            out[key[len(LEDGER_TAG_PREFIX) :]] = value
    return out
