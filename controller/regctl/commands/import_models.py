"""`regctl import`: write manifests from the live registry (onboarding an existing one).

Right after an import, `regctl diff` plans nothing: each manifest says exactly what the
registry holds, as far as a manifest can say it. Every file is checked before it is
written: it must load like any manifest, and the pure `diff` of it against what was
read must be empty (the `regctl.managed` tag aside, which `import_command` sets).

The use case lives here: read the registry and the output folder, plan each model's
manifest, check every text, then write. The pure decisions are in
`regctl.core.importplan` (and `regctl.core.binding`, shared with `diff`), the texts in
`regctl.commands.importing`, the report in `regctl.render.importing`.

Decisions taken:

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

import dataclasses
import json
import tempfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from regctl.adapters.manifests import (
    display_path,
    load_manifest_texts,
    load_manifests,
    yaml_files,
)
from regctl.commands.importing import Update, new_manifest, schema_ref, write_atomic
from regctl.commands.printed import Printed
from regctl.core.diff import diff
from regctl.core.importplan import (
    Declarable,
    Existing,
    ImportedModel,
    ImportReport,
    Lookups,
    StageNote,
    keep_versions,
    live_versions,
    new_path,
    skip_reason,
    stage_notes,
)
from regctl.core.model import (
    MANAGED_TAG,
    DesiredModel,
    DesiredState,
    ObservedModel,
    RunRef,
)
from regctl.core.plan import SetModelTag
from regctl.errors import InputError, PlanError, RegctlError
from regctl.ports import RegistryReader, runs_by_name
from regctl.render.importing import render_report

if TYPE_CHECKING:
    from regctl.config import Settings


@runtime_checkable
class ImportReader(RegistryReader, Protocol):
    """What import reads beyond planning: where each run lives."""

    def run_origins(self, run_ids: Collection[str]) -> dict[str, tuple[RunRef, str]]:
        """Active runs by id, each with its experiment's name; missing ids are absent."""
        ...


# --------------------------------------------------------------------------- reading


def _existing_manifests(out_dir: Path, repo: Path) -> dict[str, Existing]:
    """Model name -> the manifest in `out_dir` that declares it (all must be valid)."""
    files = yaml_files(out_dir, repo)  # what the loader reads; anything else is an error
    if not files:
        return {}
    state = load_manifests(repo, files, check_paths=False)
    by_display = {display_path(p, repo): p for p in files}
    out = {}
    for m in state.models:
        path = by_display[m.location.file]
        out[m.name] = Existing(path, m.location.file, path.read_text(encoding="utf-8"), m)
    return out


def _read(
    reader: ImportReader, models: Mapping[str, ObservedModel], existing: Mapping[str, Existing]
) -> Lookups:
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
    return Lookups(origins, runs, experiments)


# --------------------------------------------------------------------------- checking


def _check(
    files: Mapping[str, str], models: Mapping[str, ObservedModel], lk: Lookups
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
    existing: Mapping[str, Existing],
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


_Planned = tuple[Path, str, str | None, ImportedModel]
"""One model's manifest: its file, as shown, the text to write (None: leave the file as
it is) and the report line."""


@dataclass
class _Plans:
    """What planning found, by model name, before anything is checked or written."""

    planned: dict[str, _Planned] = field(default_factory=dict)
    warnings: dict[str, list[str]] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)
    stages: list[StageNote] = field(default_factory=list)


def _select(found: Mapping[str, ObservedModel]) -> tuple[dict[str, ObservedModel], list[str]]:
    """The models to import by name, and why the others are skipped, in name order."""
    skipped: list[str] = []
    models: dict[str, ObservedModel] = {}
    for name, m in sorted(found.items()):
        why = skip_reason(name, m)
        if why is None:
            models[name] = m
        else:
            skipped.append(why)
    return models, skipped


def _plan_new(
    name: str,
    model: ObservedModel,
    candidates: Sequence[Declarable],
    lk: Lookups,
    stages: Mapping[int, StageNote],
    warned: list[str],
    where: tuple[Path, Path, str, set[str]],
) -> _Planned:
    """A new file for `model`; `where`: (out_dir, repo, schema reference, names taken)."""
    out_dir, repo, schema, taken = where
    versions = keep_versions(model, candidates, (), warned)
    path = new_path(out_dir, name, taken)
    text = new_manifest(model, versions, lk, stages, schema)
    shown = display_path(path, repo)
    entry = ImportedModel(name, shown, "created", len(versions), managed=model.managed)
    return (path, shown, text, entry)


