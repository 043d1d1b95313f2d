"""docs/remote.md's read-only credential, against a real `mlflow server --app-name basic-auth`.

The pull-request plan job runs the branch's code with the plan credential, so whoever can
push a branch holds it. These tests follow the recipe in docs/remote.md ("A read-only
credential with MLflow's basic-auth app") step by step on a loopback server and prove
what it promises: the reader plans (`diff`, `check`), cannot write anything through regctl
(`apply` exits 1 with one line and the registry is unchanged) nor around it (no new
model or experiment: that needs `--enable-workspaces`), while the writer's role is enough
for the apply job's `sync` and `apply`.

The server (SQLite, one worker, job execution off, workspaces on) starts once for this
module: 17 s to a minute measured on this 2-core machine, with the load (the plain test
server: 5-6 s); the auth app creates and migrates its own database first. regctl runs in
this process except for the one `apply` that must show what a fresh CI process prints.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import REPO, Server, _start_server, _stop

ADMIN = ("admin", "admin-Passw0rd-for-tests")
READER = ("regctl-plan", "reader-Passw0rd-for-tests")
WRITER = ("regctl-apply", "writer-Passw0rd-for-tests")
LGBM = "btcusdt-1h-inference-7d-logret"
LGBM_MANIFEST = Path("manifests") / f"{LGBM}.yaml"

# The server side of the recipe: basic_auth.ini as docs/remote.md shows it.
BASIC_AUTH_INI = """\
[mlflow]
default_permission = READ
database_uri = sqlite:///{db}
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = 60
"""


@dataclass
class AuthServer:
    server: Server
    start_seconds: float

    @property
    def url(self) -> str:
        return self.server.url

    def call(
        self, method: str, path: str, who: tuple[str, str] = ADMIN, **kw: Any
    ) -> requests.Response:
        return requests.request(method, self.url + path, auth=who, timeout=30, **kw)

    def ok(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        resp = self.call(method, path, **kw)
        assert resp.status_code == 200, (method, path, resp.status_code, resp.text)
        body = resp.json()
        assert isinstance(body, dict)
        return body


def _start_auth_server(root: Path) -> AuthServer:
    """`_start_server` of conftest.py, with the basic-auth app and workspaces turned on."""
    (root / "basic_auth.ini").write_text(BASIC_AUTH_INI.format(db=root / "basic_auth.db"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env.update(
        {
            "MLFLOW_AUTH_CONFIG_PATH": str(root / "basic_auth.ini"),
            "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
            "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-only-csrf-key",
        }
    )
    started = time.monotonic()
    server = _start_server(
        root,
        extra_args=("--app-name", "basic-auth", "--enable-workspaces"),
        env=env,
        timeout=120,
    )
    return AuthServer(server, time.monotonic() - started)


def _make_users(srv: AuthServer) -> None:
    """The recipe's REST calls, as docs/remote.md lists them."""
    for username, password in (READER, WRITER):
        srv.ok(
            "POST",
            "/api/2.0/mlflow/users/create",
            json={"username": username, "password": password},
        )
    # the reader: READ on every experiment and registered model, nothing on the workspace
    for resource_type in ("experiment", "registered_model"):
        srv.ok(
            "POST",
            "/api/3.0/mlflow/users/permissions/grant",
            json={
                "username": READER[0],
                "resource_type": resource_type,
                "resource_id": "*",
                "permission": "READ",
            },
        )
    # the writer: a role that may create in the workspace and edit what exists
    role = srv.ok(
        "POST",
        "/api/3.0/mlflow/roles/create",
        json={"name": "regctl-apply", "workspace": "default"},
    )["role"]["id"]
    for resource_type, permission in (
        ("workspace", "USE"),
        ("experiment", "EDIT"),
        ("registered_model", "MANAGE"),
    ):
        srv.ok(
            "POST",
            "/api/3.0/mlflow/roles/permissions/add",
            json={
                "role_id": role,
                "resource_type": resource_type,
                "resource_pattern": "*",
                "permission": permission,
            },
        )
    srv.ok("POST", "/api/3.0/mlflow/roles/assign", json={"username": WRITER[0], "role_id": role})


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    try:
        import flask_wtf  # noqa: F401  (mlflow[auth]: the basic-auth app imports it)
    except ImportError:
        pytest.fail("Flask-WTF is missing: pip install -e '.[dev]' (mlflow[auth])")
    srv = _start_auth_server(tmp_path_factory.mktemp("mlflow-basic-auth"))
    try:
        print(f"basic-auth server up in {srv.start_seconds:.1f} s")
        _make_users(srv)
        yield srv
    finally:
        _stop(srv.server.proc)


