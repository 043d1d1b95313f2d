"""The pure part of `regctl import`: what a manifest can declare of the registry.

Values and decisions, no file or registry I/O: which models are imported, which versions
a manifest can declare (and the warnings about the others), legacy-stage notes, how an
entry names its run, how an existing manifest's entries match the registry's versions
(`regctl.core.binding`, as `diff` binds them), the file name of a new manifest, and the
report values. `regctl.commands.import_models` reads and checks, `regctl.commands.importing`
writes the texts; the decisions themselves are described in `import_models`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from regctl.core.binding import bind, pinned, source_path
from regctl.core.digests import DIGEST_PATTERN, DIGEST_TAG
from regctl.core.model import (
    LEDGER_MODEL,
    PROVENANCE_PREFIX,
    DesiredModel,
    DesiredVersion,
    ObservedModel,
    ObservedState,
    RunRef,
    is_lease_model,
)
from regctl.errors import ExitCode

MLFLOW_TAG_PREFIX = "mlflow."
PROMPT_TAG = "mlflow.prompt.is_prompt"
STAGE_ALIASES: Mapping[str, str] = {"Production": "Production", "Staging": "Staging"}
"""Legacy stage -> the alias that replaces it (`Archived` has none)."""

_MAX_NAME = 256  # a manifest's run names and tag keys (manifest.NonEmpty)
_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


# --------------------------------------------------------------------------- report


@dataclass(frozen=True, slots=True)
class StageNote:
    """A version in a legacy stage, and the alias that replaces the stage."""

    model: str
    version: int
    stage: str
    alias: str | None
    holder: int | None
    """The version that holds `alias` in the registry now, if any."""
    latest: bool
    """The highest version in this stage: what `models:/<model>/<stage>` loads."""

    def __str__(self) -> str:
        head = f"{self.model}: version {self.version} is in the deprecated stage {self.stage}"
        if self.alias is None:
            return f"{head}; no alias replaces it (leave the version out of aliases)"
        if self.holder == self.version:
            return f"{head} and already holds the alias {self.alias}"
        if not self.latest:
            return (
                f"{head} too; models:/{self.model}/{self.stage} loads the highest version "
                f"in it, which is the one to give the alias {self.alias}"
            )
        now = "" if self.holder is None else f" (the alias is on version {self.holder} now)"
        return f"{head}: add {self.alias} to its aliases to migrate{now}"

    def comment(self) -> str:
        """The YAML comment put above a new entry."""
        if not self.latest:
            return (
                f"MLflow stage {self.stage} (deprecated); models:/{self.model}/{self.stage} "
                "loads a higher version"
            )
        return f"MLflow stage {self.stage} (deprecated): add {self.alias} to aliases to migrate"


@dataclass(frozen=True, slots=True)
class ImportedModel:
    """What import did for one model."""

    name: str
    file: str
    status: Literal["created", "updated", "unchanged", "failed"]
    versions: int
    changes: tuple[str, ...] = ()
    managed: bool = True
    """Whether the registry already marks the model as managed by regctl."""


@dataclass(frozen=True, slots=True)
class ImportReport:
    """Result of `import_models`, sorted by model name."""

    models: tuple[ImportedModel, ...]
    stages: tuple[StageNote, ...] = ()
    warnings: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()

    @property
    def unmanaged(self) -> tuple[str, ...]:
        """Imported models not yet marked `regctl.managed=true` in the registry."""
        return tuple(m.name for m in self.models if m.status != "failed" and not m.managed)

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.ERROR if self.errors else ExitCode.OK


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class Lookups:
    """What import read about runs: by id, and by (experiment, run name)."""

    origins: Mapping[str, tuple[RunRef, str]]
    runs: Mapping[tuple[str, str], tuple[RunRef, ...]]
    experiments: Mapping[str, str]

    def unique_name(self, experiment: str | None, run_id: str) -> str | None:
        """The run's name if it names only this run in `experiment`, else None."""
        origin = self.origins.get(run_id)
        if origin is None or experiment is None or origin[1] != experiment:
            return None
        name = origin[0].name
        if not name or len(name) > _MAX_NAME:
            return None
        found = self.runs.get((experiment, name), ())
        return name if [r.run_id for r in found] == [run_id] else None

    def resolve(self, experiment: str | None, v: DesiredVersion) -> str | None:
        """The run id an existing entry names, when it names exactly one live run."""
        if v.run_id is not None:
            return v.run_id if v.run_id in self.origins else None
        found = self.runs.get((experiment or "", v.run or ""), ())
        return found[0].run_id if len(found) == 1 else None

    def observed(self, models: Mapping[str, ObservedModel]) -> ObservedState:
        by_id = {rid: ref for rid, (ref, _) in self.origins.items()}
        return ObservedState(
            models=models, experiments=self.experiments, runs=self.runs, runs_by_id=by_id
        )


