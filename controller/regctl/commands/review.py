"""Policy review of a plan (`regctl check`, the PR gate, apply's gate): the subjects the
policies judge, the incumbents they compare against, and the verdict.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from regctl.adapters import git as gitinfo
from regctl.adapters.manifests import (
    load_manifest_texts,
)
from regctl.commands.planning import Planned, comparable, make_plan
from regctl.config import (
    Settings,
)
from regctl.core.binding import source_path
from regctl.core.diff import artifact_uris
from regctl.core.model import (
    PROVENANCE_TAG,
    DesiredModel,
    DesiredState,
    DesiredVersion,
    ObservedModel,
)
from regctl.core.plan import (
    Binding,
    Plan,
    SetAlias,
)
from regctl.engine.proof import ProofReader
from regctl.errors import (
    RegctlError,
)
from regctl.policy.comparison import (
    alias_comparison,
    chart_versions,
    charted_metric,
    metric_series,
)
from regctl.policy.evaluation import evaluate
from regctl.policy.values import Comparison, MetricSeries, PolicyReport, Review, Subject
from regctl.ports import RegistryReader, runs_by_name

if TYPE_CHECKING:
    pass


def _touched(plan: Plan) -> set[tuple[str, int]]:
    """(model, version number) of the versions a plan creates, promotes or re-describes."""
    return {(c.model, n) for c in plan.changes if (n := c.touched_version()) is not None}


def subjects(planned: Planned, reader: RegistryReader, *, only_touched: bool) -> list[Subject]:
    """The versions of the desired state as policies see them.

    Params and metrics come from MLflow when the run is logged, else from its run
    directory through the same reader sync uses; neither gives None (rules fail closed).
    """
    bound = {(b.model, b.entry): b for b in planned.plan.bindings}
    touched = _touched(planned.plan)
    records = {i.key: i.record for i in planned.items}
    wanted: list[tuple[str, DesiredVersion, int | None, str | None, str]] = []
    for m in planned.desired.models:
        for v in m.versions:
            b = bound.get((m.name, v.index))
            if only_touched and (b is None or (m.name, b.version) not in touched):
                continue
            wanted.append(
                (m.name, v, b.version if b else None, b.run_id if b else None, m.experiment or "")
            )
    data = reader.run_data([rid for *_, rid, _ in wanted if rid])
    out = []
    for model, v, number, run_id, experiment in wanted:
        current = planned.observed.models.get(model)
        description = v.description
        if (
            description is None
            and current is not None
            and number is not None
            and number in current.versions
        ):
            description = current.versions[number].description
        logged = data.get(run_id) if run_id else None
        record = records.get((experiment, v.run or ""))
        digest = record.digest if record is not None else None
        if logged is not None:
            params, metrics, source = logged.params, logged.metrics, "mlflow"
            name = logged.ref.name or v.run_ref
            # only a run directory gives a digest a waiver may bind to: a ledger entry is
            # anyone's to write, so a run taken by run_id is waived by its run_id
            home = planned.observed.experiments.get(experiment)
            in_experiment = home is not None and logged.ref.experiment_id == home
        elif record is not None:
            params, metrics, source = record.params, record.metrics, "run_dir"
            name = record.run_name
            in_experiment = True  # sync logs it in the model's experiment
        else:
            params, metrics, source, name = None, None, "none", v.run or v.run_id or "?"
            in_experiment = False
        out.append(
            Subject(
                model,
                name,
                run_id,
                number,
                v.aliases,
                description,
                params,
                metrics,
                source,
                str(v.location),
                digest=digest,
                in_experiment=in_experiment,
            )
        )
    return out


_APPLIED_COMMIT_RE = re.compile(r"^commit ([0-9a-f]{7,64}) by ")


def applied_commit(model: ObservedModel) -> str | None:
    """The commit whose manifests the last apply that changed `model` applied (its
    `regctl.applied` tag), or None (no tag, not in git, uncommitted changes)."""
    m = _APPLIED_COMMIT_RE.match(model.tags.get(PROVENANCE_TAG, ""))
    return m.group(1) if m else None


def base_models(
    settings: Settings, planned: Planned, base: str | None
) -> dict[str, list[tuple[str, DesiredModel | None]]]:
    """model -> [(revision, the model as that revision's manifests declare it, or None)].

    The holder of an alias "before the change" is what reviewed manifests declared:
    - with `--base REF` (a pull request's target branch): REF;
    - else every revision that can tell, and `compare_to` must hold against each: the
      commit the model's last apply recorded (`regctl.applied`), when it is HEAD or an
      ancestor of it (the tag is anyone's to write: a commit off this history is ignored),
      and the revision before the change in this checkout (HEAD when the working tree's
      manifest differs from HEAD's, else HEAD's first parent).
    An empty list means that no revision can be read (no git history): callers then trust
    the registry's holder only when the manifests declare it.
    """
    names = [m.name for m in planned.desired.models]
    if base is not None:
        state = _state_at(settings, base)
        return {n: [(base, state.model(n))] if state is not None else [] for n in names}
    states: dict[str, DesiredState | None] = {}

    def at(ref: str) -> DesiredState | None:
        if ref not in states:
            states[ref] = _state_at(settings, ref)
        return states[ref]

    head = at("HEAD")
    out: dict[str, list[tuple[str, DesiredModel | None]]] = {}
    for m in planned.desired.models:
        revisions: list[tuple[str, DesiredModel | None]] = []
        current = planned.observed.models.get(m.name)
        commit = applied_commit(current) if current is not None else None
        if commit is not None and gitinfo.is_ancestor(settings.repo, commit, "HEAD"):
            state = at(commit)
            if state is not None:
                revisions.append((commit[:12], state.model(m.name)))
        if head is not None:
            at_head = head.model(m.name)
            if at_head is not None and comparable(at_head) == comparable(m):
                parent = at("HEAD^")
                if parent is not None:
                    revisions.append(("HEAD^", parent.model(m.name)))
            else:
                revisions.append(("HEAD", at_head))
        out[m.name] = revisions
    return out


def _state_at(settings: Settings, ref: str) -> DesiredState | None:
    """The manifests at a git revision, or None when that revision cannot be read."""
    try:
        texts = gitinfo.files_at(settings.repo, ref, "manifests")
        return load_manifest_texts(texts, settings.repo, label=f"{ref[:12]}:")
    except RegctlError:
        return None


@dataclass(frozen=True, slots=True)
class DeclaredHolder:
    """Which version held an alias before the change, as one base revision declares it.

    `known` False: nothing trustworthy is known (`why` says why): a `compare_to` rule then
    fails closed. Otherwise `version` and/or `run_id` name the holder: a version whose run
    is gone has no run id, a declared run whose version was deleted by hand no version.
    """

    known: bool
    version: int | None = None
    run_id: str | None = None
    why: str = ""


def declared_holders(
    settings: Settings, planned: Planned, reader: RegistryReader, base: str | None
) -> dict[tuple[str, str], tuple[DeclaredHolder, ...]]:
    """(model, alias) -> the holders the base revisions declare (see `base_models`), for
    every alias the desired state sets; an alias no base declares a holder of is absent.
    SPEC section 4: `compare_to` judges against them, never a holder set by hand."""
    bases = base_models(settings, planned, base)
    bound = {(b.model, b.entry): b for b in planned.plan.bindings}
    uris = artifact_uris(planned.observed)
    declared_versions: dict[str, set[int]] = {}
    for (name, _), b in bound.items():
        declared_versions.setdefault(name, set()).add(b.version)
    out: dict[tuple[str, str], tuple[DeclaredHolder, ...]] = {}
    for m in planned.desired.models:
        current = planned.observed.models.get(m.name)
        revisions = bases.get(m.name, [])
        aliases = {a for v in m.versions for a in v.aliases}
        for alias in sorted(aliases):
            found: list[DeclaredHolder] = []
            for _label, old in revisions:
                holder = _holder_in_base(m, old, alias, current, bound, reader, uris)
                if holder is not None and holder not in found:
                    found.append(holder)
            if not revisions:
                # No readable base: the registry's holder counts only when the manifests
                # declare that version; a holder made by hand is never the incumbent.
                number = current.aliases.get(alias) if current is not None else None
                declared = declared_versions.get(m.name, set())
                if number is not None and number in declared and current is not None:
                    found.append(DeclaredHolder(True, number, current.versions[number].run_id))
                elif number is not None:
                    found.append(
                        DeclaredHolder(
                            False,
                            why=f"the registry's holder v{number} is not a version the "
                            "manifests declare (drift), and no base revision can be read (no "
                            "git history here): pass --base REF, or fetch the history",
                        )
                    )
            if found:
                out[(m.name, alias)] = tuple(found)
    return out


def _same_entry(
    v: DesiredVersion, experiment: str | None, entry: DesiredVersion, old_experiment: str | None
) -> bool:
    """The same manifest entry in two revisions: the same run (a run id, or a name in the
    same experiment) and artifact path."""
    if v.artifact_path != entry.artifact_path:
        return False
    if entry.run_id is not None:
        return v.run_id == entry.run_id
    return v.run == entry.run and experiment == old_experiment


def _holder_in_base(
    model: DesiredModel,
    old: DesiredModel | None,
    alias: str,
    current: ObservedModel | None,
    bound: Mapping[tuple[str, int], Binding],
    reader: RegistryReader,
    uris: Mapping[str, str],
) -> DeclaredHolder | None:
    """The holder one base revision declares; None when it declares none (a new alias)."""
    entry = next((v for v in (old.versions if old else ()) if alias in v.aliases), None)
    if entry is None or old is None:
        return None
    versions = current.versions if current is not None else {}
    # The same entry in today's manifests, bound to an existing version: that version.
    for v in model.versions:
        if _same_entry(v, model.experiment, entry, old.experiment):
            b = bound.get((model.name, v.index))
            if b is not None and not b.created and b.version in versions:
                return DeclaredHolder(True, b.version, versions[b.version].run_id)
            if b is not None and b.created and alias in v.aliases:
                # The same entry holds the alias in the base and now, and its version is
                # registered by this plan (the first apply of reviewed manifests, e.g. on
                # a fresh registry): the alias does not move, so there is no incumbent.
                return None
    if entry.version is not None and entry.version in versions:
        return DeclaredHolder(True, entry.version, versions[entry.version].run_id)
    run_ids: set[str] = set()
    if entry.run_id is not None:
        run_ids = {entry.run_id}
    elif entry.run is not None and old.experiment is not None:
        experiments = reader.experiments([old.experiment])
        found = runs_by_name(reader, experiments, {old.experiment: {entry.run}})
        run_ids = {r.run_id for r in found.get((old.experiment, entry.run), ())}
    for number, ov in sorted(versions.items()):
        path = source_path(ov.source, ov.run_id, uris.get(ov.run_id))
        if ov.run_id in run_ids and path == entry.artifact_path:
            return DeclaredHolder(True, number, ov.run_id)
    if len(run_ids) == 1:
        # its version was deleted by hand (or never registered), its run is still there:
        # judge against the run's data, never "no incumbent"
        (rid,) = run_ids
        return DeclaredHolder(True, None, rid)
    return DeclaredHolder(
        False,
        why=f"the base manifests declare {entry.run_ref} as the holder of {alias}, but neither "
        "its version nor a single run of it can be found",
    )


def incumbents(
    planned: Planned,
    reader: RegistryReader,
    holders: Mapping[tuple[str, str], tuple[DeclaredHolder, ...]],
) -> dict[tuple[str, str], tuple[Subject, ...]]:
    """(model, alias) -> the declared holders before the change, as policies see them.

    An unknown holder is a Subject of source `unknown` whose location says why, so that a
    `compare_to` rule fails closed with that reason."""
    data = reader.run_data({h.run_id for hs in holders.values() for h in hs if h.run_id})
    out: dict[tuple[str, str], tuple[Subject, ...]] = {}
    for (model, alias), found in holders.items():
        current = planned.observed.models.get(model)
        subjects_: list[Subject] = []
        for h in found:
            if not h.known:
                subjects_.append(
                    Subject(
                        model, "(unknown)", None, None, (alias,), None, None, None, "unknown", h.why
                    )
                )
                continue
            logged = data.get(h.run_id) if h.run_id else None
            ov = current.versions.get(h.version) if current and h.version is not None else None
            where = (
                f"registry: {model} version {h.version}"
                if h.version is not None
                else f"run {h.run_id} (its version is gone from the registry)"
            )
            subjects_.append(
                Subject(
                    model,
                    logged.ref.name if logged else (h.run_id or "?"),
                    h.run_id,
                    h.version,
                    (alias,),
                    ov.description if ov is not None else None,
                    logged.params if logged else None,
                    logged.metrics if logged else None,
                    "mlflow" if logged else "none",
                    where,
                )
            )
        out[(model, alias)] = tuple(subjects_)
    return out


CHART_VERSIONS = 20
"""At most this many versions in an alias move's chart: the newest, the candidate and the
incumbent (a pull-request comment stays small, and so do the reads)."""


def _chart_runs(planned: Planned, model: str) -> dict[int, str | None]:
    """version -> run id of the versions a chart of `model` may show: the registry's
    versions whose run is known and the versions the manifests declare (None: the run is
    not logged yet, and the plan's subjects have its data from its run directory)."""
    current = planned.observed.models.get(model)
    runs: dict[int, str | None] = {}
    if current is not None:
        runs.update({n: v.run_id for n, v in current.versions.items() if v.run_id})
    for b in planned.plan.bindings:
        if b.model == model:
            runs[b.version] = b.run_id or runs.get(b.version)
    return runs


def series(
    planned: Planned,
    reader: RegistryReader,
    known: Mapping[tuple[str, int], Subject],
    moves: Sequence[tuple[str, str | None, int, int | None]],
) -> list[MetricSeries | None]:
    """For each alias move (model, charted metric or None, candidate, incumbent version),
    the metric across the model's versions (at most CHART_VERSIONS of them).

    The data of a version comes from `known` (the subjects and incumbents review has
    read) when it is there, else from its run: the runs no subject covers are read in
    one `run_data` call for every move (a batched search against a server).
    """
    picked: list[tuple[dict[int, str | None], list[int]] | None] = []
    for model, metric, candidate, incumbent in moves:
        if metric is None:
            picked.append(None)
            continue
        runs = _chart_runs(planned, model)
        marked = [candidate] if incumbent is None else [candidate, incumbent]
        picked.append((runs, chart_versions(runs, marked, CHART_VERSIONS)))
    unread = {
        rid
        for (model, *_), pick in zip(moves, picked, strict=True)
        if pick is not None
        for n in pick[1]
        if (model, n) not in known and (rid := pick[0][n]) is not None
    }
    data = reader.run_data(sorted(unread)) if unread else {}
    out: list[MetricSeries | None] = []
    for (model, metric, candidate, incumbent), pick in zip(moves, picked, strict=True):
        if pick is None or metric is None:
            out.append(None)
            continue
        runs, chosen = pick
        values: dict[int, Mapping[str, float] | None] = {}
        for n in chosen:
            subject = known.get((model, n))
            rid = runs[n]
            logged = data.get(rid) if rid is not None else None
            values[n] = (
                subject.metrics if subject is not None else logged.metrics if logged else None
            )
        out.append(
            metric_series(metric, values, candidate=candidate, incumbent=incumbent, total=len(runs))
        )
    return out


def review(
    settings: Settings,
    planned: Planned,
    reader: RegistryReader,
    *,
    only_touched: bool = True,
    base: str | None = None,
    charts: bool = False,
) -> Review:
    """Judge the desired state (or just the versions the plan touches) against policy.

    With `charts`, each alias move's comparison also carries its primary metric across
    the model's versions (`Comparison.series`, the pull-request comment's chart), which may
    cost one more batched read of runs; apply and check show no chart and skip it.
    """
    subs = subjects(planned, reader, only_touched=only_touched)
    holders = incumbents(planned, reader, declared_holders(settings, planned, reader, base))
    report = evaluate(planned.policies, subs, holders, dt.datetime.now(dt.UTC).date())
    by_version = {(s.model, s.version): s for s in subs}
    known: dict[tuple[str, int], Subject] = {
        (h.model, h.version): h
        for hs in holders.values()
        for h in hs
        if h.version is not None and h.source != "unknown"
    }
    known.update({(s.model, s.version): s for s in subs if s.version is not None})
    comparisons = []
    moves: list[tuple[str, str | None, int, int | None]] = []
    for c in planned.plan.changes:
        if not isinstance(c, SetAlias):
            continue
        cand = by_version.get((c.model, c.new))
        if cand is None:
            continue
        declared = holders.get((c.model, c.alias), ())
        inc = next((h for h in declared if h.source != "unknown"), None)
        primary = (cand.params or {}).get("primary_metric", "")
        rows = tuple(alias_comparison(cand, inc, primary))
        comparisons.append(
            Comparison(c.model, c.alias, cand.run, inc.run if inc else None, primary, rows)
        )
        moves.append((c.model, charted_metric(rows, primary), c.new, inc.version if inc else None))
    if not charts:
        return Review(report, tuple(comparisons))
    drawn = series(planned, reader, known, moves)
    return Review(
        report,
        tuple(dataclasses.replace(c, series=s) for c, s in zip(comparisons, drawn, strict=True)),
    )


def check(settings: Settings, registry: ProofReader, models: Sequence[str] = ()) -> PolicyReport:
    """Policy verdicts for every version of the desired state."""
    planned = make_plan(settings, registry, models)
    return review(settings, planned, registry, only_touched=False).report