def _plan_update(
    name: str,
    ex: Existing,
    model: ObservedModel,
    candidates: Sequence[Declarable],
    lk: Lookups,
    stages: Mapping[int, StageNote],
    warned: list[str],
    errors: dict[str, list[str]],
) -> _Planned:
    """The edits to the file that declares `model` already; a failure goes to `errors`."""
    text: str | None
    try:
        update = Update(ex, model, lk, stages)
        update.model_fields()
        count = update.versions(candidates, warned)
        text = update.result() if update.ed.changed else None
    except (InputError, ValueError) as exc:
        errors[name] = [str(exc)]
        return (
            ex.path,
            ex.display,
            None,
            ImportedModel(name, ex.display, "failed", 0, managed=model.managed),
        )
    status: Literal["updated", "unchanged"] = "updated" if text is not None else "unchanged"
    entry = ImportedModel(
        name, ex.display, status, count, tuple(update.changes), managed=model.managed
    )
    return (ex.path, ex.display, text, entry)


def _plan(
    models: Mapping[str, ObservedModel],
    existing: Mapping[str, Existing],
    lk: Lookups,
    out_dir: Path,
    repo: Path,
) -> _Plans:
    """Each model's manifest text, with its stage notes and warnings."""
    schema = schema_ref(out_dir, repo)
    taken = {p.name.casefold() for p in out_dir.iterdir()} if out_dir.is_dir() else set()
    plans = _Plans()
    for name, model in models.items():
        notes = stage_notes(model)
        plans.stages.extend(notes)
        by_number = {n.version: n for n in notes}
        warned = plans.warnings.setdefault(name, [])
        candidates = live_versions(model, lk, warned)
        ex = existing.get(name)
        if ex is None:
            where = (out_dir, repo, schema, taken)
            plans.planned[name] = _plan_new(name, model, candidates, lk, by_number, warned, where)
        else:
            plans.planned[name] = _plan_update(
                name, ex, model, candidates, lk, by_number, warned, plans.errors
            )
    return plans


def _verify(
    plans: _Plans,
    existing: Mapping[str, Existing],
    models: Mapping[str, ObservedModel],
    lk: Lookups,
    repo: Path,
) -> None:
    """Check every text (`_check`) and the folder as one set (`_check_set`)."""
    errors, warnings = plans.errors, plans.warnings
    texts = {
        name: (text if text is not None else existing[name].text)
        for name, (_, _, text, entry) in plans.planned.items()
        if entry.status != "failed"
    }
    bad, residue = _check(texts, models, lk)
    for name, problems in bad.items():
        errors[name] = [f"the manifest import made is not valid: {p}" for p in problems]
    for name, found_warnings in residue.items():
        warnings.setdefault(name, []).extend(found_warnings)
    _check_set(plans.planned, existing, errors, repo)


def _write_all(plans: _Plans) -> list[ImportedModel]:
    """Write the texts of the models without errors; the report lines, failures included."""
    results = []
    for name, (path, shown, text, entry) in plans.planned.items():
        if name in plans.errors:
            results.append(
                ImportedModel(name, shown, "failed", 0, entry.changes, managed=entry.managed)
            )
            continue
        if text is not None:
            write_atomic(path, text)
        results.append(entry)
    return results


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
    models, skipped = _select(found)
    existing = _existing_manifests(out_dir, repo)
    lk = _read(reader, models, existing)
    orphans = [] if wanted is not None else sorted(set(existing) - set(found))
    plans = _plan(models, existing, lk, out_dir, repo)
    _verify(plans, existing, models, lk, repo)
    results = _write_all(plans)
    warnings, errors = plans.warnings, plans.errors
    for name in orphans:
        warnings.setdefault(name, []).append(
            f"{name}: {existing[name].display} declares it, but the registry does not hold "
            "it: apply would create it"
        )
    return ImportReport(
        models=tuple(results),
        stages=tuple(plans.stages),
        warnings=tuple(w for name in sorted(warnings) for w in warnings[name]),
        errors=tuple(f"{name}: {e}" for name in sorted(errors) for e in errors[name]),
        skipped=tuple(skipped),
    )


def import_command(
    settings: Settings,
    names: Sequence[str],
    out: Path | None,
    *,
    adopt: bool | None = None,
) -> Printed:
    """`regctl import [MODEL...] [--out DIR]`: the report, and its exit code.

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
    return Printed(text, int(report.exit_code))