@dataclass(frozen=True, slots=True)
class Declarable:
    """A registry version as a manifest entry declares it."""

    number: int
    run_id: str
    experiment: str
    path: str | None
    description: str
    aliases: tuple[str, ...]
    digest: str | None = None
    """The version's recorded content digest (`regctl.digest`), written as a pin."""


@dataclass
class Existing:
    """A manifest in the output folder that declares a model: its file, as shown, its
    text and what it declares."""

    path: Path
    display: str
    text: str
    model: DesiredModel


# --------------------------------------------------------------------------- planning


def skip_reason(name: str, model: ObservedModel) -> str | None:
    """Why a registered model is not one to manage (None: it is one)."""
    if is_lease_model(name):
        return f"{name}: regctl's apply lock, not a model"
    if name == LEDGER_MODEL:
        return f"{name}: regctl's ledger of proven runs, not a model"
    if model.tags.get(PROMPT_TAG) == "true":
        return f"{name}: an MLflow prompt, not a model"
    return None


def live_versions(model: ObservedModel, lk: Lookups, warnings: list[str]) -> list[Declarable]:
    """Versions with a live run, in number order; warns about the others."""
    by_version: dict[int, list[str]] = {}
    for alias, number in sorted(model.aliases.items()):
        by_version.setdefault(number, []).append(alias)
    out = []
    for number, ov in sorted(model.versions.items()):
        if not ov.run_id:
            warnings.append(
                f"{model.name}: version {number} has no run (source {ov.source}); "
                "a manifest cannot declare it"
            )
            continue
        origin = lk.origins.get(ov.run_id)
        if origin is None:
            warnings.append(
                f"{model.name}: version {number}: its run {ov.run_id} is deleted or missing; "
                "a manifest cannot declare it"
            )
            continue
        path = source_path(ov.source, ov.run_id, origin[0].artifact_uri)
        if path is None:
            # MLflow stores any source as given: one outside the run's artifacts is not
            # the run's files, and apply would never take it for an entry's version
            warnings.append(
                f"{model.name}: version {number}: its source {ov.source} is not inside run "
                f"{ov.run_id}'s artifacts; a manifest cannot declare it"
            )
            continue
        out.append(
            Declarable(
                number,
                ov.run_id,
                origin[1],
                path,
                ov.description,
                tuple(by_version.get(number, ())),
                _recorded_digest(ov.tags),
            )
        )
    return out


def _recorded_digest(tags: Mapping[str, str]) -> str | None:
    """A well-formed `regctl.digest`, else None (a malformed one is not copied into a pin)."""
    value = tags.get(DIGEST_TAG)
    return value if value is not None and DIGEST_PATTERN.match(value) else None


def keep_versions(
    model: ObservedModel,
    candidates: Sequence[Declarable],
    prefer: Collection[int],
    warnings: list[str],
) -> list[Declarable]:
    """The versions a manifest can declare, in number order; warns about the others.

    A manifest declares a run and artifact path once: of several versions with the same
    pair, the one in `prefer` (declared already), else the one holding an alias, else
    the lowest is kept.
    """
    groups: dict[tuple[str, str], list[Declarable]] = {}
    for v in candidates:
        groups.setdefault((v.run_id, v.path or ""), []).append(v)
    kept: list[Declarable] = []
    for (run_id, path), versions in groups.items():
        keep = next(
            (v for v in versions if v.number in prefer),
            next((v for v in versions if v.aliases), versions[0]),
        )
        kept.append(keep)
        for v in versions:
            if v is not keep:
                warnings.append(
                    f"{model.name}: version {v.number} has the same run ({run_id}) and "
                    f"artifact path ({path or 'root'}) as version {keep.number}; a manifest "
                    "declares a run and path once, so it is left undeclared"
                )
    declared = {v.number for v in kept}
    for alias, number in sorted(model.aliases.items()):
        if number not in declared:
            warnings.append(
                f"{model.name}: alias {alias} is on version {number}, which no manifest can "
                "declare: apply would remove the alias"
            )
    return sorted(kept, key=lambda v: v.number)


