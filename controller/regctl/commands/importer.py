"""`regctl import`: write manifests from the live registry (onboarding an existing one).

Right after an import, `regctl diff` plans nothing: each manifest says exactly what the
registry holds, as far as a manifest can say it. Every file is checked before it is
written: it must load like any manifest, and the pure `diff` of it against what was
read must be empty (the `regctl.managed` tag aside, which `import_command` sets).

Decisions taken here:

- A model gets one file, `<model>.yaml` in the output folder, unless a manifest there
  already declares it: then that file is updated in place (`regctl.adapters.yamledit`) and keeps
  its comments, key order and formatting; only the values that differ change.
- A new file declares everything: `description` (an empty one too), the tags (not the
  `regctl.` and `mlflow.` ones), `experiment` when all versions' runs share one, and
  one entry per version in number order: its run by name when the name is unique in
  that experiment (else `run_id`), `artifact_path` when the source is not the run's
  root, a `version:` pin, `description` and `aliases`.
- An existing file keeps what it chose to leave out: a `description` key that is
  absent stays absent (regctl leaves that description alone), and entries keep their
  pins or lack of them. Tags are written as the registry has them. Entries whose
  version is gone are removed; versions that no entry declares are added, in number
  order.
- What a manifest cannot declare is reported, not guessed: a version without a live
  run, a second version of the same run and artifact path. Legacy stages are reported
  with the alias that replaces them and noted as a comment on new entries; no alias is
  added that the registry does not hold (the diff would not be empty).
- The output folder as import would leave it must load as one set, as `validate`
  loads it: two models whose names differ only in case (MLflow keeps both) are
  refused, naming both, before any file or tag is written. Its entries follow the
  loader's rules (`manifest.yaml_files`): a symlink or stray file there is an error.
- `regctl-lease-<n>` (apply's lock), `regctl-ledger` (proven runs) and prompts (MLflow
  stores them as registered models)
  are not models to manage and are skipped.
- Ownership: `import_models` only reads the registry. `import_command` then marks the
  imported models `regctl.managed=true` when the manifests went to the repository's
  `manifests/` (they are in effect); a folder elsewhere is a draft and claims nothing,
  so a look at a registry can never make `apply --prune` delete its models.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import tempfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from ruamel.yaml.nodes import MappingNode, Node, SequenceNode

from regctl import escape
from regctl.adapters.manifests import (
    API_VERSION,
    display_path,
    load_manifest_texts,
    load_manifests,
    yaml_files,
)
from regctl.adapters.yamledit import Editor, Layout, render_item, render_pair
from regctl.core.binding import source_path
from regctl.core.diff import diff
from regctl.core.model import (
    LEDGER_MODEL,
    MANAGED_TAG,
    PROVENANCE_PREFIX,
    DesiredModel,
    DesiredState,
    DesiredVersion,
    ObservedModel,
    ObservedState,
    RunRef,
)
from regctl.core.plan import SetModelTag
from regctl.engine.lease import is_lease_model
from regctl.errors import ExitCode, InputError, Location, PlanError, Problem, RegctlError
from regctl.ports import RegistryReader, runs_by_name

if TYPE_CHECKING:
    from regctl.config import Settings

SCHEMA_FILE = "schema/regctl.schema.json"
"""Where the JSON Schema lives in a repository (see `regctl.commands.schema`)."""

MLFLOW_TAG_PREFIX = "mlflow."
PROMPT_TAG = "mlflow.prompt.is_prompt"
STAGE_ALIASES: Mapping[str, str] = {"Production": "Production", "Staging": "Staging"}
"""Legacy stage -> the alias that replaces it (`Archived` has none)."""

_ENTRY_ORDER = ("run", "run_id", "run_dir", "artifact_path", "version", "description", "aliases")
_MODEL_ORDER = (
    "apiVersion",
    "kind",
    "name",
    "description",
    "experiment",
    "tags",
    "prune",
    "versions",
)
_MAX_NAME = 256  # a manifest's run names and tag keys (manifest.NonEmpty)
_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


@runtime_checkable
class ImportReader(RegistryReader, Protocol):
    """What import reads beyond planning: where each run lives."""

    def run_origins(self, run_ids: Collection[str]) -> dict[str, tuple[RunRef, str]]:
        """Active runs by id, each with its experiment's name; missing ids are absent."""
        ...


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
class _Lookups:
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
class _Version:
    """A registry version as a manifest entry declares it."""

    number: int
    run_id: str
    experiment: str
    path: str | None
    description: str
    aliases: tuple[str, ...]


