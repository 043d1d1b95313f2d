"""The apply lease against a real server: two writers never both hold it (issue 13, case 9).

(a) Acquirers, refreshers and releasers run in threads against the real registry through
a proxy whose every call waits for the test's go; the test explores EVERY order of those
calls (depth-first over the choice of which waiting thread goes next) and checks after
each call that at most one writer would write (a holder whose `should_stop()` is False).
(b) The heartbeat keeps a lease past its TTL while apply or sync works, and a lost lease
stops their writes. (c) A dead holder on this machine is taken over at once; another
host's only when it expires.

Time is a fake clock shared by every party of (a) and (c), so expiry is exact; (b) uses
the real clock with a short TTL and waits for conditions, never for durations.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from regctl import config
from regctl.adapters.mlflow.registry import MlflowRegistry
from regctl.commands import apply as applying
from regctl.commands import lease as leasing
from regctl.commands import sync as syncing
from regctl.commands.planning import load_desired
from regctl.core.model import is_lease_model
from regctl.engine.lease import Holder, LeaseHeld, LeaseLost, acquire, break_lease, current
from regctl.engine.process import Process, this_process
from regctl.errors import AlreadyExists, InputError

from conftest import REPO, WRITE_METHODS, Backend, Server, empty_sqlite, write_manifest

TTL = 60.0
ELSEWHERE = Process("another-host", "another-boot pid:[4026531836]", 4242, "17")


@pytest.fixture
def registry(mlflow_server: Server) -> Iterator[MlflowRegistry]:
    """The real server's registry, with no lease model before or after the test."""
    reg = MlflowRegistry(mlflow_server.url)
    wipe(reg)
    try:
        yield reg
    finally:
        wipe(reg)


def wipe(reg: MlflowRegistry) -> None:
    for name in reg.search_models_like("regctl-lease%"):
        with contextlib.suppress(Exception):
            reg.delete_model(name)


class FakeClock:
    """Wall clock and tick clock in one; `sleep` advances it."""

    def __init__(self, start: float) -> None:
        self.now = start
        self.lock = threading.Lock()

    def time(self) -> float:
        with self.lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.advance(max(seconds, 0.001))


# -- (a) step-by-step interleavings ------------------------------------------------------


