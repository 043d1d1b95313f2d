"""Shared fixtures: a real `mlflow server` on loopback, per-test sqlite stores, helpers.

The server is started once per test session (SQLite backend, proxied artifacts, one
worker, job execution off: about 5 s). Tests share it and isolate themselves by unique
model and experiment names (the `uniq` fixture).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("MLFLOW_REGISTRY_URI", None)

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "controller") not in sys.path:
    sys.path.insert(0, str(REPO / "controller"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    root: Path


def _start_server(root: Path) -> Server:
    port = free_port()
    env = dict(os.environ)
    env.update({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"})
    log = (root / "server.log").open("wb")
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "mlartifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    proc = subprocess.Popen(
        cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                "mlflow server exited:\n" + (root / "server.log").read_text()[-3000:]
            )
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return Server(url, proc, root)
        except OSError:
            time.sleep(0.25)
    _stop(proc)
    raise RuntimeError("mlflow server did not become healthy in 90 s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real MLflow server for the whole test session."""
    root = tmp_path_factory.mktemp("mlflow-server")
    server = _start_server(root)
    try:
        yield server
    finally:
        _stop(server.proc)


@pytest.fixture
def uniq(request: pytest.FixtureRequest) -> str:
    """A short prefix unique to this test, for names on the shared server."""
    return f"t{uuid.uuid4().hex[:8]}"


@dataclass
class Backend:
    """Where a test's registry lives: the shared server or a private sqlite file."""

    kind: str
    uri: str
    repo: Path
    _client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(self.uri, self.uri)
        return self._client

    def make_runs(self, experiment: str, names: list[str]) -> dict[str, str]:
        """Create finished runs by name; returns name -> run id."""
        c = self.client
        exp = c.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else c.create_experiment(experiment)
        out = {}
        for name in names:
            run = c.create_run(exp_id, run_name=name)
            c.set_terminated(run.info.run_id)
            out[name] = run.info.run_id
        return out


@pytest.fixture(params=["server", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Parametrised over the real server and the embedded sqlite:/// store."""
    repo = tmp_path / "repo"
    (repo / "manifests").mkdir(parents=True)
    if request.param == "server":
        server = request.getfixturevalue("mlflow_server")
        return Backend("server", server.url, repo)
    return Backend("sqlite", f"sqlite:///{tmp_path / 'mlflow.db'}", repo)


@pytest.fixture
def server_backend(mlflow_server: Server, tmp_path: Path) -> Backend:
    repo = tmp_path / "repo"
    (repo / "manifests").mkdir(parents=True)
    return Backend("server", mlflow_server.url, repo)


@dataclass
class Recorder:
    """Every HTTP request the process sends through `requests`, as (method, path)."""

    calls: list[tuple[str, str]] = field(default_factory=list)

    def writes(self) -> list[tuple[str, str]]:
        return [
            c
            for c in self.calls
            if c[0] in ("POST", "PATCH", "PUT", "DELETE")
            and not c[1].endswith("/search")
            and "/runs/search" not in c[1]
        ]

    def clear(self) -> None:
        self.calls.clear()


@pytest.fixture
def http_log(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """Counts real HTTP requests (the server still answers them)."""
    import requests.adapters

    rec = Recorder()
    original = requests.adapters.HTTPAdapter.send

    def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        from urllib.parse import urlsplit

        rec.calls.append((request.method, urlsplit(request.url).path))
        return original(self, request, *args, **kwargs)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)
    return rec


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run `regctl` in-process; returns (exit code, stdout, stderr)."""
    from regctl.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def write_manifest(repo: Path, name: str, body: str) -> Path:
    path = repo / "manifests" / f"{name}.yaml"
    path.write_text(textwrap.dedent(body).lstrip(), encoding="utf-8")
    return path


@pytest.fixture
def examples_repo(tmp_path: Path) -> Path:
    """A copy of the shipped manifests, policies and example run directories."""
    dest = tmp_path / "examples-repo"
    for part in ("manifests", "policies", "examples"):
        src = REPO / part
        if src.exists():
            shutil.copytree(src, dest / part, symlinks=True)
    return dest