@dataclass
class _Existing:
    path: Path
    display: str
    text: str
    model: DesiredModel


def _existing_manifests(out_dir: Path, repo: Path) -> dict[str, _Existing]:
    """Model name -> the manifest in `out_dir` that declares it (all must be valid)."""
    files = yaml_files(out_dir, repo)  # what the loader reads; anything else is an error
    if not files:
        return {}
    state = load_manifests(repo, files, check_paths=False)
    by_display = {display_path(p, repo): p for p in files}
    out = {}
    for m in state.models:
        path = by_display[m.location.file]
        out[m.name] = _Existing(path, m.location.file, path.read_text(encoding="utf-8"), m)
    return out


def _read(
    reader: ImportReader, models: Mapping[str, ObservedModel], existing: Mapping[str, _Existing]
) -> _Lookups:
    run_ids = {v.run_id for m in models.values() for v in m.versions.values() if v.run_id}
    origins = reader.run_origins(run_ids) if run_ids else {}
    wanted: dict[str, set[str]] = {}
    for ref, experiment in origins.values():
        if ref.name:
            wanted.setdefault(experiment, set()).add(ref.name)
    for name, ex in existing.items():
        if name in models and ex.model.experiment:
            names = {v.run for v in ex.model.versions if v.run}
            wanted.setdefault(ex.model.experiment, set()).update(names)
    experiments = reader.experiments(sorted(wanted)) if wanted else {}
    runs = runs_by_name(reader, experiments, wanted)
    return _Lookups(origins, runs, experiments)


# --------------------------------------------------------------------------- planning


def _candidates(model: ObservedModel, lk: _Lookups, warnings: list[str]) -> list[_Version]:
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
            _Version(
                number,
                ov.run_id,
                origin[1],
                path,
                ov.description,
                tuple(by_version.get(number, ())),
            )
        )
    return out


def _keep(
    model: ObservedModel,
    candidates: Sequence[_Version],
    prefer: Collection[int],
    warnings: list[str],
) -> list[_Version]:
    """The versions a manifest can declare, in number order; warns about the others.

    A manifest declares a run and artifact path once: of several versions with the same
    pair, the one in `prefer` (declared already), else the one holding an alias, else
    the lowest is kept.
    """
    groups: dict[tuple[str, str], list[_Version]] = {}
    for v in candidates:
        groups.setdefault((v.run_id, v.path or ""), []).append(v)
    kept: list[_Version] = []
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


def _stage_notes(model: ObservedModel) -> list[StageNote]:
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


def _tags(model: ObservedModel) -> dict[str, str]:
    return {
        k: v
        for k, v in sorted(model.tags.items())
        if not k.startswith((PROVENANCE_PREFIX, MLFLOW_TAG_PREFIX))
    }


def _shared_experiment(versions: Sequence[_Version]) -> str | None:
    experiments = {v.experiment for v in versions}
    return experiments.pop() if len(experiments) == 1 else None


def _run_pair(v: _Version, experiment: str | None, lk: _Lookups) -> tuple[str, str]:
    name = lk.unique_name(experiment, v.run_id)
    return ("run", name) if name is not None else ("run_id", v.run_id)


