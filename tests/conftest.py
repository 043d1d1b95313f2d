"""Shared fixtures: a real `mlflow server` on loopback, per-test sqlite stores, helpers.

The server is started once per test session (SQLite backend, proxied artifacts, one
worker, job execution off: about 5 s). Tests share it and isolate themselves by unique
model and experiment names (the `uniq` fixture).

A second server backed by PostgreSQL (`postgres_server`) is started on first use: a
throwaway cluster in a temporary folder, run as an unprivileged user when the tests run
as root (PostgreSQL refuses to run as root). The `backend` fixture runs each test on
the SQLite server, the embedded sqlite:/// store and the PostgreSQL server.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from githubstub import GitHubStub

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("MLFLOW_REGISTRY_URI", None)

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "controller") not in sys.path:
    sys.path.insert(0, str(REPO / "controller"))


_MIGRATE = """
import sys, sqlalchemy
from mlflow.store.db.utils import _initialize_tables
engine = sqlalchemy.create_engine("sqlite:///" + sys.argv[1])
_initialize_tables(engine)
engine.dispose()
"""


@functools.cache
def _sqlite_template() -> Path:
    """This test process's migrated, empty database (tables only, made in a child process
    so no engine of ours holds it open); removed when the process exits."""
    folder = Path(tempfile.mkdtemp(prefix="regctl-sqlite-template-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    template = folder / "mlflow.db"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    done = subprocess.run(
        [sys.executable, "-c", _MIGRATE, str(template)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError("migrating the sqlite template failed:\n" + done.stderr[-3000:])
    return template


def empty_sqlite(path: Path) -> str:
    """A migrated, empty MLflow database at `path`; its sqlite:/// URI.

    Migrating a new SQLite file costs about 5 s of CPU, and the suite opens about a
    hundred of them, so each test process migrates one template and copies it. The
    default experiment is not in the template: the first store that opens the copy
    creates it, with that store's own artifact root, exactly as on a new file."""
    if path.exists():
        raise FileExistsError(f"{path}: a test database is made once")
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_sqlite_template(), path)
    return f"sqlite:///{path}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    root: Path


