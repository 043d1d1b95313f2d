"""`regctl controller` (issue 17) against a real server with webhooks enabled and a bare
git repository as the source: each controller is a real child process on loopback.

Covered: a pushed commit applied, an invalid one refused with the last good state kept;
SIGTERM exits 0 and releases the lease; forged and replayed webhooks refused; a push
applied through the git webhook long before the next poll; a hand edit reverted through
MLflow's webhook before any sweep; a deleted version caught by the sweep; two
controllers and one writer, the leader SIGKILLed and the standby taking over, with no
entry ever registered twice.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_sync import make_run_dir

from conftest import REPO, Server, _start_server, _stop, free_port

pytestmark = pytest.mark.server

GIT_SECRET = "git-secret-" + uuid.uuid4().hex
MLFLOW_SECRET = "mlflow-secret-" + uuid.uuid4().hex
RUN = "run_hmm_20251009_105640"


@pytest.fixture(scope="module")
def hook_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that delivers webhooks to loopback over http, with a 1 s webhook cache."""
    root = tmp_path_factory.mktemp("mlflow-hooks")
    env = {
        **os.environ,
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http",
        "MLFLOW_WEBHOOK_CACHE_TTL": "1",
    }
    server = _start_server(root, env=env)
    try:
        yield server
    finally:
        _stop(server.proc)


def git(*args: str, cwd: Path) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Ada", "GIT_AUTHOR_EMAIL": "ada@example.com"}
    env |= {"GIT_COMMITTER_NAME": "Ada", "GIT_COMMITTER_EMAIL": "ada@example.com"}
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@dataclass
class Source:
    """A bare repository (the source) and a working clone that pushes to it."""

    bare: Path
    work: Path
    model: str

    @property
    def url(self) -> str:
        return self.bare.as_uri()

    @property
    def manifest(self) -> Path:
        return self.work / "manifests" / f"{self.model}.yaml"

    def write(self, description: str, extra: str = "") -> None:
        self.manifest.write_text(
            "apiVersion: regctl/v1\nkind: RegisteredModel\n"
            f"name: {self.model}\nexperiment: {self.model}-exp\n"
            f"description: {description}\n"
            f"versions:\n  - run: {RUN}\n    run_dir: runs/{RUN}\n    aliases: [Staging]\n" + extra
        )

    def push(self, message: str) -> str:
        git("add", "-A", cwd=self.work)
        git("commit", "-qm", message, cwd=self.work)
        git("push", "-q", "origin", "HEAD:main", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)


@pytest.fixture
def source(tmp_path: Path, uniq: str) -> Source:
    bare = tmp_path / "source.git"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    work = tmp_path / "work"
    git("clone", "-q", str(bare), str(work), cwd=tmp_path)
    (work / "manifests").mkdir()
    make_run_dir(
        work / "runs",
        RUN,
        {"model_type": "hmm", "dataset": "d"},
        {"bic_final": 1.0},
        {"model.joblib": "weights"},
    )
    s = Source(bare, work, f"{uniq}-m")
    s.write("first")
    s.push("first")
    return s