def _entry_pairs(
    v: _Version, experiment: str | None, lk: _Lookups
) -> list[tuple[str, str | int | list[str]]]:
    pairs: list[tuple[str, str | int | list[str]]] = [_run_pair(v, experiment, lk)]
    if v.path:
        pairs.append(("artifact_path", v.path))
    pairs += [("version", v.number), ("description", v.description)]
    if v.aliases:
        pairs.append(("aliases", list(v.aliases)))
    return pairs


def _comments(v: _Version, stages: Mapping[int, StageNote]) -> list[str]:
    note = stages.get(v.number)
    if note is None or note.alias is None or note.holder == v.number:
        return []
    return [note.comment()]


def _schema_ref(out_dir: Path, repo: Path) -> str:
    return Path(os.path.relpath(repo / SCHEMA_FILE, out_dir)).as_posix()


def _new_manifest(
    model: ObservedModel,
    versions: Sequence[_Version],
    lk: _Lookups,
    stages: Mapping[int, StageNote],
    schema_ref: str,
) -> str:
    """The text of a new manifest declaring `model` as the registry holds it."""
    layout = Layout()
    experiment = _shared_experiment(versions)
    parts = [
        f"# yaml-language-server: $schema={schema_ref}\n",
        render_pair("apiVersion", API_VERSION, 0),
        render_pair("kind", "RegisteredModel", 0),
        render_pair("name", model.name, 0),
        render_pair("description", model.description, 0),
    ]
    if experiment is not None:
        parts.append(render_pair("experiment", experiment, 0))
    tags = _tags(model)
    if tags:
        parts.append(_tags_text(tags, layout))
    if versions:
        parts.append("versions:\n")
        for v in versions:
            parts.append(
                render_item(
                    _entry_pairs(v, experiment, lk),
                    layout.offset,
                    layout,
                    comments=_comments(v, stages),
                )
            )
    return "".join(parts)


def _tags_text(tags: Mapping[str, str], layout: Layout, col: int = 0) -> str:
    flow = render_pair("tags", tags, col)
    if len(flow.rstrip("\n")) <= 100:
        return flow
    return render_pair("tags", tags, col, block=True, layout=layout)


def _match(
    ex: DesiredModel, versions: Mapping[int, _Version], all_numbers: Collection[int], lk: _Lookups
) -> dict[int, int]:
    """Entry index -> registry version, bound the way `diff` binds them.

    Pins first (a pin names its version outright), then each entry's run and artifact
    path (exact path first; the lowest unclaimed version of the run when the entry gives
    no path). `versions` are the declarable ones; `all_numbers` every live version.
    """
    bound: dict[int, int] = {}
    claimed: set[int] = set()
    for v in ex.versions:
        if v.version is not None and v.version in all_numbers:
            bound[v.index] = v.version
            claimed.add(v.version)
    for v in ex.versions:
        if v.index in bound or v.version is not None:
            continue
        run_id = lk.resolve(ex.experiment, v)
        if run_id is None:
            continue
        candidates = [
            d for n, d in sorted(versions.items()) if n not in claimed and d.run_id == run_id
        ]
        exact = [d for d in candidates if (d.path or "") == v.artifact_path]
        pick = (
            exact[0]
            if exact
            else (candidates[0] if candidates and not v.artifact_path_given else None)
        )
        if pick is not None:
            bound[v.index] = pick.number
            claimed.add(pick.number)
    return bound