def _start_server(
    root: Path,
    backend_store_uri: str | None = None,
    *,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 90,
) -> Server:
    """An `mlflow server` on a free loopback port; SQLite in `root` unless a URI is given.
    `extra_args` go after `server` (e.g. `--app-name basic-auth`); `env` replaces the
    environment the server gets (default: this one)."""
    port = free_port()
    environment = dict(os.environ if env is None else env)
    environment.update(
        {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    )
    if backend_store_uri is None and not (root / "mlflow.db").exists():
        empty_sqlite(root / "mlflow.db")
    log = (root / "server.log").open("wb")
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        *extra_args,
        "--backend-store-uri",
        backend_store_uri or f"sqlite:///{root / 'mlflow.db'}",
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
        cmd,
        cwd=root,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()  # the child holds its own copy
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
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
    raise RuntimeError(f"mlflow server did not become healthy in {timeout:.0f} s")


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


POSTGRES_BINARIES = ("initdb", "postgres")


def postgres_bindir() -> Path | None:
    """The folder holding PostgreSQL's `initdb` and `postgres`: PATH, then Debian's place."""
    first = shutil.which(POSTGRES_BINARIES[0])
    candidates = [Path(first).resolve().parent] if first else []
    candidates += [Path(f) for f in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for folder in candidates:
        if all((folder / b).is_file() for b in POSTGRES_BINARIES):
            return folder
    return None


@dataclass
class Postgres:
    """A throwaway PostgreSQL cluster: `uri` names its `mlflow` database over TCP."""

    uri: str
    proc: subprocess.Popen[bytes]
    root: Path


def _unprivileged() -> dict[str, Any]:
    """Popen arguments that drop root for PostgreSQL; none when not root.

    PostgreSQL refuses to run as root, and so does initdb. The tests (and CI) run as
    root, so the cluster runs as `nobody`, or as a system user `regctl-pg` created on
    first use where `nobody` is missing.
    """
    if os.geteuid() != 0:
        return {}
    try:
        pw = pwd.getpwnam("nobody")
    except KeyError:
        try:
            pw = pwd.getpwnam("regctl-pg")
        except KeyError:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    "regctl-pg",
                ],
                check=True,
                capture_output=True,
            )
            pw = pwd.getpwnam("regctl-pg")
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def _start_postgres(bindir: Path) -> Postgres:
    """initdb (trust auth) and start `postgres` on a free loopback port, socket in the folder.

    The folder comes from `tempfile` rather than pytest's tmp_path, whose parent is
    private to root (mode 0700) and so closed to the unprivileged user.
    """
    drop = _unprivileged()
    root = Path(tempfile.mkdtemp(prefix="regctl-pg-"))
    if drop:
        os.chown(root, drop["user"], drop["group"])
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(root), "LC_ALL": "C"}
    data = root / "data"
    init = subprocess.run(
        [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        **drop,
    )
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb failed:\n{init.stdout}{init.stderr}")
    port = free_port()
    log = (root / "postgres.log").open("wb")
    # durability off: the cluster lives for one test session
    settings = {
        "listen_addresses": "127.0.0.1",
        "port": str(port),
        "unix_socket_directories": str(root),
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
    }
    cmd = [str(bindir / "postgres"), "-D", str(data)]
    for key, value in settings.items():
        cmd += ["-c", f"{key}={value}"]
    proc = subprocess.Popen(
        cmd,
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        **drop,
    )
    log.close()  # the child holds its own copy
    # the driver is named: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3
    pg = Postgres(f"postgresql+psycopg2://postgres@127.0.0.1:{port}/mlflow", proc, root)
    try:
        _create_database(pg, port)
    except BaseException:
        _stop_postgres(pg)
        raise
    return pg


def _create_database(pg: Postgres, port: int) -> None:
    """Wait until the cluster accepts connections, then create the `mlflow` database."""
    try:
        import psycopg2
    except ImportError as exc:  # the mlflow server needs it too
        raise RuntimeError("psycopg2 is missing: pip install -e '.[dev]'") from exc
    deadline = time.monotonic() + 30
    while True:
        if pg.proc.poll() is not None:
            raise RuntimeError(
                "postgres exited:\n" + (pg.root / "postgres.log").read_text()[-3000:]
            )
        try:
            conn = psycopg2.connect(
                host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=2
            )
            break
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE mlflow")
    finally:
        conn.close()


def _stop_postgres(pg: Postgres) -> None:
    """Fast shutdown (SIGINT), then remove the cluster's folder."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pg.proc.pid, signal.SIGINT)
    try:
        pg.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pg.proc.pid, signal.SIGKILL)
        pg.proc.wait(timeout=15)
    shutil.rmtree(pg.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A second real MLflow server, backed by a throwaway PostgreSQL cluster.

    Skipped when PostgreSQL's server binaries are absent, except under CI (CI=true),
    where that is a failure: CI must test both backends.
    """
    bindir = postgres_bindir()
    if bindir is None:
        reason = (
            "PostgreSQL server binaries (initdb, postgres) not found on PATH or in "
            "/usr/lib/postgresql/*/bin: the postgres backend is not tested"
        )
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason)
        pytest.skip(reason)
    pg = _start_postgres(bindir)
    try:
        root = tmp_path_factory.mktemp("mlflow-postgres")
        server = _start_server(root, pg.uri)
        try:
            yield server
        finally:
            _stop(server.proc)
    finally:
        _stop_postgres(pg)


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


@pytest.fixture(params=["server", "sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Parametrised over the real server (SQLite), the embedded sqlite:/// store and a
    real server backed by PostgreSQL."""
    repo = tmp_path / "repo"
    (repo / "manifests").mkdir(parents=True)
    if request.param == "server":
        server = request.getfixturevalue("mlflow_server")
        return Backend("server", server.url, repo)
    if request.param == "postgres":
        server = request.getfixturevalue("postgres_server")
        return Backend("postgres", server.url, repo)
    return Backend("sqlite", empty_sqlite(tmp_path / "mlflow.db"), repo)


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


@pytest.fixture
def github_stub() -> Iterator[GitHubStub]:
    """GitHub's REST API on loopback (tests/githubstub.py), empty, stopped afterwards."""
    with GitHubStub() as stub:
        yield stub


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


WRITE_METHODS = (
    "create_model",
    "update_model_description",
    "set_model_tag",
    "create_version",
    "update_version_description",
    "set_alias",
    "delete_alias",
    "delete_version",
    "delete_model",
    "create_experiment",
    "create_run",
    "log_batch",
    "upload_artifact",
    "finish_run",
)
"""The adapter's write methods: one call, one write request."""


def init_git(repo: Path) -> Any:
    """A git repository in `repo` with a committer, ignoring the local store."""
    import git

    r = git.Repo.init(repo, initial_branch="main")
    with r.config_writer() as cw:
        cw.set_value("user", "name", "Ada Lovelace")
        cw.set_value("user", "email", "ada@example.com")
    (repo / ".gitignore").write_text("*.db\nmlruns/\nplan.json\n")
    return r


def git_commit(r: Any, message: str, author: str = "Ada Lovelace <ada@example.com>") -> str:
    """Commit everything; the new head's sha."""
    r.git.add("-A")
    r.git.commit("-m", message, author=author)
    return str(r.head.commit.hexsha)
