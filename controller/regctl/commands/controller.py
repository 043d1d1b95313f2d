"""`regctl controller`: pull-based reconciliation beside the registry, one leader at a time.

The loop, in one thread (the HTTP listener only reads its state and wakes it):

1. Lead or stand by. A controller writes only while it holds the registry's lease (the
   apply lease, `regctl.engine.lease`, with a short TTL and a heartbeat). A standby
   tries to take it every few seconds, so it takes over within TTL + poll (about 25 s)
   of the leader's death; the leader releases it on SIGTERM. A lease lost (broken by
   `regctl unlock`, the model deleted, a partition) makes the leader a standby again
   until it takes the lease anew.
2. Pull. Every `--interval` seconds (and at once when the git webhook pokes it) the
   leader fetches the branch. A new head is checked out (its own worktree), planned,
   judged by policy and applied under the lease, with that commit as provenance. A head
   that is invalid (file:line errors) or denied is reported and not applied; the
   registry keeps the last good commit's state, which later sweeps hold it to. A head
   that failed for a transient reason (server unreachable) is retried with backoff.
3. Sweep. Every `--sweep-interval` seconds, and for the models an MLflow webhook names,
   the last good commit is planned against the registry: what it would change is drift.
   With `--self-heal` drift is applied (reverted); without, it is reported.

Failures (any exception, an OSError of a full state directory included) are logged and
retried with exponential backoff (1 s doubling to 5 minutes), the loop beating /healthz
while it waits; nothing here exits on a fault but a bad command line.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from regctl.adapters.gitsource import GitSource
from regctl.commands.apply import ApplyOptions, apply
from regctl.commands.controller_state import ControllerLog, Metrics, Status
from regctl.commands.planning import load_desired, make_plan
from regctl.config import Settings, open_registry
from regctl.engine.lease import Holder, LeaseHeld, LeaseLost, acquire
from regctl.errors import InputError, Location, PlanError, PolicyDenied, Problem, RegctlError
from regctl.escape import text as one_line
from regctl.ports import Registry, WebhookRegistrar

__all__ = ["Controller", "ControllerOptions"]

LEASE_TTL = 20.0
STANDBY_POLL = 5.0
MAX_BACKOFF = 300.0
DEBOUNCE = 0.2
"""A burst of registry events (an alias moved and a tag set) becomes one reconcile."""
WEBHOOK_NAME = "regctl-controller"
WEBHOOK_EVENTS = (
    "model_version.created",
    "model_version_alias.created",
    "model_version_alias.deleted",
    "model_version_tag.set",
    "model_version_tag.deleted",
)


@dataclass(frozen=True)
class ControllerOptions:
    """`regctl controller`'s flags."""

    source: str
    state_dir: Path
    branch: str = "main"
    path: str = ""
    interval: float = 60.0
    sweep_interval: float = 600.0
    self_heal: bool = False
    tracking_uri: str | None = None
    registry_uri: str | None = None
    lease_ttl: float = LEASE_TTL
    public_url: str | None = None
    mlflow_secret: str = ""


class _Console:
    """apply's console under the controller: silent, stopping once asked to, and beating
    the loop's liveness with apply's and sync's progress (a long upload is not a stall)."""

    def __init__(self, stop: threading.Event, status: Status) -> None:
        self._stop = stop
        self._status = status

    def show(self, *_: object) -> None:
        return None

    def confirm(self, *_: object) -> bool:
        return True

    def progress(self, *_: object) -> None:
        self._status.beat()

    def sync_progress(self, *_: object) -> None:
        self._status.beat()

    def should_stop(self) -> bool:
        return self._stop.is_set()


@dataclass
class _Due:
    fetch: float = 0.0
    sweep: float = 0.0
    models: set[str] = field(default_factory=set)
    first_event: float = 0.0
    backoff: float = 0.0