class _Update:
    """Edits that bring an existing manifest to what the registry holds."""

    def __init__(
        self, ex: _Existing, model: ObservedModel, lk: _Lookups, stages: Mapping[int, StageNote]
    ) -> None:
        self.ex = ex
        self.spec = ex.model
        self.model = model
        self.lk = lk
        self.stages = stages
        self.ed = Editor(ex.text, ex.display)
        self.root = self.ed.root
        self.changes: list[str] = []

    def _before(self, mapping: MappingNode, key: str, order: Sequence[str]) -> str | None:
        """The first existing key that the canonical order puts after `key`."""
        later = order[order.index(key) + 1 :]
        present = [name for name, _, _ in self.ed.pairs(mapping)]
        return next((k for k in present if k in later), None)

    def _insert(self, mapping: MappingNode, key: str, text: str, order: Sequence[str]) -> None:
        self.ed.insert_pair(mapping, text, before=self._before(mapping, key, order))

    def _key_col(self, mapping: MappingNode) -> int:
        return self.ed.column(mapping.value[0][0].start_mark.index)

    def model_fields(self) -> None:
        spec, model, ed = self.spec, self.model, self.ed
        node = ed.get(self.root, "description")
        if node is not None and spec.description != model.description:
            ed.set_scalar(node, model.description)
            self.changes.append("description")
        self._tags()

    def _tags(self) -> None:
        want = _tags(self.model)
        have = dict(self.spec.tags)
        if want == have:
            return
        self.changes.append("tags")
        node = self.ed.get(self.root, "tags")
        if node is None:
            layout = self.ed.layout(None, 0, None)
            self._insert(self.root, "tags", _tags_text(want, layout), _MODEL_ORDER)
            return
        if not want:
            self.ed.delete_pair(self.root, "tags")
            return
        if not isinstance(node, MappingNode) or node.flow_style:
            order = [k for k in have if k in want] + sorted(k for k in want if k not in have)
            self.ed.replace_flow(node, {k: want[k] for k in order})
            return
        col = self._key_col(node)
        for key, _, value in self.ed.pairs(node):
            if key not in want:
                self.ed.delete_pair(node, key)
            elif want[key] != have.get(key):
                self.ed.set_scalar(value, want[key])
        for key in sorted(k for k in want if k not in have):
            self.ed.insert_pair(node, render_pair(key, want[key], col))

    def versions(self, candidates: Sequence[_Version], warnings: list[str]) -> int:
        """Edit the entries; returns how many entries the file declares afterwards."""
        spec, ed = self.spec, self.ed
        by_number = {v.number: v for v in candidates}
        bound = _match(spec, by_number, self.model.versions.keys(), self.lk)
        versions = _keep(self.model, candidates, set(bound.values()), warnings)
        declared = {v.number: v for v in versions}
        kept = {i: n for i, n in bound.items() if n in declared}
        claimed = set(kept.values())
        new = [v for v in versions if v.number not in claimed]
        removed = [v for v in spec.versions if v.index not in kept]
        for dv in removed:
            where = bound.get(dv.index)
            why = (
                f"version {where} cannot be declared"
                if where is not None
                else "its version is not in the registry"
            )
            self.changes.append(f"- versions[{dv.index}] ({dv.run_ref}): {why}")
        for v in new:
            self.changes.append(f"+ version {v.number}")
        node = ed.get(self.root, "versions")
        if not isinstance(node, SequenceNode) or node.flow_style or not node.value:
            self._replace_all(node, versions, kept, removed)
        else:
            self._edit_entries(node, declared, kept, new)
        return len(kept) + len(new)

    def _replace_all(
        self,
        node: Node | None,
        versions: Sequence[_Version],
        kept: Mapping[int, int],
        removed: Sequence[DesiredVersion],
    ) -> None:
        # `versions` absent, empty or a flow list: only an empty one can be rewritten
        if kept or (removed and versions):
            raise InputError(
                [
                    _problem(
                        self.ex.display,
                        "versions is a flow list ([...]); write it as a block list for "
                        "import to update it",
                    )
                ]
            )
        layout = Layout()
        items = "".join(
            render_item(
                _entry_pairs(v, self.spec.experiment, self.lk),
                layout.offset,
                layout,
                comments=_comments(v, self.stages),
            )
            for v in versions
        )
        if node is None:
            if items:
                self._insert(self.root, "versions", "versions:\n" + items, _MODEL_ORDER)
        elif items:
            self.ed.replace_with_block(self.root, "versions", items)
        elif removed:
            self.ed.replace_flow(node, [])

    def _edit_entries(
        self,
        seq: SequenceNode,
        by_number: Mapping[int, _Version],
        kept: Mapping[int, int],
        new: Sequence[_Version],
    ) -> None:
        ed, spec = self.ed, self.spec
        layout = ed.layout(seq, 0, None)
        dash = ed.dash_column(seq.value[0])
        for i, item in enumerate(seq.value):
            if i not in kept:
                ed.delete_item(seq, i)
            else:
                self._entry(i, item, spec.versions[i], by_number[kept[i]])
        # a new version goes before the first kept entry with a higher number
        slots: dict[int, list[_Version]] = {}
        for v in new:
            at = next(
                (i for i in sorted(kept) if kept[i] > v.number),
                len(seq.value),
            )
            slots.setdefault(at, []).append(v)
        for at, group in sorted(slots.items()):
            text = "".join(
                render_item(
                    _entry_pairs(v, spec.experiment, self.lk),
                    dash,
                    layout,
                    comments=_comments(v, self.stages),
                )
                for v in group
            )
            ed.insert_items(seq, at, text)

    def _entry(self, i: int, item: Node, dv: DesiredVersion, v: _Version) -> None:
        ed = self.ed
        if not isinstance(item, MappingNode) or item.flow_style:
            if _entry_differs(dv, v, self.spec.experiment, self.lk):
                raise InputError(
                    [
                        _problem(
                            self.ex.display,
                            f"versions[{i}] is a flow mapping ({{...}}); write it as a block "
                            "mapping for import to update it",
                        )
                    ]
                )
            return
        label = f"versions[{i}]"
        col = self._key_col(item)
        if self.lk.resolve(self.spec.experiment, dv) != v.run_id:
            key, value = _run_pair(v, self.spec.experiment, self.lk)
            old = "run" if dv.run is not None else "run_id"
            ed.replace_pair(item, old, key, value)
            if dv.run_dir is not None:
                ed.delete_pair(item, "run_dir")
            self.changes.append(f"{label}: {key} {value}")
        # v.path: None when the source does not say (then the entry must not give one),
        # "" for the run's root
        node = ed.get(item, "artifact_path")
        if node is not None and (v.path is None or (v.path == "" and dv.artifact_path)):
            ed.delete_pair(item, "artifact_path")
            self.changes.append(f"{label}: artifact_path")
        elif node is not None and v.path and dv.artifact_path != v.path:
            ed.set_scalar(node, v.path)
            self.changes.append(f"{label}: artifact_path")
        elif node is None and v.path:
            text = render_pair("artifact_path", v.path, col)
            self._insert(item, "artifact_path", text, _ENTRY_ORDER)
            self.changes.append(f"{label}: artifact_path")
        node = ed.get(item, "version")
        if node is not None and dv.version != v.number:
            ed.set_scalar(node, v.number)
            self.changes.append(f"{label}: version {v.number}")
        node = ed.get(item, "description")
        if node is not None and dv.description != v.description:
            ed.set_scalar(node, v.description)
            self.changes.append(f"{label}: description")
        self._aliases(item, dv, v, col, label)

    def _aliases(
        self, item: MappingNode, dv: DesiredVersion, v: _Version, col: int, label: str
    ) -> None:
        want = set(v.aliases)
        have = list(dv.aliases)
        order = [a for a in have if a in want] + sorted(want - set(have))
        if order == have:
            return
        self.changes.append(f"{label}: aliases")
        ed = self.ed
        node = ed.get(item, "aliases")
        if not order:
            ed.delete_pair(item, "aliases")
        elif node is None:
            self._insert(item, "aliases", render_pair("aliases", order, col), _ENTRY_ORDER)
        elif not isinstance(node, SequenceNode) or node.flow_style:
            ed.replace_flow(node, order)
        else:
            dash = ed.dash_column(node.value[0]) if node.value else col + 2
            for j, alias in enumerate(have):
                if alias not in want:
                    ed.delete_item(node, j)
            added = [a for a in order if a not in have]
            if added:
                text = "".join(f"{' ' * dash}- {_flow_scalar(a)}\n" for a in added)
                ed.insert_items(node, len(node.value), text)

    def result(self) -> str:
        return self.ed.result()