def _env(srv: AuthServer, who: tuple[str, str]) -> dict[str, str]:
    """The credential in MLflow's variables, as the CI jobs' `env:` sets them."""
    return {
        "MLFLOW_TRACKING_URI": srv.url,
        "MLFLOW_TRACKING_USERNAME": who[0],
        "MLFLOW_TRACKING_PASSWORD": who[1],
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    }


def regctl(srv: AuthServer, who: tuple[str, str], repo: Path, *args: str) -> tuple[int, str, str]:
    """regctl in this process (no second import of mlflow) with `who`'s credential."""
    from regctl.cli import main

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        for key in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_REGISTRY_URI"):
            mp.delenv(key, raising=False)
        for key, value in _env(srv, who).items():
            mp.setenv(key, value)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["--repo", str(repo), *args])
    return code, out.getvalue(), err.getvalue()


def regctl_process(
    srv: AuthServer, who: tuple[str, str], repo: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """regctl as the CI jobs run it: a fresh process, nothing but the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "REGCTL_"))}
    env.update(_env(srv, who))
    env.update({"PYTHONPATH": str(REPO / "controller"), "MLFLOW_DISABLE_TELEMETRY": "true"})
    return subprocess.run(
        [sys.executable, "-m", "regctl", "--repo", str(repo), *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def registry_state(srv: AuthServer) -> dict[str, Any]:
    """Everything a write could change that regctl writes, read with the admin account."""
    models = srv.ok("GET", "/api/2.0/mlflow/registered-models/search?max_results=1000")
    versions = srv.ok("GET", "/api/2.0/mlflow/model-versions/search?max_results=10000")
    experiments = srv.ok("POST", "/api/2.0/mlflow/experiments/search", json={"max_results": 1000})
    ids = [e["experiment_id"] for e in experiments.get("experiments", [])]
    runs = srv.ok("POST", "/api/2.0/mlflow/runs/search", json={"experiment_ids": ids})
    return {
        "models": models.get("registered_models", []),
        "versions": versions.get("model_versions", []),
        "experiments": experiments.get("experiments", []),
        "runs": runs.get("runs", []),
    }


@pytest.fixture(scope="module")
def applied(auth_server: AuthServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped examples, synced and applied with the writer's role, as the apply job does."""
    repo = tmp_path_factory.mktemp("auth-repo")
    for part in ("manifests", "policies", "examples"):
        shutil.copytree(REPO / part, repo / part, symlinks=True)
    for command in (["sync"], ["apply", "--auto-approve"]):
        code, out, err = regctl(auth_server, WRITER, repo, *command)
        assert code == 0, (command, out, err)
    return repo


@contextlib.contextmanager
def changed_manifest(repo: Path) -> Iterator[None]:
    """A reviewed-looking change to one manifest: a new description and one more tag."""
    manifest = repo / LGBM_MANIFEST
    text = manifest.read_text()
    changed = text.replace("description: 7-day", "description: Seven-day", 1).replace(
        "task: regression}", "task: regression, reviewed: 'no'}", 1
    )
    assert changed.count("Seven-day") == 1 and "reviewed" in changed
    manifest.write_text(changed)
    try:
        yield
    finally:
        manifest.write_text(text)


def test_the_read_only_credential_plans(auth_server: AuthServer, applied: Path) -> None:
    """What the plan and drift jobs run works with READ alone: diff exits 0, then 2."""
    for command in (["diff", "--exit-code"], ["check"]):
        code, out, err = regctl(auth_server, READER, applied, *command)
        assert code == 0, (command, out, err)
    with changed_manifest(applied):
        code, out, err = regctl(
            auth_server, READER, applied, "diff", "--exit-code", "--format", "markdown"
        )
    assert code == 2, (out, err)
    assert "Seven-day" in out and "reviewed" in out


def test_the_read_only_credential_cannot_apply(auth_server: AuthServer, applied: Path) -> None:
    """A pushed branch's code runs `regctl apply` with the plan credential: nothing is written."""
    before = registry_state(auth_server)
    assert any(m["name"] == LGBM for m in before["models"])
    with changed_manifest(applied):
        proc = regctl_process(auth_server, READER, applied, "apply", "--auto-approve")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith("error: ") and "403" in errors[0], errors[0]
    assert "Permission denied" in errors[0], errors[0]
    assert READER[1] not in proc.stdout + proc.stderr
    assert registry_state(auth_server) == before
    # and the same change applies with the writer's role, so the reader's failure was
    # the permission, not the change
    with changed_manifest(applied):
        code, out, err = regctl(auth_server, WRITER, applied, "apply", "--auto-approve")
        assert code == 0, (out, err)
        assert regctl(auth_server, READER, applied, "diff", "--exit-code")[0] == 0
    code, out, err = regctl(auth_server, WRITER, applied, "apply", "--auto-approve")
    assert code == 0, (out, err)


def test_the_read_only_credential_cannot_write_around_regctl(
    auth_server: AuthServer, applied: Path
) -> None:
    """The credential leaks to anyone who can push a branch: try it with MLflow's REST API.

    With workspaces off, MLflow's basic-auth app lets every user create experiments and
    models (and makes them MANAGE of what they created); `--enable-workspaces` without a
    workspace grant is what takes that away.
    """
    before = registry_state(auth_server)
    [exp] = [e for e in before["experiments"] if e["name"] == "binance-btcusdt-perp-1h-7d-logret"]
    [run] = [r for r in before["runs"] if r["info"]["experiment_id"] == exp["experiment_id"]]
    attempts = [
        ("POST", "/api/2.0/mlflow/registered-models/create", {"name": "squatted"}),
        ("POST", "/api/2.0/mlflow/experiments/create", {"name": "squatted"}),
        (
            "POST",
            "/api/2.0/mlflow/registered-models/alias",
            {"name": LGBM, "alias": "Production", "version": "1"},
        ),
        ("PATCH", "/api/2.0/mlflow/registered-models/update", {"name": LGBM, "description": "x"}),
        (
            "POST",
            "/api/2.0/mlflow/model-versions/create",
            {
                "name": LGBM,
                "source": f"runs:/{run['info']['run_id']}/model",
                "run_id": run["info"]["run_id"],
            },
        ),
        ("DELETE", "/api/2.0/mlflow/registered-models/delete", {"name": LGBM}),
        ("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": exp["experiment_id"]}),
        (
            "POST",
            "/api/2.0/mlflow/runs/log-metric",
            {"run_id": run["info"]["run_id"], "key": "rmse", "value": 0.0, "timestamp": 0},
        ),
        (
            "POST",
            "/api/2.0/mlflow/users/create",
            {"username": "mallory", "password": "mallory-Passw0rd"},
        ),
        (
            "POST",
            "/api/3.0/mlflow/users/permissions/grant",
            {
                "username": READER[0],
                "resource_type": "registered_model",
                "resource_id": "*",
                "permission": "MANAGE",
            },
        ),
        ("POST", "/api/3.0/mlflow/roles/create", {"name": "mine", "workspace": "default"}),
    ]
    for method, path, body in attempts:
        resp = auth_server.call(method, path, READER, json=body)
        assert resp.status_code == 403, (method, path, resp.status_code, resp.text)
    # nor overwrite a registered run's files (the proxied artifact store)
    artifacts = run["info"]["artifact_uri"].removeprefix("mlflow-artifacts:/")
    model_txt = f"/api/2.0/mlflow-artifacts/artifacts/{artifacts}/model.txt"
    assert auth_server.call("GET", model_txt, READER).status_code == 200
    resp = auth_server.call("PUT", model_txt, READER, data=b"tampered")
    assert resp.status_code == 403, (resp.status_code, resp.text)
    assert auth_server.call("GET", model_txt).content != b"tampered"
    assert registry_state(auth_server) == before