def stage_notes(model: ObservedModel) -> list[StageNote]:
    highest: dict[str, int] = {}
    for number, ov in model.versions.items():
        if ov.stage not in ("", "None"):
            highest[ov.stage] = max(highest.get(ov.stage, 0), number)
    notes = []
    for number, ov in sorted(model.versions.items()):
        if ov.stage in ("", "None"):
            continue
        alias = STAGE_ALIASES.get(ov.stage)
        holder = model.aliases.get(alias) if alias else None
        notes.append(
            StageNote(model.name, number, ov.stage, alias, holder, number == highest[ov.stage])
        )
    return notes


def model_tags(model: ObservedModel) -> dict[str, str]:
    return {
        k: v
        for k, v in sorted(model.tags.items())
        if not k.startswith((PROVENANCE_PREFIX, MLFLOW_TAG_PREFIX))
    }


def shared_experiment(versions: Sequence[Declarable]) -> str | None:
    experiments = {v.experiment for v in versions}
    return experiments.pop() if len(experiments) == 1 else None


def run_pair(v: Declarable, experiment: str | None, lk: Lookups) -> tuple[str, str]:
    name = lk.unique_name(experiment, v.run_id)
    return ("run", name) if name is not None else ("run_id", v.run_id)


def entry_pairs(
    v: Declarable, experiment: str | None, lk: Lookups
) -> list[tuple[str, str | int | list[str]]]:
    pairs: list[tuple[str, str | int | list[str]]] = [run_pair(v, experiment, lk)]
    if v.path:
        pairs.append(("artifact_path", v.path))
    pairs += [("version", v.number), ("description", v.description)]
    if v.aliases:
        pairs.append(("aliases", list(v.aliases)))
    if v.digest:
        pairs.append(("digest", v.digest))
    return pairs


def stage_comments(v: Declarable, stages: Mapping[int, StageNote]) -> list[str]:
    note = stages.get(v.number)
    if note is None or note.alias is None or note.holder == v.number:
        return []
    return [note.comment()]


def match_entries(
    ex: DesiredModel, versions: Mapping[int, Declarable], all_numbers: Collection[int], lk: Lookups
) -> dict[int, int]:
    """Entry index -> registry version, bound the way `diff` binds them (`core.binding`).

    Every pin on a live version stands (the entry is then rewritten to match it), then
    each unpinned entry adopts by its run and artifact path. `versions` are the
    declarable ones (`live_versions`: each has a path inside its run); `all_numbers`
    every live version.
    """
    pins = pinned(ex.versions, all_numbers)
    runs = {v.index: lk.resolve(ex.experiment, v) for v in ex.versions if v.index not in pins}
    return bind(ex.versions, pins, runs, versions.values())


def entry_differs(dv: DesiredVersion, v: Declarable, experiment: str | None, lk: Lookups) -> bool:
    return (
        lk.resolve(experiment, dv) != v.run_id
        or (dv.artifact_path_given and dv.artifact_path != (v.path or ""))
        or (not dv.artifact_path_given and bool(v.path))
        or (dv.version is not None and dv.version != v.number)
        or (dv.description is not None and dv.description != v.description)
        or set(dv.aliases) != set(v.aliases)
        or (v.digest is not None and dv.digest != v.digest)
    )


def new_path(out_dir: Path, name: str, taken: set[str]) -> Path:
    """`<model>.yaml`, made safe as a file name and unique (case-insensitively)."""
    base = _UNSAFE_FILE_CHARS.sub("_", name).strip("._")[:200] or "model"
    candidate, n = f"{base}.yaml", 1
    while candidate.casefold() in taken:
        n += 1
        candidate = f"{base}-{n}.yaml"
    taken.add(candidate.casefold())
    return out_dir / candidate