class Schedule:
    """Actors wait at every registry call until the test lets exactly one of them go."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.state: dict[str, str] = {}  # running | waiting | done
        self.calls: dict[str, str] = {}
        self.go: set[str] = set()
        self.trace: list[str] = []

    def gate(self, who: str, call: str) -> None:
        with self.cond:
            self.state[who] = "waiting"
            self.calls[who] = call
            self.cond.notify_all()
            assert self.cond.wait_for(lambda: who in self.go, timeout=300), "never let go"
            self.go.discard(who)

    def done(self, who: str) -> None:
        with self.cond:
            self.state[who] = "done"
            self.cond.notify_all()

    def quiet(self) -> list[str]:
        """Wait until every actor waits at a call or has finished; the waiting ones."""
        with self.cond:
            settled = self.cond.wait_for(
                lambda: all(s != "running" for s in self.state.values()), timeout=300
            )
            assert settled, f"an actor never reached its next call: {self.state}"
            return sorted(n for n, s in self.state.items() if s == "waiting")

    def let_go(self, who: str) -> None:
        with self.cond:
            self.trace.append(f"{who}:{self.calls[who]}")
            self.state[who] = "running"
            self.go.add(who)
            self.cond.notify_all()


class Gated:
    """The real registry; calls from actor threads wait for their turn."""

    def __init__(self, real: Any, schedule: Schedule) -> None:
        self.real = real
        self.schedule = schedule
        self.after: Callable[[str, str], None] | None = None

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self.real, name)
        thread = threading.current_thread().name
        if not thread.startswith("actor:"):
            return fn
        who = thread.removeprefix("actor:")

        def call(*a: Any, **k: Any) -> Any:
            self.schedule.gate(who, f"{name}({', '.join(str(x) for x in a[:1])})")
            try:
                return fn(*a, **k)
            finally:
                if self.after is not None:
                    self.after(who, name)

        return call


@dataclass
class Actor:
    name: str
    script: Callable[[Actor], None]
    holder: Holder | None = None
    error: BaseException | None = None


@dataclass
class World:
    """One run of a scenario: the registry, the gate, the clock, holders made in setup."""

    real: MlflowRegistry
    gated: Gated
    clock: FakeClock
    holders: list[Holder] = field(default_factory=list)

    def take(self, who: str, store: Any = None, **kw: Any) -> Holder:
        options: dict[str, Any] = {
            "ttl": TTL,
            "timeout": 0.0,
            "clock": self.clock.time,
            "ticks": self.clock.time,
            "sleep": self.clock.sleep,
        }
        options.update(kw)
        return acquire(store if store is not None else self.gated, who, "c0ffee", **options)

    def stale(self) -> None:
        """A lease of a writer on another machine that expired a minute ago."""
        self.take("crashed", self.real, identity=ELSEWHERE, clock=lambda: self.clock.now - 2 * TTL)


Scenario = Callable[[World], list[Actor]]


def acquirer(world: World) -> Callable[[Actor], None]:
    def script(actor: Actor) -> None:
        actor.holder = world.take(actor.name)

    return script


def run_once(
    registry: MlflowRegistry, scenario: Scenario, prefix: list[int]
) -> tuple[list[tuple[int, int]], World, list[Actor], list[str]]:
    """Run `scenario`, choosing at each step the prefix's waiting actor (then the first);
    check after every registry call that at most one writer would write."""
    wipe(registry)
    schedule = Schedule()
    world = World(registry, Gated(registry, schedule), FakeClock(time.time()))
    actors = scenario(world)

    def body(actor: Actor) -> None:
        try:
            actor.script(actor)
        except (LeaseHeld, LeaseLost) as err:
            actor.error = err
        except BaseException as err:  # surfaced below with the trace
            actor.error = err
        finally:
            schedule.done(actor.name)

    for actor in actors:
        schedule.state[actor.name] = "running"
    threads = [
        threading.Thread(target=body, args=(a,), name=f"actor:{a.name}", daemon=True)
        for a in actors
    ]
    for t in threads:
        t.start()
    choices: list[tuple[int, int]] = []
    while True:
        waiting = schedule.quiet()
        writers = [h for h in world.holders + [a.holder for a in actors if a.holder] if h.holding()]
        assert len(writers) <= 1, (
            f"two writers hold the lease: {[h.lease.holder for h in writers]} after "
            + " -> ".join(schedule.trace)
        )
        if not waiting:
            break
        pick = prefix[len(choices)] if len(choices) < len(prefix) else 0
        choices.append((pick, len(waiting)))
        schedule.let_go(waiting[pick])
    for t in threads:
        t.join(timeout=60)
    for a in actors:
        unexpected = a.error is not None and not isinstance(a.error, LeaseHeld | LeaseLost)
        assert not unexpected, (a.name, repr(a.error), schedule.trace)
    return choices, world, actors, schedule.trace


def explore(
    registry: MlflowRegistry,
    scenario: Scenario,
    final: Callable[[World, list[Actor], list[str]], None] | None = None,
) -> int:
    """Every order of the actors' registry calls, depth first; returns how many."""
    stack: list[list[int]] = [[]]
    runs = 0
    while stack:
        prefix = stack.pop()
        choices, world, actors, trace = run_once(registry, scenario, prefix)
        runs += 1
        if final is not None:
            final(world, actors, trace)
        for depth in range(len(prefix), len(choices)):
            taken = [c for c, _ in choices[:depth]]
            stack.extend([*taken, alt] for alt in range(1, choices[depth][1]))
    return runs


def one_winner(world: World, actors: list[Actor], trace: list[str]) -> None:
    winners = [a.name for a in actors if a.holder is not None and a.holder.holding()]
    assert len(winners) == 1, (winners, [repr(a.error) for a in actors], trace)