def _flow_scalar(value: str) -> str:
    return render_pair("k", [value], 0)[len("k: [") :].rstrip("\n")[:-1]


def _entry_differs(dv: DesiredVersion, v: _Version, experiment: str | None, lk: _Lookups) -> bool:
    return (
        lk.resolve(experiment, dv) != v.run_id
        or (dv.artifact_path_given and dv.artifact_path != (v.path or ""))
        or (not dv.artifact_path_given and bool(v.path))
        or (dv.version is not None and dv.version != v.number)
        or (dv.description is not None and dv.description != v.description)
        or set(dv.aliases) != set(v.aliases)
    )


def _problem(display: str, message: str) -> Problem:
    return Problem(Location(display), "", message)


# --------------------------------------------------------------------------- checking


def _check(
    files: Mapping[str, str], models: Mapping[str, ObservedModel], lk: _Lookups
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Load the texts as manifests and diff them against what was read.

    Returns (errors, warnings) by model name: errors when a text is not a valid
    manifest, warnings for whatever a diff would still plan.
    """
    errors: dict[str, list[str]] = {}
    warnings: dict[str, list[str]] = {}
    if not files:
        return errors, warnings
    with tempfile.TemporaryDirectory(prefix="regctl-import-") as tmp:
        root = Path(tmp)
        (root / "manifests").mkdir()
        paths: dict[str, Path] = {}
        for name, text in files.items():
            path = root / "manifests" / f"{len(paths)}.yaml"
            path.write_text(text, encoding="utf-8")
            paths[name] = path
        desired: list[DesiredModel] = []
        for name, path in paths.items():
            try:
                desired.extend(load_manifests(root, [path], check_paths=False).models)
            except InputError as err:
                errors[name] = [
                    p.message if not p.field else f"{p.field}: {p.message}" for p in err.problems
                ]
    observed = lk.observed(models)
    for m in desired:
        try:
            plan = diff(DesiredState((m,)), observed, complete=False)
        except PlanError as err:
            warnings[m.name] = [f"{p.field}: {p.message}" for p in err.problems]
            continue
        left = [
            c for c in plan.changes if not (isinstance(c, SetModelTag) and c.key == MANAGED_TAG)
        ]
        if left:
            warnings[m.name] = [
                "diff would still plan: "
                + json.dumps({k: v for k, v in c.to_json().items() if k != "model"}, sort_keys=True)
                for c in left
            ]
    return errors, warnings


def _check_set(
    planned: Mapping[str, tuple[Path, str, str | None, ImportedModel]],
    existing: Mapping[str, _Existing],
    errors: Mapping[str, list[str]],
    repo: Path,
) -> None:
    """Refuse, before anything is written, a folder of manifests that would not load.

    Each text was checked alone (`_check`); what `validate` also refuses is a set that
    does not hold together, such as two models whose names differ only in case (MLflow
    keeps both). The folder as import would leave it, the files it keeps as they are
    included, is loaded as one set: any problem raises InputError naming the files and
    models, and nothing is written to disk or to the registry.
    """
    final = {ex.display: ex.text for ex in existing.values()}
    for name, (_, shown, text, _entry) in planned.items():
        if text is not None and name not in errors:
            final[shown] = text
    try:
        load_manifest_texts(final, repo)
    except InputError as err:
        raise InputError(
            dataclasses.replace(
                p,
                message=f"{p.message} (in the manifests import would write; nothing was written)",
            )
            for p in err.problems
        ) from None


# --------------------------------------------------------------------------- use case


def _new_path(out_dir: Path, name: str, taken: set[str]) -> Path:
    """`<model>.yaml`, made safe as a file name and unique (case-insensitively)."""
    base = _UNSAFE_FILE_CHARS.sub("_", name).strip("._")[:200] or "model"
    candidate, n = f"{base}.yaml", 1
    while candidate.casefold() in taken:
        n += 1
        candidate = f"{base}-{n}.yaml"
    taken.add(candidate.casefold())
    return out_dir / candidate


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def import_models(
    reader: ImportReader, names: Sequence[str] | None, out_dir: Path, repo: Path
) -> ImportReport:
    """Write (or update) one manifest per registered model in `out_dir`.

    `names` limits the import to those models (all of them when None or empty); a name
    the registry does not hold is an error and nothing is written. Every manifest in
    `out_dir` must be valid first: import updates the one that declares a model.
    Reads the registry in a few paginated requests; writes nothing to it.
    """
    wanted = sorted(set(names)) if names else None
    found = reader.search_models(wanted)
    if wanted is not None:
        missing = [n for n in wanted if n not in found]
        if missing:
            raise RegctlError(
                "no registered model named "
                + ", ".join(repr(n) for n in missing)
                + "; nothing was written"
            )
    skipped: list[str] = []
    models: dict[str, ObservedModel] = {}
    for name, m in sorted(found.items()):
        if is_lease_model(name):
            skipped.append(f"{name}: regctl's apply lock, not a model")
        elif name == LEDGER_MODEL:
            skipped.append(f"{name}: regctl's ledger of proven runs, not a model")
        elif m.tags.get(PROMPT_TAG) == "true":
            skipped.append(f"{name}: an MLflow prompt, not a model")
        else:
            models[name] = m
    existing = _existing_manifests(out_dir, repo)
    lk = _read(reader, models, existing)
    orphans = [] if wanted is not None else sorted(set(existing) - set(found))
    schema_ref = _schema_ref(out_dir, repo)
    taken = {p.name.casefold() for p in out_dir.iterdir()} if out_dir.is_dir() else set()

    planned: dict[str, tuple[Path, str, str | None, ImportedModel]] = {}
    warnings: dict[str, list[str]] = {}
    errors: dict[str, list[str]] = {}
    stages: list[StageNote] = []
    for name, model in models.items():
        notes = _stage_notes(model)
        stages.extend(notes)
        by_number = {n.version: n for n in notes}
        warned = warnings.setdefault(name, [])
        candidates = _candidates(model, lk, warned)
        ex = existing.get(name)
        text: str | None
        if ex is None:
            versions = _keep(model, candidates, (), warned)
            path = _new_path(out_dir, name, taken)
            text = _new_manifest(model, versions, lk, by_number, schema_ref)
            shown = display_path(path, repo)
            entry = ImportedModel(name, shown, "created", len(versions), managed=model.managed)
            planned[name] = (path, shown, text, entry)
            continue
        try:
            update = _Update(ex, model, lk, by_number)
            update.model_fields()
            count = update.versions(candidates, warned)
            text = update.result() if update.ed.changed else None
        except (InputError, ValueError) as exc:
            errors[name] = [str(exc)]
            planned[name] = (
                ex.path,
                ex.display,
                None,
                ImportedModel(name, ex.display, "failed", 0, managed=model.managed),
            )
            continue
        status: Literal["updated", "unchanged"] = "updated" if text is not None else "unchanged"
        entry = ImportedModel(
            name, ex.display, status, count, tuple(update.changes), managed=model.managed
        )
        planned[name] = (ex.path, ex.display, text, entry)

    texts = {
        name: (text if text is not None else existing[name].text)
        for name, (_, _, text, entry) in planned.items()
        if entry.status != "failed"
    }
    bad, residue = _check(texts, models, lk)
    for name, problems in bad.items():
        errors[name] = [f"the manifest import made is not valid: {p}" for p in problems]
    for name, found_warnings in residue.items():
        warnings.setdefault(name, []).extend(found_warnings)
    _check_set(planned, existing, errors, repo)

    results = []
    for name, (path, shown, text, entry) in planned.items():
        if name in errors:
            results.append(
                ImportedModel(name, shown, "failed", 0, entry.changes, managed=entry.managed)
            )
            continue
        if text is not None:
            _write(path, text)
        results.append(entry)
    for name in orphans:
        warnings.setdefault(name, []).append(
            f"{name}: {existing[name].display} declares it, but the registry does not hold "
            "it: apply would create it"
        )
    return ImportReport(
        models=tuple(results),
        stages=tuple(stages),
        warnings=tuple(w for name in sorted(warnings) for w in warnings[name]),
        errors=tuple(f"{name}: {e}" for name in sorted(errors) for e in errors[name]),
        skipped=tuple(skipped),
    )


def render_report(
    report: ImportReport, *, adopted: Sequence[str] = (), draft: str | None = None
) -> str:
    """The text `regctl import` prints; `draft` names an output folder that is not the
    repository's `manifests/` (its manifests are not in effect)."""
    lines = []
    for m in report.models:
        count = f"{m.versions} version{'s' if m.versions != 1 else ''}"
        if m.status == "failed":
            lines.append(f"failed     {m.file}: {m.name}")
        elif m.status == "updated":
            lines.append(f"updated    {m.file}: {m.name} ({count}): " + "; ".join(m.changes))
        else:
            lines.append(f"{m.status:<10} {m.file}: {m.name} ({count})")
    lines += [f"skipped: {s}" for s in report.skipped]
    lines += [f"stage: {s}" for s in report.stages]
    lines += [f"warning: {w}" for w in report.warnings]
    lines += [f"error: {e}" for e in report.errors]
    if adopted:
        lines.append(
            f"Marked {len(adopted)} model(s) as managed by regctl ({MANAGED_TAG}=true): "
            + ", ".join(adopted)
        )
    pending = [n for n in report.unmanaged if n not in set(adopted)]
    if pending:
        lines.append(
            "Not marked as managed (the manifests are a draft outside manifests/): "
            + ", ".join(pending)
        )
    counts = {s: sum(1 for m in report.models if m.status == s) for s in _STATUSES}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    lines.append(f"Imported {len(report.models)} model(s): {summary or 'none'}.")
    if draft is not None:
        lines.append(
            f"Next: review the drafts in {draft} and move them to manifests/ to put them in effect."
        )
    elif report.warnings:
        lines.append("Next: `regctl diff` shows what the warnings above leave to change.")
    elif not report.errors:
        lines.append("Next: `regctl diff` shows no changes.")
    return "".join(escape.text(line) + "\n" for line in lines)  # names are the registry's


_STATUSES = ("created", "updated", "unchanged", "failed")


def import_command(
    settings: Settings,
    names: Sequence[str],
    out: Path | None,
    *,
    adopt: bool | None = None,
) -> tuple[str, int]:
    """`regctl import [MODEL...] [--out DIR]`: (output, exit code).

    Writes into `out` (default: the repository's `manifests/`). When the manifests land
    in the repository's `manifests/` (or `adopt` is True), the imported models that the
    registry does not mark as managed yet get the tag `regctl.managed=true`, one request
    each, after every file is written: regctl owns them from now on, and `regctl diff`
    is empty. Manifests written elsewhere are a draft: nothing is tagged.
    """
    from regctl.config import open_registry

    default = settings.repo / "manifests"
    out_dir = (out if out is not None else default).resolve()
    in_repo = out_dir == default.resolve()
    registry = open_registry(settings)
    adopted: list[str] = []
    try:
        if not isinstance(registry, ImportReader):
            raise RegctlError("this registry adapter cannot look up runs for import")
        report = import_models(registry, list(names) or None, out_dir, settings.repo)
        if in_repo if adopt is None else adopt:
            for name in report.unmanaged:
                registry.set_model_tag(name, MANAGED_TAG, "true")
                adopted.append(name)
    finally:
        registry.close()
    draft = None if in_repo else display_path(out_dir, settings.repo)
    text = render_report(report, adopted=adopted, draft=draft)
    return text, int(report.exit_code)
