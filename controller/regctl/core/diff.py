"""Pure planning: (desired, observed) -> Plan. No I/O; one compare function per aspect.

Ownership (SPEC section 2): descriptions are enforced when declared, tags per declared
key, aliases are authoritative on managed models, undeclared versions are reported and
left alone unless the model allows pruning and the caller asks for it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from regctl.core.binding import Registered, bind, pinned, source_path
from regctl.core.digests import content_changes
from regctl.core.model import (
    ENTRY_TAG,
    MANAGED_TAG,
    DesiredModel,
    DesiredState,
    DesiredVersion,
    ObservedModel,
    ObservedState,
    ObservedVersion,
    entry_identity,
)
from regctl.core.plan import (
    Binding,
    Change,
    CreateModel,
    CreateVersion,
    DeleteAlias,
    DeleteModel,
    DeleteVersion,
    Note,
    Plan,
    SetAlias,
    SetModelDescription,
    SetModelTag,
    SetVersionDescription,
    SyncRun,
    order,
)
from regctl.core.runs import RunFile
from regctl.errors import Location, PlanError, Problem

MAX_DELETE_SHARE = 0.5
"""Pruning more than this share of the managed models and versions needs an explicit flag."""


@dataclass(frozen=True, slots=True)
class PendingRun:
    """A run that sync will log (its directory is known, it is not in MLflow yet)."""

    experiment: str
    run_name: str
    run_dir: str
    files: int
    bytes: int
    digest: str = ""


def artifact_uris(observed: ObservedState) -> dict[str, str]:
    """Run id -> artifact root, for the runs an observation looked up."""
    out = {r.run_id: r.artifact_uri for refs in observed.runs.values() for r in refs}
    out.update({rid: r.artifact_uri for rid, r in observed.runs_by_id.items()})
    return {rid: uri for rid, uri in out.items() if uri}


def _resolve_run(
    model: DesiredModel,
    v: DesiredVersion,
    observed: ObservedState,
    pending: Mapping[tuple[str, str], PendingRun],
    unproven: Mapping[tuple[str, str], str],
    problems: list[Problem],
) -> tuple[str | None, bool]:
    """Run id of an entry, and whether it awaits sync. Records a problem when unresolvable."""
    if v.run_id is not None:
        if v.run_id in observed.runs_by_id:
            return v.run_id, False
        problems.append(
            Problem(
                v.location,
                f"versions[{v.index}].run_id",
                f"run {v.run_id} does not exist (or is deleted)",
            )
        )
        return None, False
    assert v.run is not None and model.experiment is not None
    found = observed.runs.get((model.experiment, v.run), ())
    if len(found) == 1 and v.run_dir is not None and (model.experiment, v.run) in unproven:
        # A name is not proof: a run of that name whose content is not the directory's
        # (a squatted name, or a changed directory) must never be registered as it.
        problems.append(
            Problem(v.location, f"versions[{v.index}].run_dir", unproven[(model.experiment, v.run)])
        )
        return None, False
    if len(found) == 1:
        return found[0].run_id, False
    if len(found) > 1:
        ids = ", ".join(r.run_id for r in found)
        problems.append(
            Problem(
                v.location,
                f"versions[{v.index}].run",
                f"run name {v.run!r} is ambiguous in experiment "
                f"{model.experiment!r}: runs {ids}; use run_id",
            )
        )
        return None, False
    if (model.experiment, v.run) in pending:
        return None, True
    why = (
        "and no run_dir is given to sync it from"
        if v.run_dir is None
        else ("and its run_dir cannot be synced")
    )
    problems.append(
        Problem(
            v.location,
            f"versions[{v.index}].run",
            f"run {v.run!r} is not logged in experiment {model.experiment!r} {why}",
        )
    )
    return None, False


def _refuse_renamed(
    model: DesiredModel,
    versions: Mapping[int, ObservedVersion],
    resolved: dict[int, tuple[str | None, bool]],
    problems: list[Problem],
) -> None:
    """Unresolve a named entry whose run is not the one its version was registered from."""
    for v in model.versions:
        run_id, _ = resolved[v.index]
        if run_id is None or v.run is None or v.run_dir is not None:
            continue  # a run_dir entry is proven by content (regctl.engine.proof)
        # A name is not proof: the version regctl registered for this entry says which run
        # the name meant; another run under that name now (renamed, deleted, replaced) is
        # refused rather than registered behind the entry's aliases.
        identity = entry_identity(model.experiment, v.run, None)
        for number, ov in sorted(versions.items()):
            if ov.tags.get(ENTRY_TAG) == identity and ov.run_id != run_id:
                problems.append(
                    Problem(
                        v.location,
                        f"versions[{v.index}].run",
                        f"version {number} of {model.name!r} was registered for this entry "
                        f"from run {ov.run_id}, but the run named {v.run!r} in experiment "
                        f"{model.experiment!r} is now {run_id} (renamed, deleted or "
                        "replaced?): refusing to bind another run to the entry. If that run "
                        f"is intended, name it by `run_id: {run_id}`",
                    )
                )
                resolved[v.index] = (None, False)
                break


def _check_duplicates(
    model: DesiredModel, resolved: Mapping[int, tuple[str | None, bool]], problems: list[Problem]
) -> None:
    seen_runs: dict[tuple[str, str], int] = {}
    for v in model.versions:
        run_id, _ = resolved[v.index]
        if run_id is None:
            continue
        key = (run_id, v.artifact_path)
        if key in seen_runs:
            problems.append(
                Problem(
                    v.location,
                    f"versions[{v.index}]",
                    f"resolves to the same run and artifact path as "
                    f"versions[{seen_runs[key]}] (run {run_id})",
                )
            )
        seen_runs[key] = v.index


def _pin_problem(
    model: DesiredModel,
    v: DesiredVersion,
    run_id: str | None,
    ov: ObservedVersion,
    path: str | None,
) -> str | None:
    """Why the version `v` pins cannot be its version (None: it is). `run_id` None: the
    entry's run awaits sync. `path`: where the version's source is inside its run."""
    assert v.version is not None
    if run_id is None:
        # The entry's run is not logged yet, so no existing version can be it: a
        # pin on one would bind the alias to another run's version.
        return (
            f"version {v.version} of {model.name!r} is registered from run "
            f"{ov.run_id} ({ov.source}), but this entry's run {v.run_ref} is not "
            "logged yet (sync would log it as a new run): it cannot be version "
            f"{v.version}. Remove the pin, or pin the number it will get"
        )
    if ov.run_id == run_id and path is None:
        # one problem per pin, not also 'deleted?'
        return (
            f"version {v.version} of {model.name!r} names run {run_id} but its source "
            f"{ov.source} is not inside that run's artifacts (registered by hand?): it "
            "is not this entry's version; remove the pin"
        )
    if ov.run_id != run_id or path != v.artifact_path:
        return (
            f"version {v.version} of {model.name!r} is registered from run {ov.run_id} "
            f"({ov.source}); a version is immutable and cannot be rebound to "
            f"{v.run_ref}: remove the pin or declare a new entry"
        )
    return None


def _accept_pins(
    model: DesiredModel,
    versions: Mapping[int, ObservedVersion],
    registered: Mapping[int, Registered],
    resolved: Mapping[int, tuple[str | None, bool]],
    problems: list[Problem],
) -> tuple[dict[int, int], set[int]]:
    """The pins that stand (entry index -> version), and the entries whose pin is refused."""
    pins = pinned(model.versions, versions)
    standing: dict[int, int] = {}
    refused: set[int] = set()
    for v in model.versions:
        number = pins.get(v.index)
        if number is None:
            continue
        run_id, awaits_sync = resolved[v.index]
        if run_id is None and not awaits_sync:
            continue  # an unresolvable run was reported by _resolve_run
        why = _pin_problem(model, v, run_id, versions[number], registered[number].path)
        if why is None:
            standing[v.index] = number
        else:
            problems.append(Problem(v.location, f"versions[{v.index}].version", why))
            refused.add(v.index)
    return standing, refused


def _unreachable_pin(model: DesiredModel, v: DesiredVersion, next_number: int) -> Problem:
    """The problem of an entry pinned to a number that no new version would get."""
    assert v.version is not None
    if v.version < next_number:
        message = (
            f"version {v.version} of {model.name!r} is not in the registry (deleted?); "
            f"MLflow never reuses a version number, so this pinned entry cannot be "
            f"restored: remove `version: {v.version}` to register {v.run_ref} again "
            f"as version {next_number}, or remove the entry"
        )
    else:
        message = f"pinned to version {v.version}, but MLflow would assign {next_number}"
    return Problem(v.location, f"versions[{v.index}].version", message)


def _create_versions(
    model: DesiredModel,
    versions: Mapping[int, ObservedVersion],
    resolved: Mapping[int, tuple[str | None, bool]],
    bindings: dict[int, Binding],
    refused: Collection[int],
    problems: list[Problem],
    changes: list[Change],
) -> None:
    """Whatever is left gets created, numbered after the highest version observed."""
    next_number = max(versions, default=0) + 1
    for v in model.versions:
        run_id, awaits_sync = resolved[v.index]
        if v.index in bindings or v.index in refused or (run_id is None and not awaits_sync):
            continue
        if v.version is not None and v.version != next_number:
            problems.append(_unreachable_pin(model, v, next_number))
            continue
        changes.append(
            CreateVersion(
                model=model.name,
                entry=v.index,
                experiment=model.experiment,
                run_name=v.run,
                run_id=run_id,
                artifact_path=v.artifact_path,
                description=v.description,
                expected_version=next_number,
                pinned=v.version is not None,
                location=str(v.location),
            )
        )
        bindings[v.index] = Binding(model.name, v.index, next_number, run_id, True)
        next_number += 1


def _bind_versions(
    model: DesiredModel,
    current: ObservedModel | None,
    observed: ObservedState,
    pending: Mapping[tuple[str, str], PendingRun],
    unproven: Mapping[tuple[str, str], str],
    uris: Mapping[str, str],
    problems: list[Problem],
    changes: list[Change],
) -> dict[int, Binding]:
    """`uris`: `artifact_uris(observed)`, built once per diff (it spans every run).

    Binding itself is `regctl.core.binding`: pins first, then adoption (an existing
    version of the same run and path is this entry); here the pins are checked, and
    what is left is created.
    """
    versions: Mapping[int, ObservedVersion] = current.versions if current else {}
    resolved: dict[int, tuple[str | None, bool]] = {}
    for v in model.versions:
        resolved[v.index] = _resolve_run(model, v, observed, pending, unproven, problems)
    _refuse_renamed(model, versions, resolved, problems)
    _check_duplicates(model, resolved, problems)
    registered = {
        n: Registered(n, ov.run_id, source_path(ov.source, ov.run_id, uris.get(ov.run_id)))
        for n, ov in sorted(versions.items())
    }
    pins, refused = _accept_pins(model, versions, registered, resolved, problems)
    runs = {index: run_id for index, (run_id, _) in resolved.items()}
    bound = bind(model.versions, pins, runs, registered.values())
    bindings = {
        index: Binding(model.name, index, number, versions[number].run_id, False)
        for index, number in bound.items()
    }
    _create_versions(model, versions, resolved, bindings, refused, problems, changes)
    return bindings


def _compare_model(model: DesiredModel, current: ObservedModel | None) -> list[Change]:
    if current is None:
        tags = dict(model.tags)
        tags[MANAGED_TAG] = "true"
        return [CreateModel(model=model.name, description=model.description, tags=tags)]
    changes: list[Change] = []
    if model.description is not None and model.description != current.description:
        changes.append(
            SetModelDescription(model=model.name, old=current.description, new=model.description)
        )
    wanted = dict(model.tags)
    wanted[MANAGED_TAG] = "true"
    for key, value in sorted(wanted.items()):
        if current.tags.get(key) != value:
            changes.append(
                SetModelTag(model=model.name, key=key, old=current.tags.get(key), new=value)
            )
    return changes


def _compare_descriptions(
    model: DesiredModel, current: ObservedModel | None, bindings: Mapping[int, Binding]
) -> list[Change]:
    if current is None:
        return []
    changes: list[Change] = []
    for v in model.versions:
        b = bindings.get(v.index)
        if b is None or b.created or v.description is None:
            continue
        old = current.versions[b.version].description
        if old != v.description:
            changes.append(
                SetVersionDescription(
                    model=model.name, version=b.version, old=old, new=v.description
                )
            )
    return changes


def _compare_aliases(
    model: DesiredModel, current: ObservedModel | None, bindings: Mapping[int, Binding]
) -> list[Change]:
    have: Mapping[str, int] = current.aliases if current else {}
    want: dict[str, tuple[int, DesiredVersion, Binding]] = {}
    for v in model.versions:
        b = bindings.get(v.index)
        if b is None:
            continue
        for alias in v.aliases:
            want[alias] = (b.version, v, b)
    changes: list[Change] = []
    for alias, (number, v, b) in sorted(want.items()):
        if have.get(alias) != number:
            changes.append(
                SetAlias(
                    model=model.name,
                    alias=alias,
                    old=have.get(alias),
                    new=number,
                    entry=v.index if b.created else None,
                    run_name=v.run or v.run_id or "",
                )
            )
    for alias, number in sorted(have.items()):
        if alias not in want:
            changes.append(DeleteAlias(model=model.name, alias=alias, old=number))
    return changes


def _compare_unclaimed(
    model: DesiredModel, current: ObservedModel | None, bindings: Mapping[int, Binding], prune: bool
) -> tuple[list[Change], list[Note]]:
    if current is None:
        return [], []
    claimed = {b.version for b in bindings.values() if not b.created}
    changes: list[Change] = []
    notes: list[Note] = []
    for number, ov in sorted(current.versions.items()):
        if number in claimed:
            continue
        if prune and model.prune:
            changes.append(DeleteVersion(model=model.name, version=number, run_id=ov.run_id))
        else:
            notes.append(
                Note(
                    model.name,
                    f"version {number} (run {ov.run_id or '?'}) is not "
                    "declared in the manifest; left alone",
                )
            )
    return changes, notes


def diff(
    desired: DesiredState,
    observed: ObservedState,
    *,
    target: str = "",
    pending: Collection[PendingRun] = (),
    unproven: Mapping[tuple[str, str], str] | None = None,
    prune: bool = False,
    complete: bool = True,
    max_delete_share: float | None = MAX_DELETE_SHARE,
    contents: Mapping[tuple[str, str], Sequence[RunFile]] | None = None,
) -> Plan:
    """Compute the plan. Raises PlanError when the desired state cannot be reached.

    `complete` says that `desired` holds every manifest (not a scoped subset): only then
    can a managed model that no manifest names be pruned. `unproven` maps (experiment, run
    name) to why the logged run of that name is not the run of the entry's `run_dir`
    (`regctl.engine.proof`): such an entry is an error, never bound to that run.
    """
    pending_map = {(p.experiment, p.run_name): p for p in pending}
    problems: list[Problem] = []
    changes: list[Change] = []
    notes: list[Note] = []
    all_bindings: list[Binding] = []
    used_pending: set[tuple[str, str]] = set()
    uris = artifact_uris(observed)
    for model in desired.models:
        current = observed.models.get(model.name)
        changes.extend(_compare_model(model, current))
        bindings = _bind_versions(
            model, current, observed, pending_map, unproven or {}, uris, problems, changes
        )
        for v in model.versions:
            if model.experiment and v.run and (model.experiment, v.run) in pending_map:
                b = bindings.get(v.index)
                if b is not None and b.run_id is None:
                    used_pending.add((model.experiment, v.run))
        changes.extend(content_changes(model, current, bindings, changes, contents or {}, problems))
        changes.extend(_compare_descriptions(model, current, bindings))
        changes.extend(_compare_aliases(model, current, bindings))
        more, more_notes = _compare_unclaimed(model, current, bindings, prune)
        changes.extend(more)
        notes.extend(more_notes)
        all_bindings.extend(bindings[i] for i in sorted(bindings))
    for key in sorted(used_pending):
        p = pending_map[key]
        changes.append(
            SyncRun(
                model="",
                experiment=p.experiment,
                run_name=p.run_name,
                run_dir=p.run_dir,
                files=p.files,
                bytes=p.bytes,
                digest=p.digest,
            )
        )
    declared = set(desired.names())
    for name, current in sorted(observed.models.items()):
        if name in declared or not current.managed:
            continue
        if prune and complete:
            for alias, number in sorted(current.aliases.items()):
                changes.append(DeleteAlias(model=name, alias=alias, old=number))
            changes.append(DeleteModel(model=name))
        elif complete:
            notes.append(
                Note(
                    name,
                    "managed by regctl but in no manifest; left alone (apply --prune deletes it)",
                )
            )
    if prune and max_delete_share is not None:
        problems.extend(_mass_delete(changes, observed, declared, max_delete_share))
    if problems:
        raise PlanError(sorted(problems, key=lambda p: (p.location.file, p.location.line)))
    return Plan(
        target=target,
        models=desired.names(),
        changes=order(changes),
        notes=tuple(sorted(notes, key=lambda n: (n.model, n.message))),
        bindings=tuple(all_bindings),
        fingerprint=fingerprint(observed, desired.names()),
    )


def _mass_delete(
    changes: list[Change], observed: ObservedState, declared: set[str], share: float
) -> list[Problem]:
    """Refuse a prune that deletes more than `share` of the managed objects.

    What is counted is what the registry loses: a model deletion takes the model, every
    version it has and every alias on them; a version deletion takes the version and
    the aliases on it. The total is the managed models, their versions and aliases.
    """
    managed = {n: m for n, m in observed.models.items() if m.managed or n in declared}
    models: set[str] = set()
    versions: set[tuple[str, int]] = set()
    for c in changes:
        if isinstance(c, DeleteModel):
            models.add(c.model)
        elif isinstance(c, DeleteVersion):
            versions.add((c.model, c.version))
    aliases: set[tuple[str, str]] = set()
    for name, m in managed.items():
        versions.update((name, n) for n in m.versions if name in models)
        aliases.update(
            (name, a) for a, n in m.aliases.items() if name in models or (name, n) in versions
        )
    deleted = len(models) + len(versions) + len(aliases)
    total = sum(1 + len(m.versions) + len(m.aliases) for m in managed.values())
    if deleted == 0 or total == 0 or deleted <= share * total:
        return []
    return [
        Problem(
            Location("manifests/"),
            "",
            f"--prune would delete {len(models)} models, {len(versions)} versions and "
            f"{len(aliases)} aliases: {deleted} of the {total} managed objects (more than "
            f"{share:.0%}); if that is intended, pass --allow-mass-delete",
        )
    ]


def fingerprint(observed: ObservedState, names: Collection[str]) -> str:
    """A digest of the observed registry state a plan was made from."""
    wanted = set(names)
    payload = []
    for name, m in sorted(observed.models.items()):
        if name not in wanted and not m.managed:
            continue
        payload.append(
            {
                "name": name,
                "description": m.description,
                "tags": dict(m.tags),
                "aliases": dict(m.aliases),
                "versions": [
                    [n, v.run_id, v.source, v.description, dict(v.tags)]
                    for n, v in sorted(m.versions.items())
                ],
            }
        )
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return f"sha256:{digest[:32]}"