def test_two_acquirers_that_both_see_a_stale_lease_never_both_hold_it(
    registry: MlflowRegistry,
) -> None:
    """Both read the stale lease and both try to take it over, in every order."""

    def scenario(world: World) -> list[Actor]:
        world.stale()
        return [Actor("A", acquirer(world)), Actor("B", acquirer(world))]

    n = explore(registry, scenario, one_winner)
    print("RUNS", n)
    assert n >= 20


def test_a_slow_acquirer_with_an_ancient_read_never_takes_a_newer_holders_lease(
    registry: MlflowRegistry,
) -> None:
    """B reads a stale lease; meanwhile A takes it and releases it and C takes it (which
    deletes the generations below C's); B's create of its old number then succeeds."""

    def scenario(world: World) -> list[Actor]:
        world.stale()

        def meanwhile(actor: Actor) -> None:
            world.gated.schedule.gate(actor.name, "A takes and releases, C takes")
            with contextlib.suppress(LeaseHeld):
                world.take("A", world.real).release()
                world.holders.append(world.take("C", world.real))

        return [Actor("B", acquirer(world)), Actor("world", meanwhile)]

    def final(world: World, actors: list[Actor], trace: list[str]) -> None:
        b = actors[0]
        if trace[0].startswith("B:") and trace[1].startswith("world:"):
            # the interesting order: B's read is older than everything the world did
            assert b.holder is None and isinstance(b.error, LeaseHeld), (b.error, trace)

    assert explore(registry, scenario, final) >= 4


def test_the_old_holder_refreshing_during_a_takeover_never_leaves_two_holders(
    registry: MlflowRegistry,
) -> None:
    """A's refresh starts just before its lease lapses (the clock passes its expiry right
    after the refresh's first read) while B takes the expired lease over."""

    def scenario(world: World) -> list[Actor]:
        a = world.take("A", world.real)
        a.store = world.gated
        world.holders.append(a)

        def after(who: str, call: str) -> None:
            if who == "A-refresh" and call.startswith("search"):
                world.clock.advance(TTL + 1)  # once: A's lease has expired from here on
                world.gated.after = None

        world.gated.after = after
        return [Actor("A-refresh", lambda actor: a.refresh()), Actor("B", acquirer(world))]

    def final(world: World, actors: list[Actor], trace: list[str]) -> None:
        # A lapsed (no good refresh within 2/3 ttl): it never writes again
        assert not world.holders[0].holding()

    assert explore(registry, scenario, final) >= 10


def test_a_release_during_an_acquire_never_leaves_two_holders(registry: MlflowRegistry) -> None:
    """A releases a live lease while B tries to take it."""

    def scenario(world: World) -> list[Actor]:
        a = world.take("A", world.real)
        a.store = world.gated
        world.holders.append(a)
        return [Actor("A-release", lambda actor: a.release()), Actor("B", acquirer(world))]

    assert explore(registry, scenario) >= 2


def test_a_lapsed_holders_release_during_a_takeover_never_frees_the_new_holders_lease(
    registry: MlflowRegistry,
) -> None:
    """A's lease expired; A releases it while B takes it over; then C tries: C must find
    B's lease held whenever B won."""

    def scenario(world: World) -> list[Actor]:
        a = world.take("A", world.real)
        a.store = world.gated
        world.holders.append(a)
        world.clock.advance(TTL + 1)
        return [Actor("A-release", lambda actor: a.release()), Actor("B", acquirer(world))]

    def final(world: World, actors: list[Actor], trace: list[str]) -> None:
        b = actors[1].holder
        try:
            c = world.take("C", world.real)
        except LeaseHeld:
            c = None
        writers = [h for h in (b, c) if h is not None and h.holding()]
        assert len(writers) == 1, (writers, trace)

    assert explore(registry, scenario, final) >= 2


# -- acquisition details ----------------------------------------------------------------