class Controller:
    """One controller process: `run()` until `stop()` (SIGTERM, SIGINT)."""

    def __init__(self, options: ControllerOptions, log: ControllerLog, metrics: Metrics) -> None:
        self.options = options
        self.log = log
        self.metrics = metrics
        self.status = Status()
        self.source = GitSource(options.source, options.branch, options.state_dir)
        self.stopping = threading.Event()
        self._wake = threading.Event()
        self._due = _Due()
        self._lock = threading.Lock()
        self._holder: Holder | None = None
        self._registry: Registry | None = None
        self._last_good: str | None = None
        self._tried: str | None = None
        self._name = f"regctl controller on {socket.gethostname()} (pid {os.getpid()})"
        self._last_good = _read_last_good(options.state_dir)

    # ---------------------------------------------------------------- called from outside

    def stop(self) -> None:
        self.stopping.set()
        self._wake.set()

    def poke_git(self) -> None:
        """Fetch now (the git webhook)."""
        with self._lock:
            self._due.fetch = 0.0
        self._wake.set()

    def poke_models(self, names: Iterable[str]) -> None:
        """Reconcile these models now (the MLflow webhook)."""
        with self._lock:
            if not self._due.models:
                self._due.first_event = time.monotonic()
            self._due.models.update(names)
        self._wake.set()

    # ------------------------------------------------------------------------- the loop

    def run(self) -> int:
        """The loop; returns the exit code (0 after a stop)."""
        settings = Settings(
            self.options.state_dir, self.options.tracking_uri, self.options.registry_uri
        )
        try:
            while not self.stopping.is_set():
                self.status.beat()
                self._pause(self._step(settings))
        finally:
            self._step_down("stopping")
            if self._registry is not None:
                self._registry.close()
        self.log.event("stopped", result="ok")
        return 0

    def _pause(self, seconds: float) -> None:
        """Wait `seconds` or until woken, beating meanwhile: a 5-minute backoff is the
        loop working as designed, not a stalled loop for /healthz to report."""
        deadline = time.monotonic() + max(0.05, seconds)
        while not self._wake.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._wake.wait(min(left, self.status.stale_after / 4))
            self.status.beat()
        self._wake.clear()

    def _step(self, settings: Settings) -> float:
        """One turn of the loop; how long to wait before the next."""
        try:
            registry = self._open(settings)
            holder = self._lead(registry)
            if holder is None:
                return STANDBY_POLL
            return self._work(registry, holder)
        except RegctlError as exc:
            return self._failed("error", exc)
        except Exception as exc:  # a full disk, a git binary gone, a bug: back off, live on
            return self._failed("error", RegctlError(f"{type(exc).__name__}: {exc}"))

    def _open(self, settings: Settings) -> Registry:
        if self._registry is None:
            self._registry = open_registry(settings)
        return self._registry

    def _lead(self, registry: Registry) -> Holder | None:
        holder = self._holder
        if holder is not None and holder.holding():
            return holder
        if holder is not None:
            self.log.event("lease", result="lost", detail=holder.lost_message())
            self._holder = None
            self.metrics.leader(False)
            self.status.standby()
        try:
            holder = acquire(
                registry, self._name, self._last_good or "", ttl=self.options.lease_ttl
            )
        except LeaseHeld:
            self.status.standby()
            return None
        holder.start_heartbeat()
        self._holder = holder
        self._tried = None  # a new leader judges the head again (one cut short, too)
        self.metrics.leader(True)
        self.log.event("lease", result="acquired", detail=f"generation {holder.lease.generation}")
        self._register_webhook(registry)
        with self._lock:  # a new leader fetches and sweeps at once
            self._due.fetch = 0.0
            self._due.sweep = 0.0
        return holder

    def _register_webhook(self, registry: Registry) -> None:
        """With --public-url and a secret, point MLflow's webhook at this controller.

        Done by each new leader (a Service in front of the replicas routes to the ready
        one). A registry that has no webhooks (MLflow before 3.3, the embedded store)
        leaves the sweep as the only drift detector: logged, not fatal.
        """
        url, secret = self.options.public_url, self.options.mlflow_secret
        if not url or not secret:
            return
        target = url.rstrip("/") + "/webhooks/mlflow"
        if not isinstance(registry, WebhookRegistrar):  # pragma: no cover - the adapter has it
            return
        try:
            hook = registry.ensure_webhook(
                WEBHOOK_NAME,
                target,
                WEBHOOK_EVENTS,
                secret,
                f"regctl controller: registry events for drift within seconds ({self._name})",
            )
        except RegctlError as exc:
            self.log.event("webhook", source="mlflow", result="unregistered", detail=str(exc))
            return
        self.log.event("webhook", source="mlflow", result="registered", detail=f"{hook} {target}")

    def _work(self, registry: Registry, holder: Holder) -> float:
        now = time.monotonic()
        with self._lock:
            fetch_due = now >= self._due.fetch
            sweep_due = now >= self._due.sweep
            settle = self._due.first_event + DEBOUNCE - now
            if self._due.models and settle > 0 and not (fetch_due or sweep_due):
                return settle
            models = set(self._due.models)
            self._due.models.clear()
        if fetch_due:
            with self._lock:  # before the fetch: a push poked meanwhile is fetched next
                self._due.fetch = time.monotonic() + self.options.interval
            try:
                head = self.source.fetch()
                if head != self._tried:
                    self._reconcile(registry, holder, head)
            except BaseException:
                with self._lock:  # retried after the backoff, not the interval
                    self._due.fetch = 0.0
                raise
        if self._last_good is not None and (sweep_due or models):
            self._sweep(registry, holder, self._last_good, [] if sweep_due else sorted(models))
            if sweep_due:
                with self._lock:
                    self._due.sweep = time.monotonic() + self.options.sweep_interval
        self._due.backoff = 0.0
        with self._lock:
            nxt = min(self._due.fetch, self._due.sweep) - time.monotonic()
        return max(0.05, min(nxt, self.options.lease_ttl / 3))

    def _failed(self, result: str, exc: BaseException) -> float:
        self._due.backoff = min(MAX_BACKOFF, max(1.0, self._due.backoff * 2))
        self.metrics.reconciled(result, 0.0)
        self.log.event("retry", result=result, detail=str(exc), wait=self._due.backoff)
        return self._due.backoff

    # ------------------------------------------------------------------ the reconciles

    def _settings(self, sha: str) -> Settings:
        tree = self.source.checkout(sha).resolve()
        root = (tree / self.options.path).resolve() if self.options.path else tree
        if not root.is_relative_to(tree):
            raise RegctlError(f"--path {self.options.path!r} leaves the repository")
        settings = Settings(root, self.options.tracking_uri, self.options.registry_uri)
        _confined(settings, tree)
        return settings

    def _reconcile(self, registry: Registry, holder: Holder, sha: str) -> None:
        """Apply commit `sha` (a new head) under the lease."""
        t0 = time.monotonic()
        result, changes, detail = "applied", 0, ""
        try:
            settings = self._settings(sha)
            outcome = apply(
                settings,
                registry,
                ApplyOptions(auto_approve=True),
                _Console(self.stopping, self.status),
                held=holder,
            )
            changes = len(outcome.plan.changes)
            result = "applied" if changes else "unchanged"
            if outcome.exit_code != 0:
                result, detail = "incomplete", "the registry still differs after apply"
        except (InputError, PlanError) as exc:
            result, detail = "invalid", "; ".join(str(p) for p in exc.problems)
        except PolicyDenied as exc:
            result, detail = "denied", str(exc)
        except LeaseLost as exc:
            result, detail = "lease-lost", str(exc)
        except RegctlError as exc:  # transient (server, network): the same head again later
            self._log_reconcile(sha, "error", 0, time.monotonic() - t0, str(exc))
            raise
        elapsed = time.monotonic() - t0
        if result != "lease-lost":  # cut short, not judged: the next leader applies it
            self._tried = sha
        if result in ("applied", "unchanged"):
            self._last_good = sha
            _write_last_good(self.options.state_dir, sha)
            self.status.applied(sha)
            self.metrics.applied_commit(sha)
            self.metrics.drift(0)
        self._log_reconcile(sha, result, changes, elapsed, detail)
        # the last good commit (what sweeps plan) and this one: refused heads do not pile up
        self.source.keep_only({s for s in (self._last_good, sha) if s})

    def _sweep(self, registry: Registry, holder: Holder, sha: str, models: list[str]) -> None:
        """Plan the last good commit against the registry; heal what differs if asked."""
        t0 = time.monotonic()
        settings = self._settings(sha)
        known = _declared(settings, models)
        if models and not known:
            return
        planned = make_plan(settings, registry, known)
        drift = len(planned.plan.changes)
        self.metrics.drift(drift)
        self.status.applied(sha)  # a leader that holds the registry to its last good commit
        if not drift:
            self._log_reconcile(sha, "in-sync", 0, time.monotonic() - t0, _scope(known), "sweep")
            return
        if not self.options.self_heal:
            detail = f"{drift} objects differ; not healed (no --self-heal)"
            self._log_reconcile(sha, "drift", drift, time.monotonic() - t0, detail, "sweep")
            return
        outcome = apply(
            settings,
            registry,
            ApplyOptions(models=tuple(known), auto_approve=True),
            _Console(self.stopping, self.status),
            held=holder,
        )
        result = "healed" if outcome.exit_code == 0 else "incomplete"
        if outcome.exit_code == 0:
            self.metrics.drift(0)
        elapsed = time.monotonic() - t0
        self._log_reconcile(sha, result, len(outcome.plan.changes), elapsed, _scope(known), "sweep")

    def _log_reconcile(
        self,
        sha: str,
        result: str,
        changes: int,
        elapsed: float,
        detail: str,
        kind: str = "commit",
    ) -> None:
        self.metrics.reconciled(result, elapsed)
        self.log.event(
            "reconcile",
            kind=kind,
            commit=sha,
            changes=changes,
            result=result,
            duration=round(elapsed, 3),
            detail=detail,
        )

    def _step_down(self, why: str) -> None:
        holder, self._holder = self._holder, None
        if holder is None:
            return
        with contextlib.suppress(RegctlError):
            holder.release()
        self.metrics.leader(False)
        self.log.event("lease", result="released", detail=why)


