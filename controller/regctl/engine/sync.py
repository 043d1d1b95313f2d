"""Sync: log the run directories that manifests reference, one MLflow run each.

The key of a run is (experiment, run name), but a name is not proof: a logged run of that
name is the directory's run only when its params, metrics and files (names, sizes, sha256)
equal the directory's (`regctl.engine.proof`); otherwise sync refuses, naming the run and what
differs (path params only warn, they differ between machines). A FINISHED, proven run is
never touched again; a run left RUNNING or FAILED by an interrupted sync, whose content so
far is the directory's, is resumed by uploading only the files that are missing. Every
check happens before the first write.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from regctl.adapters.rundir import read_run_dir
from regctl.core.diff import PendingRun
from regctl.core.model import LEDGER_MODEL, DesiredState, RunRef, ledger_entries
from regctl.core.runs import RunFile, RunRecord
from regctl.engine.proof import LedgerWriter, Proof, digests_of, prove, record, same_metric
from regctl.errors import InputError, Location, Problem, RegctlError
from regctl.ports import ArtifactReader, RegistryReader, RunData, TrackingWriter, runs_by_name


class SyncStore(RegistryReader, TrackingWriter, ArtifactReader, LedgerWriter, Protocol):
    """What sync needs: lookups, artifact reads (proofs), tracking and ledger writes."""


@dataclass(frozen=True, slots=True)
class SyncItem:
    """A run directory referenced by a manifest entry."""

    experiment: str
    record: RunRecord
    display: str
    location: Location

    @property
    def key(self) -> tuple[str, str]:
        return (self.experiment, self.record.run_name)


@dataclass
class SyncReport:
    """What sync did. `run_ids` maps (experiment, run name) to the run for every item;
    `pending` names the runs to log or resume (all that a dry run would do); `unrecorded`
    the ids of proven runs that the ledger does not record yet."""

    run_ids: dict[tuple[str, str], str] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    unrecorded: list[str] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    warnings: list[str] = field(default_factory=list)


Progress = Callable[[int, int, int, int], None]
"""(files done, files total, bytes done, bytes total)."""


def collect(desired: DesiredState, repo: Path) -> list[SyncItem]:
    """Read every referenced run directory (files only, no server). Errors name the manifest
    line; every directory is read before any problem is raised."""
    items: dict[tuple[str, str], SyncItem] = {}
    problems: list[Problem] = []
    for model in desired.models:
        for v in model.versions:
            if v.run_dir is None or model.experiment is None:
                continue
            path = Path(v.run_dir)
            full = path if path.is_absolute() else repo / path
            try:
                record = read_run_dir(full, display=v.run_dir)
            except InputError as err:
                problems.extend(
                    Problem(v.location, f"versions[{v.index}].run_dir", str(p))
                    for p in err.problems
                )
                continue
            item = SyncItem(model.experiment, record, v.run_dir, v.location)
            other = items.get(item.key)
            if other is not None and other.record.run_dir != record.run_dir:
                problems.append(
                    Problem(
                        v.location,
                        f"versions[{v.index}].run_dir",
                        f"run {record.run_name!r} in experiment {model.experiment!r} is already "
                        f"taken by {other.display} ({other.location})",
                    )
                )
                continue
            items[item.key] = item
    if problems:
        raise InputError(problems)
    return [items[k] for k in sorted(items)]


def pending_runs(
    items: Sequence[SyncItem], runs: Mapping[tuple[str, str], Sequence[RunRef]]
) -> list[PendingRun]:
    """The items that sync would log as new runs."""
    out = []
    for item in items:
        if runs.get(item.key):
            continue
        out.append(
            PendingRun(
                item.experiment,
                item.record.run_name,
                item.display,
                len(item.record.files),
                sum(f.size for f in item.record.files),
                item.record.digest,
            )
        )
    return out


@dataclass
class Survey:
    """What sync found before writing anything: the checks passed, and one step per item
    to log (`proof` None: a new run) or resume (a proven run left RUNNING or FAILED).
    Finished, proven runs are in `report.run_ids` and `report.skipped` already."""

    report: SyncReport
    steps: dict[tuple[str, str], tuple[SyncItem, Proof | None]]
    exp_ids: dict[str, str]
    found: dict[tuple[str, str], RunRef]
    to_record: dict[str, str]


def survey(
    items: Sequence[SyncItem],
    store: SyncStore,
    *,
    workers: int = 1,
    ledger: Mapping[str, str] | None = None,
    known: dict[str, str] | None = None,
) -> Survey:
    """Read and check everything sync would do; raises InputError (every problem, with
    its manifest line) before any write. `ledger` is the ledger as the caller already read
    it (else it is read here: one request); `known` holds the digests this process proved
    already (see `regctl.engine.proof.prove`)."""
    report = SyncReport()
    exp_ids = store.experiments(sorted({i.experiment for i in items}))
    found, problems = _logged_runs(items, store, exp_ids)
    if ledger is None:
        ledger = ledger_entries(store.model_tags(LEDGER_MODEL)) if found else {}
    claims = [(i.experiment, i.record) for i in items if i.key in found]
    proofs = prove(claims, found, store, ledger, known=known, workers=workers)
    for item in items:
        proof = proofs.get(item.key)
        if proof is not None:
            report.warnings.extend(f"{item.display}: {w}" for w in proof.warnings)
            if not proof.proven:
                problems.append(Problem(item.location, "run_dir", proof.message(item.display)))
    for item in items:
        report.warnings.extend(f"{item.display}: {w}" for w in item.record.warnings)
        report.warnings.extend(
            f"{item.display}: skipped {s.rel_path}: {s.reason}" for s in item.record.skipped
        )
    if problems:
        raise InputError(problems)
    to_record = digests_of(proofs.values())
    report.unrecorded = sorted(to_record)
    steps: dict[tuple[str, str], tuple[SyncItem, Proof | None]] = {}
    for item in items:
        proof = proofs.get(item.key)
        if proof is not None and proof.finished:
            report.run_ids[item.key] = proof.run_id
            report.skipped.append(item.record.run_name)
        else:
            steps[item.key] = (item, proof)
            report.pending.append(item.record.run_name)
    return Survey(report, steps, exp_ids, found, to_record)


def _logged_runs(
    items: Sequence[SyncItem], store: SyncStore, exp_ids: Mapping[str, str]
) -> tuple[dict[tuple[str, str], RunRef], list[Problem]]:
    """The one logged run of each item's name; a name logged twice is a problem."""
    found: dict[tuple[str, str], RunRef] = {}
    problems: list[Problem] = []
    wanted: dict[str, list[str]] = {}
    for i in items:
        wanted.setdefault(i.experiment, []).append(i.record.run_name)
    for (exp, name), refs in sorted(runs_by_name(store, exp_ids, wanted).items()):
        if len(refs) > 1:
            item = next(i for i in items if i.key == (exp, name))
            problems.append(
                Problem(
                    item.location,
                    "run_dir",
                    f"experiment {exp!r} holds {len(refs)} runs named "
                    f"{name!r}; sync cannot tell which is this directory",
                )
            )
        else:
            found[(exp, name)] = refs[0]
    return found, problems