def test_a_create_whose_response_was_lost_is_recognised_as_ours(registry: MlflowRegistry) -> None:
    """MLflow's client retries a create whose response was lost; the retry gets
    RESOURCE_ALREADY_EXISTS for the model the first attempt made."""

    class LostResponse:
        def __getattr__(self, name: str) -> Any:
            return getattr(registry, name)

        def create_model(self, *a: Any, **k: Any) -> None:
            registry.create_model(*a, **k)
            raise AlreadyExists("create registered model: already exists")

    holder = acquire(LostResponse(), "me", "", timeout=0)
    assert holder.holding()
    holder.check()
    seen = current(registry)
    assert seen is not None and seen.id == holder.lease.id


def test_lease_models_describe_themselves_and_are_never_user_models(
    registry: MlflowRegistry, tmp_path: Path
) -> None:
    holder = acquire(registry, "ada on ci-runner (pid 1)", "0123456789abcdef", timeout=0)
    try:
        model = registry.search_models_like("regctl-lease%")[holder.lease.model]
        assert "regctl's apply lease" in model.description
        assert "ada on ci-runner (pid 1)" in model.description
        assert f"regctl unlock {holder.lease.id}" in model.description
        assert "Deleting it breaks the lease" in model.description
        assert is_lease_model(holder.lease.model) and is_lease_model("regctl-lease")
        assert not is_lease_model("regctl-lease-x") and not is_lease_model("regctl-leases")
        assert not is_lease_model("regctl-lease-\u0661")  # a digit, but not an ASCII one
    finally:
        holder.release()
    # a manifest cannot declare one
    repo = tmp_path / "repo"
    (repo / "manifests").mkdir(parents=True)
    write_manifest(
        repo,
        "m",
        f"apiVersion: regctl/v1\nkind: RegisteredModel\nname: {holder.lease.model}\n",
    )
    with pytest.raises(InputError, match="regctl's apply lease"):
        load_desired(config.Settings(repo))


def test_import_skips_lease_generations(tmp_path: Path) -> None:
    from regctl.commands.import_models import import_command

    uri = empty_sqlite(tmp_path / "s.db")
    repo = tmp_path / "repo"
    (repo / "manifests").mkdir(parents=True)
    reg = MlflowRegistry(uri)
    acquire(reg, "an apply", "", timeout=0).release()
    reg.create_model("model", None, {})
    out, code = import_command(config.Settings(repo, uri), [], None)
    assert code == 0, out
    assert "skipped: regctl-lease-1: regctl's apply lock, not a model" in out
    assert sorted(p.name for p in (repo / "manifests").iterdir()) == ["model.yaml"]


def test_hostile_lease_tags_are_data(registry: MlflowRegistry) -> None:
    """Unreadable generations are not holders; a holder's name cannot reach a terminal."""
    registry.create_model(
        "regctl-lease-5", None, {"regctl.lease.id": "x", "regctl.lease.expires_at": "nan"}
    )
    registry.create_model("regctl-lease-007", None, {"regctl.lease.id": "y"})  # not a generation
    clock = FakeClock(time.time())
    evil = acquire(
        registry,
        "\x1b[2J\x1b]0;pwned\x07mallory",
        "\x1b[31m",
        timeout=0,
        identity=ELSEWHERE,
        clock=clock.time,
    )
    assert evil.lease.generation == 6
    with pytest.raises(LeaseHeld) as caught:
        acquire(registry, "me", "", timeout=0, clock=clock.time)
    message = str(caught.value)
    assert evil.lease.id in message and "mallory" in message
    assert not any(ord(ch) < 32 for ch in message), message
    # a pid no process can have, claimed on this machine: unknown, so held until it expires
    me = this_process()
    for key, value in (("host", me.host), ("machine", me.machine), ("pid", "9" * 12)):
        registry.set_model_tag(evil.lease.model, f"regctl.lease.{key}", value)
    with pytest.raises(LeaseHeld, match="mallory"):
        acquire(registry, "me", "", timeout=0, clock=clock.time)
    broken = break_lease(registry, evil.lease.id)  # what `regctl unlock` prints
    assert "mallory" in broken.holder and broken.holder.isprintable()