class Ctl:
    """One `regctl controller` child process."""

    def __init__(
        self, server: Server, src: Source, state: Path, *flags: str, port: int = 0
    ) -> None:
        self.port = port or free_port()
        self.log = state.with_suffix(".log")
        argv = [
            sys.executable,
            "-m",
            "regctl",
            "--tracking-uri",
            server.url,
            "controller",
            "--source",
            src.url,
            "--listen",
            f"127.0.0.1:{self.port}",
            "--state-dir",
            str(state),
            *flags,
        ]
        environment = {
            **os.environ,
            "PYTHONPATH": str(REPO / "controller"),
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "REGCTL_GIT_WEBHOOK_SECRET": GIT_SECRET,
            "REGCTL_MLFLOW_WEBHOOK_SECRET": MLFLOW_SECRET,
        }
        self.proc = subprocess.Popen(
            argv, env=environment, stdout=subprocess.DEVNULL, stderr=self.log.open("wb")
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()
        except OSError:
            return 0, ""

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        req = urllib.request.Request(self.url + path, body, headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as err:
            return int(err.code)

    def metric(self, name: str) -> float:
        _, text = self.get("/metrics")
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        return float(found.group(1)) if found else 0.0

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout:g} s: {what}")


def client(server: Server) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(server.url)


@pytest.fixture
def controllers() -> Iterator[list[Ctl]]:
    started: list[Ctl] = []
    yield started
    for c in started:
        if c.proc.poll() is None:
            c.proc.kill()
            c.proc.wait(timeout=10)


def ready(c: Ctl) -> bool:
    return c.get("/readyz")[0] == 200


def test_pushed_commits_are_applied_and_a_bad_one_is_not(
    hook_server: Server, source: Source, tmp_path: Path, controllers: list[Ctl]
) -> None:
    c = Ctl(hook_server, source, tmp_path / "state", "--interval", "1")
    controllers.append(c)
    until(lambda: ready(c), 90, "ready:\n" + "\n".join(c.lines()))
    mlflow = client(hook_server)
    assert mlflow.get_registered_model(source.model).description == "first"
    assert mlflow.get_model_version_by_alias(source.model, "Staging").version == "1"
    assert c.get("/healthz")[0] == 200 and c.metric("regctl_leader") == 1

    source.write("second")
    second = source.push("second")
    until(lambda: mlflow.get_registered_model(source.model).description == "second", 20, "applied")
    info = f'regctl_last_applied_commit_info{{commit="{second}"}}'
    until(lambda: c.metric(info) == 1, 5, "the commit in /metrics")
    line = until(
        lambda: [x for x in c.lines() if f"commit={second}" in x and "result=applied" in x],
        5,
        "log",
    )
    assert "changes=1" in line[0] and "duration=" in line[0]
    applied = mlflow.get_registered_model(source.model).tags["regctl.applied"]
    assert applied.startswith(f"commit {second} by ")  # the pulled commit is the provenance

    source.manifest.write_text(source.manifest.read_text() + "bad: [\n")
    third = source.push("broken")
    refused = until(lambda: [x for x in c.lines() if f"commit={third}" in x], 20, "refused")
    assert "result=invalid" in refused[0] and f"manifests/{source.model}.yaml:" in refused[0]
    time.sleep(2)  # polled again: not retried, not applied
    assert len([x for x in c.lines() if f"commit={third}" in x]) == 1
    assert mlflow.get_registered_model(source.model).description == "second"
    assert c.metric(info) == 1 and c.metric('regctl_reconcile_total{result="invalid"}') == 1

    t0 = time.monotonic()
    assert c.stop() == 0 and time.monotonic() - t0 < 30
    assert any("lease result=released" in x for x in c.lines())
    from regctl.config import Settings, open_registry
    from regctl.engine.lease import current

    registry = open_registry(Settings(tmp_path, hook_server.url))
    try:
        held = current(registry)
    finally:
        registry.close()
    assert held is None or held.released


def sign_mlflow(
    body: bytes, delivery: str, stamp: int, secret: str = MLFLOW_SECRET
) -> dict[str, str]:
    mac = hmac.new(secret.encode(), f"{delivery}.{stamp}.{body.decode()}".encode(), hashlib.sha256)
    return {
        "Content-Type": "application/json",
        "X-MLflow-Signature": "v1," + base64.b64encode(mac.digest()).decode(),
        "X-MLflow-Timestamp": str(stamp),
        "X-MLflow-Delivery-Id": delivery,
    }


def test_webhooks_forged_replayed_and_real(
    hook_server: Server, source: Source, tmp_path: Path, controllers: list[Ctl]
) -> None:
    """--interval 3600: only the git webhook can make it fetch before the test ends."""
    c = Ctl(hook_server, source, tmp_path / "state", "--interval", "3600")
    controllers.append(c)
    until(lambda: ready(c), 90, "ready")
    mlflow = client(hook_server)
    source.write("pushed")
    sha = source.push("pushed")
    push = json.dumps({"ref": "refs/heads/main", "after": sha}).encode()
    forged = {"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + "0" * 64}
    assert c.post("/webhooks/git", push, forged) == 401
    assert c.post("/webhooks/git", push, {"X-GitHub-Event": "push"}) == 401
    time.sleep(2)
    assert mlflow.get_registered_model(source.model).description == "first"  # nothing fetched
    good = hmac.new(GIT_SECRET.encode(), push, hashlib.sha256).hexdigest()
    t0 = time.monotonic()
    assert (
        c.post(
            "/webhooks/git",
            push,
            {"X-GitHub-Event": "push", "X-Hub-Signature-256": f"sha256={good}"},
        )
        == 202
    )
    until(lambda: mlflow.get_registered_model(source.model).description == "pushed", 10, "pushed")
    assert time.monotonic() - t0 < 10

    body = json.dumps(
        {
            "entity": "model_version_alias",
            "action": "deleted",
            "data": {"name": source.model, "alias": "Staging"},
        }
    ).encode()
    now = int(time.time())
    delivery = uuid.uuid4().hex
    assert c.post("/webhooks/mlflow", body, sign_mlflow(body, delivery, now, "wrong")) == 401
    assert c.post("/webhooks/mlflow", body, sign_mlflow(body, delivery, now - 3600)) == 401  # stale
    assert c.post("/webhooks/mlflow", body, sign_mlflow(body, delivery, now)) == 202
    assert c.post("/webhooks/mlflow", body, sign_mlflow(body, delivery, now)) == 401  # replayed
    tampered = body.replace(b"Staging", b"Prod")
    assert c.post("/webhooks/mlflow", tampered, sign_mlflow(body, uuid.uuid4().hex, now)) == 401
    metrics = c.get("/metrics")[1]
    for result, n in (("forged", 2), ("stale", 1), ("replayed", 1), ("accepted", 1)):
        assert (
            f'regctl_webhook_events_total{{result="{result}",source="mlflow"}} {n}.0' in metrics
        ), result
    assert 'regctl_webhook_events_total{result="forged",source="git"} 2.0' in metrics
    assert c.stop() == 0


def test_a_hand_edit_is_reverted_through_the_mlflow_webhook(
    hook_server: Server, source: Source, tmp_path: Path, controllers: list[Ctl]
) -> None:
    """The leader registers MLflow's webhook (--public-url); an alias moved away by hand
    is put back within seconds, with the sweep an hour away."""
    port = free_port()
    c = Ctl(
        hook_server,
        source,
        tmp_path / "state",
        "--interval",
        "3600",
        "--sweep-interval",
        "3600",
        "--self-heal",
        "--public-url",
        f"http://127.0.0.1:{port}",
        port=port,
    )
    controllers.append(c)
    until(lambda: ready(c), 90, "ready")
    assert any("webhook source=mlflow result=registered" in x for x in c.lines()), c.lines()
    mlflow = client(hook_server)
    hooks = [h for h in mlflow.list_webhooks() if h.name == "regctl-controller"]
    assert len(hooks) == 1 and hooks[0].url == f"http://127.0.0.1:{port}/webhooks/mlflow"
    time.sleep(1.5)  # the server caches its webhook list for 1 s here (60 s by default)

    run_id = mlflow.get_model_version(source.model, "1").run_id
    mlflow.create_model_version(source.model, f"runs:/{run_id}", run_id)  # version 2, by hand
    t0 = time.monotonic()
    mlflow.set_registered_model_alias(source.model, "Staging", "2")

    def healed() -> bool:
        return mlflow.get_model_version_by_alias(source.model, "Staging").version == "1"

    until(healed, 15, "the alias put back:\n" + "\n".join(c.lines()))
    took = time.monotonic() - t0
    assert took < 10, took
    assert any("webhook source=mlflow result=accepted" in x for x in c.lines())
    healed_lines = until(
        lambda: [x for x in c.lines() if "kind=sweep" in x and "result=healed" in x], 5, "logged"
    )
    assert f"models {source.model}" in healed_lines[-1]
    assert c.stop() == 0


def test_the_sweep_catches_a_deleted_version(
    hook_server: Server, source: Source, tmp_path: Path, controllers: list[Ctl]
) -> None:
    """MLflow sends no event for a deleted version: the sweep finds it and, with
    --self-heal, registers the entry again (a new number: numbers are never reused)."""
    c = Ctl(
        hook_server,
        source,
        tmp_path / "state",
        "--interval",
        "3600",
        "--sweep-interval",
        "5",
        "--self-heal",
    )
    controllers.append(c)
    until(lambda: ready(c), 90, "ready")
    mlflow = client(hook_server)
    mlflow.delete_model_version(source.model, "1")
    until(
        lambda: (
            [v.version for v in mlflow.search_model_versions(f"name = '{source.model}'")] == ["2"]
        ),
        30,
        "registered again:\n" + "\n".join(c.lines()),
    )
    assert mlflow.get_model_version_by_alias(source.model, "Staging").version == "2"
    assert c.stop() == 0


def test_report_only_without_self_heal(
    hook_server: Server, source: Source, tmp_path: Path, controllers: list[Ctl]
) -> None:
    c = Ctl(hook_server, source, tmp_path / "state", "--interval", "3600", "--sweep-interval", "5")
    controllers.append(c)
    until(lambda: ready(c), 90, "ready")
    mlflow = client(hook_server)
    mlflow.update_registered_model(source.model, "edited by hand")
    until(lambda: c.metric("regctl_drift_objects") == 1, 20, "drift reported")
    assert any("result=drift" in x and "not healed" in x for x in c.lines())
    assert mlflow.get_registered_model(source.model).description == "edited by hand"
    assert c.stop() == 0


def test_two_controllers_one_writer_and_a_takeover(
    hook_server: Server, source: Source, tmp_path: Path, controllers: list[Ctl]
) -> None:
    """A leader and a standby; the leader SIGKILLed, the standby takes over within 30 s
    and applies the next commit; the entry never gets two versions."""
    a = Ctl(hook_server, source, tmp_path / "a", "--interval", "1")
    controllers.append(a)
    until(lambda: ready(a), 90, "a ready")
    b = Ctl(hook_server, source, tmp_path / "b", "--interval", "1")
    controllers.append(b)
    until(lambda: b.get("/healthz")[0] == 200, 90, "b up")
    time.sleep(3)
    assert a.metric("regctl_leader") == 1 and b.metric("regctl_leader") == 0
    assert b.get("/readyz")[0] == 503  # a standby is not ready: traffic goes to the leader
    source.write("while a leads")
    source.push("while a leads")
    mlflow = client(hook_server)
    until(lambda: mlflow.get_registered_model(source.model).description == "while a leads", 20, "a")
    assert not [x for x in b.lines() if "reconcile" in x]  # b never wrote

    a.proc.kill()
    a.proc.wait(timeout=10)
    t0 = time.monotonic()
    until(lambda: b.metric("regctl_leader") == 1, 30, "b leads:\n" + "\n".join(b.lines()))
    assert time.monotonic() - t0 < 30
    source.write("after the takeover")
    source.push("after the takeover")
    until(
        lambda: mlflow.get_registered_model(source.model).description == "after the takeover",
        20,
        "b applied",
    )
    versions = mlflow.search_model_versions(f"name = '{source.model}'")
    assert [v.version for v in versions] == ["1"]  # one entry, one version
    assert b.stop() == 0


def test_a_denied_head_is_not_applied(
    hook_server: Server, source: Source, tmp_path: Path, controllers: list[Ctl]
) -> None:
    c = Ctl(hook_server, source, tmp_path / "state", "--interval", "1")
    controllers.append(c)
    until(lambda: ready(c), 90, "ready")
    (source.work / "policies").mkdir()
    (source.work / "policies" / "strict.yaml").write_text(
        "apiVersion: regctl/v1\nkind: Policy\nname: strict\nmatch: {params: {model_type: hmm}}\n"
        "rules:\n  - name: needs-a-signoff\n    aliases: [Production]\n"
        "    require_params: [signed_off_by]\n"
    )
    source.manifest.write_text(
        source.manifest.read_text().replace("[Staging]", "[Staging, Production]")
    )
    sha = source.push("promote without a sign-off")
    line = until(lambda: [x for x in c.lines() if f"commit={sha}" in x], 20, "judged")
    assert "result=denied" in line[0] and "signed_off_by" in line[0], line
    mlflow = client(hook_server)
    assert "Production" not in mlflow.get_registered_model(source.model).aliases
    assert c.stop() == 0


def test_an_unreachable_source_is_retried_with_backoff(
    hook_server: Server, tmp_path: Path, controllers: list[Ctl]
) -> None:
    missing = Source(tmp_path / "gone.git", tmp_path, "never")
    c = Ctl(hook_server, missing, tmp_path / "state", "--interval", "1")
    controllers.append(c)
    until(lambda: len([x for x in c.lines() if "retry result=error" in x]) >= 3, 30, "retries")
    waits = [x for x in c.lines() if "retry result=error" in x]
    assert "git clone failed" in waits[0]
    seconds = [float(re.search(r"wait=(\S+)", x).group(1)) for x in waits]  # type: ignore[union-attr]
    assert seconds[:3] == [1.0, 2.0, 4.0]  # backing off, doubling
    assert c.proc.poll() is None  # no crash loop: still running, alive, not ready
    assert c.get("/healthz")[0] == 200 and c.get("/readyz")[0] == 503
    assert c.stop() == 0


def test_a_restart_with_a_bad_head_keeps_the_last_good_commit(
    hook_server: Server, source: Source, tmp_path: Path, controllers: list[Ctl]
) -> None:
    state = tmp_path / "state"
    c = Ctl(hook_server, source, state, "--interval", "1")
    controllers.append(c)
    until(lambda: ready(c), 90, "ready")
    good = git("rev-parse", "HEAD", cwd=source.work)
    source.manifest.write_text(source.manifest.read_text() + "bad: [\n")
    bad = source.push("broken")
    until(lambda: [x for x in c.lines() if f"commit={bad}" in x], 20, "refused")
    assert c.stop() == 0
    again = Ctl(
        hook_server, source, state, "--interval", "1", "--sweep-interval", "5", "--self-heal"
    )
    controllers.append(again)
    mlflow = client(hook_server)
    mlflow.update_registered_model(source.model, "edited while it was down")
    # the head is still bad, but sweeps hold the registry to the last good commit
    until(lambda: mlflow.get_registered_model(source.model).description == "first", 60, "healed")
    assert ready(again) and again.get("/readyz")[1] == f"ready {good}\n"
    assert any(f"commit={bad}" in x and "result=invalid" in x for x in again.lines())
    assert again.stop() == 0