class SyncExecutor:
    """Executes a survey's steps, one run directory at a time (`run`), then records the
    proven runs on the ledger (`finish`). apply's interpreter calls `run` for each SyncRun
    change of the plan; `regctl sync` calls it for every step. `should_stop` is asked
    before every write (the lease was lost, or SIGTERM): then SyncStopped."""

    def __init__(
        self,
        found: Survey,
        store: SyncStore,
        *,
        progress: Progress | None = None,
        workers: int = 1,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.survey = found
        self.store = store
        self.workers = workers
        self.should_stop = should_stop
        todo = list(found.steps.values())
        self.counter = _Uploads(
            sum(len(i.record.files) for i, _ in todo),
            sum(f.size for i, _ in todo for f in i.record.files),
            progress,
        )
        self.data = store.run_data([p.run_id for _, p in todo if p is not None]) if todo else {}
        self.lock = threading.Lock()

    @property
    def report(self) -> SyncReport:
        return self.survey.report

    def halt(self, what: str) -> None:
        if self.should_stop is not None and self.should_stop():
            raise SyncStopped(f"sync stopped before {what}")

    def run(self, key: tuple[str, str]) -> str:
        """Log or resume the run of item `key`; its run id (a finished run's, untouched)."""
        if key in self.report.run_ids:
            return self.report.run_ids[key]
        item, proof = self.survey.steps[key]
        exp_id = self._experiment(item.experiment)
        now = int(time.time() * 1000)
        self.halt(f"logging {item.display}")
        have: Mapping[str, int] = {}
        if proof is None:
            ref = self.store.create_run(exp_id, item.record.run_name, now)
            self.report.created.append(item.record.run_name)
            logged = RunData(ref, {}, {}, {})
        else:
            ref = self.survey.found[item.key]
            self.report.resumed.append(item.record.run_name)
            logged = self.data.get(ref.run_id, RunData(ref, {}, {}, {}))
            have = proof.present or {}
        self.report.run_ids[item.key] = ref.run_id
        self._log_values(item, ref, logged, now)
        self._upload(item, ref, have)
        self.halt(f"finishing {item.display}")
        self.store.finish_run(ref.run_id, "FINISHED", int(time.time() * 1000))
        self.survey.to_record[ref.run_id] = item.record.digest
        return ref.run_id

    def run_all(self) -> None:
        for key in list(self.survey.steps):
            self.run(key)

    def finish(self) -> SyncReport:
        """Record the proven runs on the ledger (one request, none when nothing is new)."""
        if self.survey.to_record:
            self.halt("recording proven runs on the ledger")
        record(self.store, self.survey.to_record)
        return self.report

    def _experiment(self, name: str) -> str:
        with self.lock:
            exp_id = self.survey.exp_ids.get(name)
            if exp_id is None:
                self.halt(f"creating experiment {name!r}")
                exp_id = self.store.create_experiment(name)
                self.survey.exp_ids[name] = exp_id
            return exp_id

    def _log_values(self, item: SyncItem, ref: RunRef, logged: RunData, now: int) -> None:
        params = {k: v for k, v in item.record.params.items() if k not in logged.params}
        metrics = {
            k: v
            for k, v in item.record.metrics.items()
            if k not in logged.metrics or not same_metric(logged.metrics[k], v)
        }
        if params or metrics:
            self.store.log_batch(ref.run_id, params, metrics, now)

    def _upload(self, item: SyncItem, ref: RunRef, have: Mapping[str, int]) -> None:
        missing = []
        for f in item.record.files:
            if have.get(f.rel_path) == f.size:  # proven: same size and sha256
                self.counter.add(0, f.size, uploaded=False)
            else:
                missing.append(f)

        def upload(f: RunFile) -> None:
            local = str(Path(item.record.run_dir, *f.rel_path.split("/")))
            _check_regular(local, item)
            self.halt(f"uploading {item.display}/{f.rel_path}")
            self.store.upload_artifact(ref, local, f.rel_path)
            self.counter.add(1, f.size, uploaded=True)

        _run_all(upload, missing, self.workers)
        self.report.files, self.report.bytes = self.counter.files, self.counter.bytes


def sync(
    items: Sequence[SyncItem],
    store: SyncStore,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
    workers: int = 1,
    ledger: Mapping[str, str] | None = None,
    known: dict[str, str] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SyncReport:
    """Log every item (see module doc): `survey`, then (unless `dry_run`) execute every
    step and record the proofs. Raises before any write if any item conflicts."""
    found = survey(items, store, workers=workers, ledger=ledger, known=known)
    if dry_run:
        return found.report
    executor = SyncExecutor(
        found, store, progress=progress, workers=workers, should_stop=should_stop
    )
    executor.run_all()
    return executor.finish()


class SyncStopped(RegctlError):
    """Sync stopped before a write because its caller asked it to (`should_stop`)."""


class _Uploads:
    """Thread-safe upload counters feeding the progress callback."""

    def __init__(self, total_files: int, total_bytes: int, progress: Progress | None) -> None:
        self.total_files, self.total_bytes = total_files, total_bytes
        self.done_files = self.done_bytes = self.files = self.bytes = 0
        self.progress = progress
        self.lock = threading.Lock()

    def add(self, files: int, size: int, *, uploaded: bool) -> None:
        with self.lock:
            self.done_files += 1
            self.done_bytes += size
            if uploaded:
                self.files += files
                self.bytes += size
            seen = (self.done_files, self.total_files, self.done_bytes, self.total_bytes)
        if uploaded and self.progress is not None:
            self.progress(*seen)


def _run_all(fn: Callable[[RunFile], None], files: Sequence[RunFile], workers: int) -> None:
    """Upload with up to `workers` in flight; the first failure cancels what has not started."""
    if workers <= 1:
        for f in files:
            fn(f)
        return
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        for future in [pool.submit(fn, f) for f in files]:
            future.result()
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _check_regular(local: str, item: SyncItem) -> None:
    """Refuse a file that became a link or something else since the directory was read."""
    st = os.lstat(local)
    if not stat.S_ISREG(st.st_mode):
        raise RegctlError(f"{item.display}: {local} is no longer a regular file; not uploaded")
    real = os.path.realpath(local)
    if os.path.commonpath([real, item.record.run_dir]) != item.record.run_dir:
        raise RegctlError(f"{item.display}: {local} resolves outside the run directory")
