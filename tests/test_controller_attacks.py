"""Attacks on `regctl controller` and the operator's worst days: each test names a way
the loop was made to apply what the branch does not hold, to stop converging, or to
report the wrong thing. The controller runs in this process against an embedded sqlite
store, one `_step` at a time, with a bare git repository as its source."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from test_controller import git
from test_sync import make_run_dir

from regctl.commands.controller import Controller, ControllerOptions
from regctl.commands.controller_state import ControllerLog, Metrics
from regctl.config import Settings

from conftest import empty_sqlite

RUN = "run_hmm_20251009_105640"


class Rig:
    """A source repository, a registry and one in-process controller."""

    def __init__(self, tmp: Path, **options: Any) -> None:
        self.tmp = tmp
        self.bare = tmp / "source.git"
        git("init", "-q", "--bare", "-b", "main", str(self.bare), cwd=tmp)
        self.work = tmp / "work"
        git("clone", "-q", str(self.bare), str(self.work), cwd=tmp)
        (self.work / "manifests").mkdir()
        make_run_dir(self.work / "runs", RUN, {"model_type": "hmm"}, {"bic": 1.0})
        self.uri = empty_sqlite(tmp / "mlflow.db")
        self.state = (tmp / "state").resolve()
        self.out = io.StringIO()
        self.ctl = Controller(
            ControllerOptions(
                source=self.bare.as_uri(),
                state_dir=self.state,
                tracking_uri=self.uri,
                **options,
            ),
            ControllerLog("json", self.out),
            Metrics(),
        )
        self.settings = Settings(self.state, self.uri, None)

    def manifest(self, description: str, run_dir: str = f"runs/{RUN}", run: str = RUN) -> None:
        (self.work / "manifests" / "m.yaml").write_text(
            "apiVersion: regctl/v1\nkind: RegisteredModel\nname: m\nexperiment: m-exp\n"
            f"description: {description}\nversions:\n  - run: {run}\n    run_dir: {run_dir}\n"
        )

    def push(self, message: str) -> str:
        git("add", "-A", cwd=self.work)
        git("commit", "-qm", message, cwd=self.work)
        git("push", "-q", "origin", "HEAD:main", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def step(self) -> float:
        return self.ctl._step(self.settings)

    def events(self, event: str = "reconcile", kind: str = "commit") -> list[dict[str, Any]]:
        rows = [json.loads(x) for x in self.out.getvalue().splitlines()]
        return [r for r in rows if r["event"] == event and r.get("kind", kind) == kind]

    def description(self) -> str | None:
        from mlflow import MlflowClient

        try:
            return MlflowClient(self.uri, self.uri).get_registered_model("m").description
        except Exception:
            return None

    def close(self) -> None:
        self.ctl._step_down("test")
        if self.ctl._registry is not None:
            self.ctl._registry.close()


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.chdir(tmp_path)  # the embedded store's artifacts land here
    made: list[Rig] = []

    def make(**options: Any) -> Rig:
        r = Rig(tmp_path, **options)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def test_harness_applies_a_head(rig: Any) -> None:
    r = rig()
    r.manifest("first")
    sha = r.push("first")
    r.step()
    assert r.description() == "first"
    assert r.events()[-1]["result"] == "applied" and r.events()[-1]["commit"] == sha


# -- what is applied must be what the branch holds ---------------------------------------


def _outside(tmp: Path) -> Path:
    """A run directory on the controller's host, outside every checkout, with a secret."""
    return make_run_dir(
        tmp / "host", RUN, {"model_type": "hmm"}, {"bic": 1.0}, {"id_rsa": "PRIVATE KEY"}
    )


def _uploaded(r: Rig) -> bool:
    from mlflow import MlflowClient

    exp = MlflowClient(r.uri, r.uri).get_experiment_by_name("m-exp")
    return exp is not None and bool(MlflowClient(r.uri, r.uri).search_runs([exp.experiment_id]))


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink"])
def test_a_run_dir_outside_the_checkout_is_refused(rig: Any, how: str) -> None:
    """A manifest on the branch must not make the controller upload host files: an
    absolute run_dir, one climbing out with `..`, or one through a committed symlink."""
    r = rig()
    host = _outside(r.tmp)
    if how == "absolute":
        r.manifest("x", run_dir=str(host))
    elif how == "dotdot":
        r.manifest("x", run_dir=os.path.relpath(host, r.state / "trees" / ("0" * 40)))
    else:
        (r.work / "out").symlink_to(host.parent)
        r.manifest("x", run_dir=f"out/{RUN}")
    sha = r.push("escape")
    r.step()
    row = r.events()[-1]
    assert row["commit"] == sha and row["result"] == "invalid", r.out.getvalue()
    assert "outside" in row["detail"]
    assert r.description() is None and not _uploaded(r)


# -- leadership -------------------------------------------------------------------------