def test_a_live_legacy_lease_blocks_and_a_stale_one_does_not(registry: MlflowRegistry) -> None:
    now = time.time()
    legacy = {"regctl.lease.id": "old", "regctl.lease.holder": "regctl 0.x"}
    registry.create_model(
        "regctl-lease", None, {**legacy, "regctl.lease.expires_at": f"{now + 600}"}
    )
    with pytest.raises(LeaseHeld, match="legacy regctl-lease"):
        acquire(registry, "me", "", timeout=0)
    registry.set_model_tag("regctl-lease", "regctl.lease.expires_at", f"{now - 1}")
    acquire(registry, "me", "", timeout=0).release()


# -- (b) the heartbeat ---------------------------------------------------------------------

SHORT_TTL = 9.0


WRITES = set(WRITE_METHODS)


class Blocking:
    """The real registry, except that the `nth` call of one method waits until the test
    lets it go. Records every call and the writes that are not the lease's."""

    def __init__(self, real: Any, method: str, nth: int = 1) -> None:
        self.real = real
        self.method = method
        self.nth = nth
        self.reached = threading.Event()
        self.go = threading.Event()
        self.calls: list[str] = []
        self.writes: list[str] = []

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self.real, name)

        def call(*a: Any, **k: Any) -> Any:
            self.calls.append(name)
            if name in WRITES and not (a and isinstance(a[0], str) and is_lease_model(a[0])):
                self.writes.append(name)
            if name == self.method and self.calls.count(name) == self.nth:
                self.reached.set()
                assert self.go.wait(timeout=300)
            return fn(*a, **k)

        return call


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> list[Holder]:
    """The leases app takes, with a short TTL."""
    holders: list[Holder] = []
    real = leasing.acquire

    def short(*a: Any, **k: Any) -> Holder:
        holders.append(real(*a, **{**k, "ttl": SHORT_TTL}))
        return holders[-1]

    monkeypatch.setattr(leasing, "acquire", short)
    return holders


def run_dirs(b: Backend, uniq: str, n: int) -> None:
    entries = ""
    for i in range(n):
        name = f"run_hmm_20250101_12000{i}"
        d = b.repo / "runs" / name
        d.mkdir(parents=True)
        (d / "pipeline_config.json").write_text(json.dumps({"model_type": "hmm", "dataset": "d"}))
        (d / "metrics.json").write_text(json.dumps({"bic_final": 1.0 + i}))
        (d / "model.joblib").write_text(f"model {i}")
        entries += f"  - run: {name}\n    run_dir: runs/{name}\n"
    write_manifest(
        b.repo,
        "m",
        f"apiVersion: regctl/v1\nkind: RegisteredModel\nname: {uniq}-m\n"
        f"experiment: {uniq}-exp\nversions:\n{entries}",
    )


def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def body() -> None:
        try:
            out["value"] = fn()
        except BaseException as err:
            out["error"] = err

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, out


def test_the_heartbeat_keeps_the_lease_through_a_sync_longer_than_its_ttl(
    server_backend: Backend, uniq: str, taken: list[Holder], registry: MlflowRegistry
) -> None:
    b = server_backend
    run_dirs(b, uniq, 2)
    store = Blocking(registry, "upload_artifact")
    settings = config.Settings(b.repo, b.uri)
    thread, out = in_thread(
        lambda: applying.apply(settings, store, applying.ApplyOptions(concurrency=1))
    )
    assert store.reached.wait(timeout=300), out
    holder = taken[0]
    first_expiry = holder.lease.expires_at
    until(lambda: time.time() > first_expiry + 1, "the first expiry passed")
    # past its first expiry the lease is still held: nobody else can take it
    with pytest.raises(LeaseHeld, match="expires in"):
        acquire(registry, "another writer", "", timeout=0, identity=ELSEWHERE)
    assert holder.holding() and holder.lease.expires_at > first_expiry
    store.go.set()
    thread.join(timeout=300)
    assert "error" not in out, out
    outcome = out["value"]
    assert outcome.report.done == outcome.report.total and outcome.after.empty
    assert current(registry) is None  # released


