"""Making a plan, shared by diff, check and apply: load the inputs, observe, prove the runs, diff.

Pure decisions live in core (diff) and engine (observe, proof); this module wires them to
a Settings and a registry.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from regctl.adapters import git as gitinfo
from regctl.adapters.manifests import (
    display_path,
    load_manifest_texts,
    load_manifests,
    manifest_files,
    scope,
)
from regctl.config import (
    Settings,
    default_concurrency,
    registry_target,
)
from regctl.core.diff import MAX_DELETE_SHARE, diff
from regctl.core.model import (
    DesiredModel,
    DesiredState,
    ObservedState,
)
from regctl.core.plan import (
    CreateVersion,
    Plan,
    PlanOptions,
    SetAlias,
)
from regctl.engine.observe import observe
from regctl.engine.proof import Proof, ProofReader, prove
from regctl.engine.sync import SyncItem, collect, pending_runs
from regctl.errors import (
    InputError,
    Location,
    Problem,
)
from regctl.policy.loading import load_policies, policy_files
from regctl.policy.values import PolicySet

if TYPE_CHECKING:
    pass


def load_desired(settings: Settings, models: Sequence[str] = ()) -> tuple[DesiredState, bool]:
    """All manifests validated, scoped to `models`; and whether the scope is complete."""
    full = load_manifests(settings.repo)
    return scope(full, models), not models


@dataclass(frozen=True)
class Inputs:
    """What a plan is made from on the local side: manifests, policies, run directories.

    Loaded once per command: apply plans, plans again under the lease and verifies with
    the same inputs (the ones the user confirmed), so 1,000 manifests are parsed once.
    """

    desired: DesiredState
    complete: bool
    policies: PolicySet
    items: list[SyncItem]
    proven: dict[str, str] = field(default_factory=dict)
    """Run id -> digest of the runs this command proved already (see regctl.engine.proof)."""
    digests: Mapping[str, str] = field(default_factory=dict)
    """`manifests` and `policies`: digests of the files they were loaded from."""


def load_inputs(
    settings: Settings, models: Sequence[str] = (), *, base: str | None = None
) -> Inputs:
    """Manifests (scoped to `models`, or to what changed since git `base`), policies and
    the run directories the manifests reference. Offline."""
    desired, complete = load_desired(settings, models)
    if base is not None:
        touched = set(base_scope(settings, base))
        desired = DesiredState(tuple(m for m in desired.models if m.name in touched))
        complete = False
    policies = load_policies(settings.repo)
    digests = {
        "manifests": files_digest(manifest_files(settings.repo), settings.repo),
        "policies": files_digest(policy_files(settings.repo), settings.repo),
    }
    return Inputs(desired, complete, policies, collect(desired, settings.repo), digests=digests)


def files_digest(paths: Sequence[Path], repo: Path) -> str:
    """`sha256:` over every file's repo-relative path and bytes, in path order: what a saved
    plan records of the manifests and policies it was made from."""
    h = hashlib.sha256(b"regctl-files-v1\n")
    for shown, path in sorted((display_path(p, repo), p) for p in paths):
        data = path.read_bytes()
        h.update(f"{len(shown)}:{shown}{len(data)}:".encode("utf-8", "surrogateescape"))
        h.update(data)
    return "sha256:" + h.hexdigest()


@dataclass
class Planned:
    """A plan with what it was made from, for apply to continue with."""

    plan: Plan
    desired: DesiredState
    observed: ObservedState
    items: list[SyncItem]
    complete: bool
    policies: PolicySet
    proofs: Mapping[tuple[str, str], Proof] = field(default_factory=dict)


def make_plan(
    settings: Settings,
    registry: ProofReader,
    models: Sequence[str] = (),
    *,
    prune: bool = False,
    base: str | None = None,
    allow_mass_delete: bool = False,
    inputs: Inputs | None = None,
) -> Planned:
    """Load (unless `inputs` are given), observe and diff. Raises InputError/PlanError with
    manifest lines.

    With `base` (a git ref), only the models whose manifests differ from `base` are
    planned (with their live drift): the scope of a pull request.
    """
    if inputs is None:
        inputs = load_inputs(settings, models, base=base)
    desired, complete = inputs.desired, inputs.complete
    if prune and complete and not desired.models:
        raise InputError(
            [
                Problem(
                    Location("manifests/"),
                    "",
                    "refusing to plan deletions from an empty manifest set",
                )
            ]
        )
    observed = observe(
        desired,
        registry,
        complete=complete,
        workers=default_concurrency(settings),
    )
    pending = pending_runs(inputs.items, observed.runs)
    workers = default_concurrency(settings)
    proofs = prove_claims(inputs.items, observed, registry, known=inputs.proven, workers=workers)
    target = registry_target(settings)

    def plan_with(proofs: Mapping[tuple[str, str], Proof]) -> Plan:
        unproven = {
            i.key: p.message(i.display)
            for i in inputs.items
            if (p := proofs.get(i.key)) is not None and not p.proven
        }
        return diff(
            desired,
            observed,
            target=target,
            pending=pending,
            unproven=unproven,
            prune=prune,
            complete=complete,
            max_delete_share=None if allow_mass_delete else MAX_DELETE_SHARE,
            contents={i.key: i.record.files for i in inputs.items},
        )

    plan = plan_with(proofs)
    # A ledger entry is anyone's to write: the runs this plan registers a version from or
    # points an alias at are hashed now, whatever the ledger says (once per command).
    staked = staked_runs(plan, observed)
    stale = {k for k, p in proofs.items() if p.run_id in staked and not p.downloaded}
    stale = {k for k in stale if inputs.proven.get(proofs[k].run_id) != proofs[k].digest}
    if stale:
        fresh = prove_claims(
            [i for i in inputs.items if i.key in stale],
            observed,
            registry,
            known=inputs.proven,
            workers=workers,
            trust_ledger=False,
        )
        proofs = {**proofs, **fresh}
        if any(not p.proven for p in fresh.values()):
            plan = plan_with(proofs)  # raises PlanError naming the run and what differs
    plan = dataclasses.replace(
        plan,
        inputs=dict(inputs.digests),
        options=PlanOptions(prune=prune, scope=None if complete else desired.names()),
    )
    return Planned(plan, desired, observed, inputs.items, complete, inputs.policies, proofs)


def prove_claims(
    items: Sequence[SyncItem],
    observed: ObservedState,
    reader: ProofReader,
    *,
    known: dict[str, str] | None = None,
    workers: int = 1,
    trust_ledger: bool = True,
) -> dict[tuple[str, str], Proof]:
    """Content proofs for the run directories whose run name is logged (exactly once)."""
    found = {key: refs[0] for key, refs in observed.runs.items() if len(refs) == 1}
    claims = [(i.experiment, i.record) for i in items if i.key in found]
    return prove(
        claims,
        found,
        reader,
        observed.ledger,
        known=known,
        workers=workers,
        trust_ledger=trust_ledger,
    )


def staked_runs(plan: Plan, observed: ObservedState) -> set[str]:
    """Run ids whose files a plan puts behind a model: versions it creates, and the
    versions it points aliases at."""
    out: set[str] = set()
    for c in plan.changes:
        if isinstance(c, CreateVersion) and c.run_id is not None:
            out.add(c.run_id)
        elif isinstance(c, SetAlias) and c.entry is None:
            current = observed.models.get(c.model)
            version = current.versions.get(c.new) if current is not None else None
            if version is not None:
                out.add(version.run_id)
    return out


def base_scope(settings: Settings, base: str) -> list[str]:
    """The models a change touches: those whose manifest differs between `base` and now.

    Models only at `base` (deleted by the change) are left out: they are no longer
    declared, so diff reports them as managed models in no manifest.
    """
    before = load_manifest_texts(
        gitinfo.files_at(settings.repo, base, "manifests"), settings.repo, label=f"{base}:"
    )
    now, _ = load_desired(settings)
    old = {m.name: comparable(m) for m in before.models}
    return [m.name for m in now.models if old.get(m.name) != comparable(m)]


def comparable(model: DesiredModel) -> DesiredModel:
    """A model without source locations, so two revisions compare by content."""
    nowhere = Location("")
    versions = tuple(dataclasses.replace(v, location=nowhere) for v in model.versions)
    return dataclasses.replace(model, location=nowhere, versions=versions)