def test_a_head_cut_short_by_a_lost_lease_is_applied_once_the_lease_is_back(
    rig: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`regctl unlock` mid-apply: the head is not applied then; when this controller
    leads again it must apply it, not mark it tried and let sweeps revert to the old one."""
    from regctl.commands import controller as module
    from regctl.engine.lease import break_lease

    r = rig()
    r.manifest("first")
    r.push("first")
    r.step()
    r.manifest("second")
    second = r.push("second")
    real = module.apply
    calls = []

    def unlocked_midway(settings: Any, registry: Any, *args: Any, **kw: Any) -> Any:
        if not calls:
            break_lease(registry, kw["held"].lease.id)
        calls.append(1)
        return real(settings, registry, *args, **kw)

    monkeypatch.setattr(module, "apply", unlocked_midway)
    r.ctl._due.fetch = 0.0
    r.step()
    assert r.events()[-1]["result"] == "lease-lost" and r.description() == "first"
    for _ in range(3):  # the lease is taken again; the branch has not moved
        r.ctl._due.fetch = 0.0
        r.step()
    assert r.description() == "second"
    assert r.events()[-1]["commit"] == second and r.events()[-1]["result"] == "applied"


def test_a_leader_that_lost_the_lease_is_not_ready() -> None:
    """The docs and the Deployment: a standby answers 503 on /readyz, so webhooks reach
    the leader. A leader demoted to standby must stop answering 200."""
    from regctl.commands.controller_state import Status

    s = Status()
    s.applied("a" * 40)
    assert s.ready
    s.standby()
    assert not s.ready


# -- the loop survives ------------------------------------------------------------------


def test_an_oserror_inside_the_loop_is_retried_not_fatal(
    rig: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk under the state directory (ENOSPC from a checkout) is a fault to back
    off from, not a traceback that ends the process and restarts it into the same fault."""
    import errno

    r = rig()
    r.manifest("first")
    r.push("first")

    def full(_: str) -> Path:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(r.ctl.source, "checkout", full)
    assert r.step() == 1.0
    assert r.events("retry", "")[-1]["result"] == "error"
    assert "No space left" in r.events("retry", "")[-1]["detail"]
    monkeypatch.undo()
    monkeypatch.chdir(r.tmp)
    r.step()
    assert r.description() == "first"


def test_checkouts_of_failing_heads_do_not_pile_up(rig: Any) -> None:
    """Every refused head got its own checkout under trees/ and only a good head pruned
    them: a branch broken for a week grew the state directory without bound."""
    r = rig()
    r.manifest("first")
    good = r.push("first")
    r.step()
    for i in range(4):
        r.manifest(f"bad {i}\nbad: [")
        r.push(f"bad {i}")
        r.ctl._due.fetch = 0.0
        r.step()
        assert r.events()[-1]["result"] == "invalid"
    kept = sorted(p.name for p in (r.state / "trees").iterdir())
    assert good in kept and len(kept) <= 2, kept


def test_a_push_during_a_fetch_is_not_lost(rig: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The git webhook pokes while a fetch is running (the push landed just after the
    fetch read the refs): the poke must make the next turn fetch again, not wait for
    --interval."""
    r = rig(interval=3600.0)
    r.manifest("first")
    r.push("first")
    real = r.ctl.source.fetch

    def raced() -> str:
        head = real()
        r.manifest("second")
        r.push("second")
        r.ctl.poke_git()  # the webhook thread, meanwhile
        return head

    monkeypatch.setattr(r.ctl.source, "fetch", raced)
    r.step()
    monkeypatch.undo()
    monkeypatch.chdir(r.tmp)
    r.step()
    assert r.description() == "second"


def test_a_transient_failure_is_retried_after_the_backoff_not_the_interval(
    rig: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The docs: a head that failed for a transient reason is retried with backoff (1 s
    doubling). It was retried only at the next --interval (an hour here)."""
    from regctl.commands import controller as module
    from regctl.errors import RegistryError

    r = rig(interval=3600.0)
    r.manifest("first")
    r.push("first")
    real = module.apply
    calls: list[int] = []

    def flaky(*args: Any, **kw: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RegistryError("connection refused", request="create model")
        return real(*args, **kw)

    monkeypatch.setattr(module, "apply", flaky)
    assert r.step() == 1.0
    r.step()
    assert r.description() == "first"


def test_healthz_stays_green_while_backing_off(rig: Any) -> None:
    """Backoff grows to 300 s but /healthz turns 503 after 120 s without a turn: with the
    Deployment's liveness probe an unreachable source restarted the pod in a loop."""
    import threading
    import time

    r = rig()
    (r.bare / "HEAD").unlink()  # the source is unreachable (not a repository any more)
    r.ctl.status.stale_after = 0.6
    r.ctl._due.backoff = 2.0  # the next failure waits 4 s
    t = threading.Thread(target=r.ctl.run, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            assert r.ctl.status.healthy, r.out.getvalue()
            time.sleep(0.1)
    finally:
        r.ctl.stop()
        t.join(10)
    assert r.events("retry", "")[0]["wait"] == 4.0


def test_a_unicode_digit_timestamp_is_refused_not_a_500() -> None:
    """`'²'.isdigit()` is True and `int('²')` raises: the handler failed with a 500."""
    from regctl.core.webhooks import mlflow_delivery_problem

    headers = {
        "x-mlflow-signature": "v1,AAAA",
        "x-mlflow-timestamp": "17²",
        "x-mlflow-delivery-id": "d",
    }
    assert mlflow_delivery_problem("s", b"{}", headers, 0.0) == "malformed timestamp or delivery id"


@pytest.mark.parametrize("folder", ["manifests", "policies"])
def test_a_committed_symlink_folder_cannot_read_the_host(rig: Any, folder: str) -> None:
    """`manifests -> /elsewhere` (a link git stores as a link): the loader lists the
    target, so the controller applied YAML of its host that the branch does not hold."""
    r = rig()
    host = r.tmp / "host-yaml"
    host.mkdir()
    r.manifest("from the host")
    if folder == "manifests":
        (r.work / "manifests" / "m.yaml").rename(host / "m.yaml")
        (r.work / "manifests").rmdir()
    else:
        (host / "p.yaml").write_text("apiVersion: regctl/v1\nkind: Policy\n")
    (r.work / folder).symlink_to(host)
    sha = r.push("link")
    r.step()
    row = r.events()[-1]
    assert row["commit"] == sha and row["result"] == "invalid", r.out.getvalue()
    assert "outside" in row["detail"]


# -- the git source -------------------------------------------------------------------


def test_a_checkout_left_half_written_is_not_reused(tmp_path: Path) -> None:
    """SIGKILL (an OOM kill, a liveness restart) during `git worktree add` leaves
    trees/<sha> with its .git file but not all its files; after the restart the head
    was planned from that partial tree, a manifest missing or cut off."""
    from regctl.adapters.gitsource import GitSource

    bare = tmp_path / "source.git"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    work = tmp_path / "work"
    git("clone", "-q", str(bare), str(work), cwd=tmp_path)
    (work / "manifests").mkdir()
    (work / "manifests" / "a.yaml").write_text("name: a\n")
    (work / "manifests" / "b.yaml").write_text("name: b\n")
    git("add", "-A", cwd=work)
    git("commit", "-qm", "two", cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    src = GitSource(bare.as_uri(), "main", tmp_path / "state")
    sha = src.fetch()
    tree = src.checkout(sha)
    (tree / "manifests" / "b.yaml").unlink()  # the kill came before b.yaml was written
    (tree / "manifests" / "a.yaml").write_text("na")  # and while a.yaml was
    again = GitSource(bare.as_uri(), "main", tmp_path / "state").checkout(sha)
    assert (again / "manifests" / "b.yaml").read_text() == "name: b\n"
    assert (again / "manifests" / "a.yaml").read_text() == "name: a\n"


def test_a_token_given_as_the_url_user_is_refused(tmp_path: Path) -> None:
    """GitHub takes a token as the user (`https://ghp_...@github.com/...`): no password,
    so it passed the check and landed in the clone's .git/config."""
    from regctl.adapters.gitsource import GitSource, SourceError

    with pytest.raises(SourceError, match="REGCTL_GIT_TOKEN"):
        GitSource("https://ghp_abcdefabcdef@github.com/acme/r.git", "main", tmp_path, env={})


# -- the HTTP listener ------------------------------------------------------------------


def test_slow_bodies_cannot_take_the_memory_or_the_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unauthenticated: a POST announcing 1 MiB and trickling it a byte every 9 s held a
    thread and its buffer for ever (the read timeout is per recv). A few hundred of them
    exceed the Deployment's 400 MiB limit. Now: at most MAX_BODIES at once, each within
    BODY_SECONDS, and GET still answers."""
    import socket
    import time
    import urllib.request

    from regctl.adapters import httpserve
    from regctl.adapters.httpserve import MAX_BODIES, Listener, Reply

    monkeypatch.setattr(httpserve, "BODY_SECONDS", 4.0)
    table = {
        ("GET", "/healthz"): lambda h, b: Reply(200, b"ok\n"),
        ("POST", "/hook"): lambda h, b: Reply(202, b"ok\n"),
    }
    listener = Listener("127.0.0.1", 0, table)
    socks = []
    try:
        for _ in range(MAX_BODIES):
            s = socket.create_connection(("127.0.0.1", listener.port))
            s.sendall(b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\nx")
            socks.append(s)
        time.sleep(0.3)
        extra = socket.create_connection(("127.0.0.1", listener.port), timeout=5)
        extra.sendall(b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        assert extra.recv(100).startswith(b"HTTP/1.1 503")
        extra.close()
        url = f"http://127.0.0.1:{listener.port}/healthz"
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert resp.status == 200
        socks[0].settimeout(8)
        assert socks[0].recv(100).startswith(b"HTTP/1.1 408")  # cut off after BODY_SECONDS
    finally:
        for s in socks:
            s.close()
        listener.close()