def test_a_lost_lease_stops_apply_before_its_next_write(
    server_backend: Backend, uniq: str, taken: list[Holder], registry: MlflowRegistry
) -> None:
    b = server_backend
    b.make_runs(f"{uniq}-exp", ["r0", "r1", "r2"])
    entries = "".join(f"  - run: r{i}\n" for i in range(3))
    write_manifest(
        b.repo,
        "m",
        f"apiVersion: regctl/v1\nkind: RegisteredModel\nname: {uniq}-m\n"
        f"experiment: {uniq}-exp\nversions:\n{entries}",
    )
    store = Blocking(registry, "create_version")
    thread, out = in_thread(
        lambda: applying.apply(
            config.Settings(b.repo, b.uri), store, applying.ApplyOptions(concurrency=1)
        )
    )
    assert store.reached.wait(timeout=300), out
    holder = taken[0]
    break_lease(registry, holder.lease.id)  # `regctl unlock` while the first version is written
    until(holder.should_stop, "the heartbeat saw the lease broken")
    store.go.set()
    thread.join(timeout=300)
    err = out.get("error")
    assert isinstance(err, LeaseLost), out
    assert "released or broken" in str(err) and "applied 2 of 4 changes" in str(err)
    assert store.calls.count("create_version") == 1  # the write in flight, nothing after it
    assert len(b.client.search_model_versions(f"name = '{uniq}-m'")) == 1


def test_a_lost_lease_stops_sync_before_its_next_upload(
    server_backend: Backend, uniq: str, taken: list[Holder], registry: MlflowRegistry
) -> None:
    b = server_backend
    run_dirs(b, uniq, 2)
    store = Blocking(registry, "upload_artifact")
    settings = config.Settings(b.repo, b.uri)
    thread, out = in_thread(
        lambda: syncing.run_sync(settings, store, syncing.SyncOptions(concurrency=1))
    )
    assert store.reached.wait(timeout=300), out
    holder = taken[0]
    break_lease(registry, holder.lease.id)
    until(holder.should_stop, "the heartbeat saw the lease broken")
    store.go.set()
    thread.join(timeout=300)
    err = out.get("error")
    assert isinstance(err, LeaseLost) and "released or broken" in str(err), out
    assert store.calls.count("upload_artifact") == 1  # the upload in flight, nothing after it
    assert "finish_run" not in store.calls and store.calls.count("create_run") == 1


@pytest.mark.parametrize("phase", ["sync", "apply"])
def test_a_lease_lost_while_apply_plans_again_stops_it_before_any_write(
    server_backend: Backend, uniq: str, taken: list[Holder], registry: MlflowRegistry, phase: str
) -> None:
    """Broken while apply re-plans under the lease, before the heartbeat could notice:
    the check before the first write phase (sync, or the changes) stops it."""
    b = server_backend
    if phase == "sync":
        run_dirs(b, uniq, 1)
    else:
        b.make_runs(f"{uniq}-exp", ["r0"])
        write_manifest(
            b.repo,
            "m",
            f"apiVersion: regctl/v1\nkind: RegisteredModel\nname: {uniq}-m\n"
            f"experiment: {uniq}-exp\nversions:\n  - run: r0\n",
        )
    store = Blocking(registry, "search_models", nth=2)  # the observe under the lease
    thread, out = in_thread(
        lambda: applying.apply(
            config.Settings(b.repo, b.uri), store, applying.ApplyOptions(concurrency=1)
        )
    )
    assert store.reached.wait(timeout=300), out
    break_lease(registry, taken[0].lease.id)
    store.go.set()
    thread.join(timeout=300)
    assert isinstance(out.get("error"), LeaseLost), out
    assert store.writes == []  # not one write outside the lease itself