_LAST_GOOD = "last-good"


def _read_last_good(state_dir: Path) -> str | None:
    """The last good commit of an earlier run in this state directory: after a restart
    with a bad head on the branch, sweeps still hold the registry to it."""
    try:
        sha = (state_dir / _LAST_GOOD).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return sha if re.fullmatch(r"[0-9a-f]{40}", sha) else None


def _write_last_good(state_dir: Path, sha: str) -> None:
    part = state_dir / f".{_LAST_GOOD}.partial"
    part.write_text(sha + "\n", encoding="ascii")
    part.replace(state_dir / _LAST_GOOD)


def _confined(settings: Settings, tree: Path) -> None:
    """Every run directory the manifests name lies inside the commit's checkout.

    `regctl apply` on a laptop may sync `/data/runs/x`; a controller must apply what the
    branch holds and nothing of its host: an absolute `run_dir`, one climbing out with
    `..` or one through a committed symbolic link would upload the host's files (a key,
    another tenant's training output) as a run's artifacts."""
    problems = []
    for folder in ("manifests", "policies"):  # a committed link to a folder of the host
        if not Path(os.path.realpath(settings.repo / folder)).is_relative_to(tree):
            problems.append(
                Problem(
                    Location(folder),
                    "",
                    "is a link to outside the repository; replace it with the folder",
                )
            )
    if problems:
        raise InputError(problems)
    for model in load_desired(settings, ())[0].models:
        for v in model.versions:
            if v.run_dir is None:
                continue
            full = Path(os.path.realpath(settings.repo / v.run_dir))
            if not full.is_relative_to(tree):
                problems.append(
                    Problem(
                        v.location,
                        f"versions[{v.index}].run_dir",
                        f"{v.run_dir!r} is outside the repository; the controller syncs "
                        "only run directories committed to the branch",
                    )
                )
    if problems:
        raise InputError(problems)


def _declared(settings: Settings, models: list[str]) -> list[str]:
    """The named models that have a manifest at this commit (all: []). An event about a
    model no manifest declares (an unmanaged one, the lease) needs no reconcile."""
    if not models:
        return []
    names = {m.name for m in load_desired(settings, ())[0].models}
    return [m for m in models if m in names]


def _scope(models: list[str]) -> str:
    return "all models" if not models else "models " + ", ".join(one_line(m) for m in models)