def test_a_legacy_writer_taking_the_lease_during_an_acquire_makes_it_yield(
    registry: MlflowRegistry,
) -> None:
    """An old regctl (one `regctl-lease` model) takes the lease between this acquirer's
    read and its confirming read: the acquirer yields to it."""

    class OldWriterMeanwhile:
        def __getattr__(self, name: str) -> Any:
            return getattr(registry, name)

        def create_model(self, *a: Any, **k: Any) -> None:
            registry.create_model(*a, **k)
            tags = {"regctl.lease.id": "old", "regctl.lease.expires_at": f"{time.time() + 900}"}
            registry.create_model("regctl-lease", None, tags)

    with pytest.raises(LeaseHeld, match="legacy regctl-lease"):
        acquire(OldWriterMeanwhile(), "me", "", timeout=0)
    assert list(registry.search_models_like("regctl-lease%")) == ["regctl-lease"]


def test_a_late_release_never_frees_a_lease_that_reused_the_number(
    registry: MlflowRegistry,
) -> None:
    """Someone deletes the holder's lease model by hand and the next writer gets the same
    generation number: the old holder's release must not release the new lease."""
    old = acquire(registry, "old", "", timeout=0)
    registry.delete_model(old.lease.model)
    new = acquire(registry, "new", "", timeout=0)
    assert new.lease.model == old.lease.model  # the number came back
    with pytest.raises(LeaseLost, match="belongs to another writer"):
        old.check()
    old.release()
    new.check()
    seen = current(registry)
    assert seen is not None and seen.id == new.lease.id
    new.release()


# -- (c) dead holders ----------------------------------------------------------------------


def test_a_dead_holder_on_this_machine_is_taken_over_at_once(
    mlflow_server: Server, registry: MlflowRegistry
) -> None:
    code = (
        "import sys, os\n"
        "from regctl.engine.lease import acquire\n"
        "from regctl.adapters.mlflow.registry import MlflowRegistry\n"
        "h = acquire(MlflowRegistry(sys.argv[1]), 'doomed', '', timeout=0)\n"
        "print(h.lease.generation, h.lease.acquired_at, flush=True)\n"
        "os._exit(0)  # dies holding it\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO / "controller"))
    done = subprocess.run(
        [sys.executable, "-c", code, mlflow_server.url],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    generation, acquired = done.stdout.split()
    dead = current(registry, clock=lambda: float(acquired))
    assert dead is None  # not live: its process is gone
    # one second after it was taken, long before it expires
    holder = acquire(registry, "next", "", timeout=0, clock=lambda: float(acquired) + 1)
    assert holder.lease.generation == int(generation) + 1


def test_a_reused_pid_does_not_keep_a_dead_holders_lease(registry: MlflowRegistry) -> None:
    me = this_process()
    clock = FakeClock(time.time())
    # the same pid as this process, but it was another process (another start time)
    acquire(
        registry,
        "earlier",
        "",
        timeout=0,
        clock=clock.time,
        identity=Process(me.host, me.machine, me.pid, "1"),
    )
    clock.advance(1)
    later = acquire(registry, "now", "", timeout=0, clock=clock.time)
    # while a live process on this machine keeps its lease
    with pytest.raises(LeaseHeld, match="held by now"):
        acquire(registry, "third", "", timeout=0, clock=clock.time)
    later.release()


@pytest.mark.parametrize(
    "where",
    [ELSEWHERE, "container"],
    ids=["another host", "same hostname, another pid namespace"],
)
def test_a_holder_elsewhere_is_taken_over_only_when_it_expires(
    registry: MlflowRegistry, where: Process | str
) -> None:
    me = this_process()
    if where == "container":
        where = Process(me.host, "another-boot pid:[4026532000]", 999_999, "5")
    assert isinstance(where, Process)
    clock = FakeClock(time.time())
    other = acquire(registry, "elsewhere", "", timeout=0, clock=clock.time, identity=where)
    clock.advance(TTL - 1)
    with pytest.raises(LeaseHeld, match="held by elsewhere"):
        acquire(registry, "me", "", timeout=0, clock=clock.time)
    holder = acquire(registry, "me", "", timeout=120, clock=clock.time, sleep=clock.sleep)
    assert clock.time() > other.lease.expires_at  # it waited for the expiry, then took it
    assert holder.lease.generation == other.lease.generation + 1
