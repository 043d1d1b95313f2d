"""Faults, races and hostile input (SPEC section 6): nothing is lost, nothing half-done.

Transport faults are injected by a proxy on loopback between regctl and the real server
(tests/faultproxy.py) and, for one case, with `responses`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from faultproxy import FaultProxy, Rule, is_write

from regctl.adapters.mlflow.registry import MlflowRegistry
from regctl.core.model import is_lease_model
from regctl.engine.lease import current
from regctl.errors import RegistryError, Unreachable

from conftest import REPO, Backend, Server, empty_sqlite, write_manifest

CLI = Callable[..., tuple[int, str, str]]
ERROR_BODY = json.dumps({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "busy"})


@pytest.fixture
def proxy(mlflow_server: Server) -> Iterator[FaultProxy]:
    p = FaultProxy(mlflow_server.url)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture(params=["sqlite-server", "postgres-server"])
def upstream(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[FaultProxy, Backend]]:
    """The write-path battery runs against both server backends, through the proxy."""
    name = "mlflow_server" if request.param == "sqlite-server" else "postgres_server"
    server = request.getfixturevalue(name)
    repo = tmp_path / "repo"
    (repo / "manifests").mkdir(parents=True)
    p = FaultProxy(server.url)
    try:
        yield p, Backend(request.param, server.url, repo)
    finally:
        p.close()


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """No backoff sleeps, short timeouts: the retry logic is the same, the test is quick."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")


def args(uri: str, repo: Path, *rest: str) -> list[str]:
    return ["--tracking-uri", uri, "--repo", str(repo), *rest]


def manifest(repo: Path, name: str, exp: str, runs: list[str], aliases: dict[str, str]) -> None:
    entries = ""
    for r in runs:
        al = [a for a, target in aliases.items() if target == r]
        entries += f"  - run: {r}\n    description: from {r}\n"
        if al:
            entries += f"    aliases: [{', '.join(al)}]\n"
    write_manifest(
        repo,
        name,
        f"apiVersion: regctl/v1\nkind: RegisteredModel\nname: {name}\nexperiment: {exp}\n"
        f"versions:{chr(10) + entries if entries else ' []' + chr(10)}",
    )


# -- transport ---------------------------------------------------------------------


def test_get_503_three_times_then_200_takes_exactly_four_requests_with_backoff(
    proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    proxy.add(Rule("GET", "/registered-models/search", "status", 503, ERROR_BODY, times=3))
    reg = MlflowRegistry(proxy.url)
    started = time.monotonic()
    reg.search_models(None)
    elapsed = time.monotonic() - started
    assert len(proxy.requests_to("/registered-models/search")) == 4
    assert elapsed >= 2.0  # backoff slept between the attempts


def test_503_three_times_with_responses(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same promise with `responses` (no server at all)."""
    import responses

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    url = "http://127.0.0.1:9/api/2.0/mlflow/registered-models/search"
    with responses.RequestsMock() as mock:
        for _ in range(3):
            mock.get(url, status=503, json={"error_code": "TEMPORARILY_UNAVAILABLE"})
        mock.get(url, status=200, json={"registered_models": [{"name": "m"}]})
        mock.get(url.replace("registered-models", "model-versions"), json={})
        found = MlflowRegistry("http://127.0.0.1:9").search_models(None)
        assert list(found) == ["m"]
        assert len([c for c in mock.calls if "registered-models" in c.request.url]) == 4


def test_429_retry_after_is_honoured(proxy: FaultProxy) -> None:
    proxy.add(
        Rule(
            "GET",
            "/registered-models/search",
            "status",
            429,
            ERROR_BODY,
            headers={"Retry-After": "2"},
            times=1,
        )
    )
    started = time.monotonic()
    MlflowRegistry(proxy.url).search_models(None)
    assert time.monotonic() - started >= 1.9
    assert len(proxy.requests_to("/registered-models/search")) == 2


def test_503_forever_fails_within_a_deadline_and_claims_nothing(
    proxy: FaultProxy, tmp_path: Path, run_cli: CLI, uniq: str, fast_retries: None
) -> None:
    repo = tmp_path / "repo"
    (repo / "manifests").mkdir(parents=True)
    manifest(repo, f"{uniq}-m", f"{uniq}-exp", [], {})
    proxy.add(Rule("*", "", "status", 503, ERROR_BODY))
    started = time.monotonic()
    code, out, err = run_cli(*args(proxy.url, repo, "apply", "--auto-approve"))
    assert code == 1
    assert time.monotonic() - started < 15
    assert "kept answering HTTP 503" in err
    assert "applied" not in (out + err).lower()


def test_a_server_that_never_answers_times_out(proxy: FaultProxy, fast_retries: None) -> None:
    proxy.add(Rule("GET", "/registered-models/search", "hang"))
    started = time.monotonic()
    with pytest.raises(Unreachable, match="timed out"):
        MlflowRegistry(proxy.url).search_models(None)
    assert time.monotonic() - started < 20  # 4 attempts x 2 s


def test_4xx_is_not_retried_and_the_server_message_is_shown(proxy: FaultProxy) -> None:
    body = json.dumps({"error_code": "INVALID_PARAMETER_VALUE", "message": "name is bad: x"})
    proxy.add(Rule("POST", "/registered-models/create", "status", 400, body))
    with pytest.raises(RegistryError, match="INVALID_PARAMETER_VALUE: name is bad: x"):
        MlflowRegistry(proxy.url).create_model("x", None, {})
    assert len(proxy.requests_to("/registered-models/create")) == 1


def test_connection_refused_names_host_and_port_never_a_credential(
    tmp_path: Path, run_cli: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw-SENTINEL-1")
    (tmp_path / "manifests").mkdir()
    uri = "http://alice:pw-SENTINEL-2@127.0.0.1:9"
    started = time.monotonic()
    code, out, err = run_cli(*args(uri, tmp_path, "diff"))
    assert code == 1
    assert time.monotonic() - started < 15
    assert "127.0.0.1:9" in err and "connection refused" in err
    assert "SENTINEL" not in out + err and "alice" not in out + err


# -- lost responses ------------------------------------------------------------------


def test_lost_create_response_leaves_one_version(
    upstream: tuple[FaultProxy, Backend], uniq: str, run_cli: CLI
) -> None:
    proxy, b = upstream
    exp = f"{uniq}-exp"
    b.make_runs(exp, ["a", "b"])
    name = f"{uniq}-lost"
    manifest(b.repo, name, exp, ["a", "b"], {"Production": "b"})
    # the server registers both versions; the client hears neither answer
    proxy.add(Rule("POST", "/model-versions/create", "drop", times=2))
    code, out, err = run_cli(*args(proxy.url, b.repo, "apply", "--auto-approve"))
    assert code == 0, err
    assert len(proxy.requests_to("/model-versions/create")) == 2  # never sent twice
    versions = b.client.search_model_versions(f"name = '{name}'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    assert {a: int(v) for a, v in b.client.get_registered_model(name).aliases.items()} == {
        "Production": 2
    }
    assert run_cli(*args(b.uri, b.repo, "diff", "--exit-code", name))[0] == 0


def test_mlflow_client_alone_would_duplicate_on_a_lost_response(
    proxy: FaultProxy, server_backend: Backend, uniq: str
) -> None:
    """Why the protection exists: MLflow's own store retries a create whose response was
    lost, and the registry ends up with two versions for one request."""
    b = server_backend
    run = b.make_runs(f"{uniq}-exp", ["a"])["a"]
    name = f"{uniq}-dup"
    b.client.create_registered_model(name)
    proxy.add(Rule("POST", "/model-versions/create", "drop", times=1))
    from mlflow import MlflowClient

    store = MlflowClient(proxy.url)._get_registry_client().store
    with contextlib.suppress(Exception):  # the client may still raise after its retries
        store.create_model_version(name, f"runs:/{run}", run_id=run)
    assert len(b.client.search_model_versions(f"name = '{name}'")) == 2


# -- crash convergence ---------------------------------------------------------------


def _plan_of_ten(b: Backend, uniq: str) -> tuple[str, list[str]]:
    """A manifest whose apply, from scratch, is exactly 10 registry writes at concurrency 1:
    create model (1), 5 versions (5), 4 aliases (4). Plus the lease's own writes."""
    exp = f"{uniq}-exp"
    runs = [f"r{i}" for i in range(5)]
    b.make_runs(exp, runs)
    name = f"{uniq}-crash"
    manifest(
        b.repo,
        name,
        exp,
        runs,
        {"Production": "r4", "Staging": "r3", "Canary": "r2", "Shadow": "r1"},
    )
    return name, runs


def _lease_request(proxy: FaultProxy, path: str) -> bool:
    """Whether the request being forwarded writes a lease model (by the name it carries)."""
    names = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query).get("name", [])
    with contextlib.suppress(ValueError, AttributeError):
        names.append(json.loads(proxy.request_body() or b"{}").get("name", ""))
    return any(isinstance(n, str) and is_lease_model(n) for n in names)


def _lease_of(b: Backend, pid: int) -> dict[str, str] | None:
    """The tags of the lease generation that process `pid` created, if any."""
    for rm in b.client.search_registered_models("name LIKE 'regctl-lease-%'"):
        if rm.tags.get("regctl.lease.pid") == str(pid):
            return dict(rm.tags)
    return None


@pytest.mark.parametrize("k", range(11))
def test_sigkill_after_write_k_then_apply_converges(
    k: int, upstream: tuple[FaultProxy, Backend], uniq: str, run_cli: CLI
) -> None:
    proxy, b = upstream
    name, runs = _plan_of_ten(b, uniq)
    env = dict(os.environ, PYTHONPATH=str(REPO / "controller"))
    cmd = [
        sys.executable,
        "-m",
        "regctl",
        *args(proxy.url, b.repo, "apply", "--auto-approve", "--concurrency", "1"),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    writes: dict[str, int] = {"n": 0}
    killed = threading.Event()

    def after(method: str, path: str, status: int) -> None:
        if not is_write(method, path):
            return
        if _lease_request(proxy, path):
            # the lease's own writes do not count; k = 0 dies right after taking it
            if k == 0 and path.endswith("/registered-models/create") and not killed.is_set():
                proc.kill()
                killed.set()
            return
        writes["n"] += 1
        if writes["n"] == k and not killed.is_set():
            proc.kill()  # the server committed write k; the client never hears back
            killed.set()

    proxy.on_forwarded = after
    proc.communicate(timeout=120)
    if k < 10:
        assert killed.is_set() and proc.returncode == -signal.SIGKILL
    # the killed apply left its lease, neither released nor expired: it ran on this machine
    # and its process is gone, so the next apply takes it over at once (no unlock, no wait)
    left = _lease_of(b, proc.pid)
    if k < 10:
        assert left is not None and "regctl.lease.released" not in left, left
    code, out, err = run_cli(*args(b.uri, b.repo, "apply", "--auto-approve", "--lock-timeout", "0"))
    assert code == 0, (out, err)
    if k == 10:  # killed after the last write: nothing left to do, no lease needed to see it
        assert "No changes" in out
    versions = b.client.search_model_versions(f"name = '{name}'")
    assert sorted(v.run_id for v in versions) == sorted({v.run_id for v in versions})
    assert len(versions) == 5  # one version per manifest entry
    model = b.client.get_registered_model(name)
    live = {int(v.version) for v in versions}
    assert {int(v) for v in model.aliases.values()} <= live  # no alias on a missing version
    assert run_cli(*args(b.uri, b.repo, "diff", "--exit-code", name))[0] == 0
    assert current(MlflowRegistry(b.uri)) is None


def test_sigterm_finishes_the_current_write_releases_the_lease_and_reports(
    upstream: tuple[FaultProxy, Backend], uniq: str, run_cli: CLI
) -> None:
    proxy, b = upstream
    name, _ = _plan_of_ten(b, uniq)
    env = dict(os.environ, PYTHONPATH=str(REPO / "controller"))
    cmd = [
        sys.executable,
        "-m",
        "regctl",
        *args(proxy.url, b.repo, "apply", "--auto-approve", "--concurrency", "1"),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = {"n": 0}

    def after(method: str, path: str, status: int) -> None:
        if path.endswith("/model-versions/create"):
            seen["n"] += 1
            if seen["n"] == 2:
                proc.send_signal(signal.SIGTERM)  # while write 3 of the plan is in flight

    proxy.on_forwarded = after
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, (out, err)
    match = re.search(r"applied (\d+) of 10 changes", err)
    assert match, err
    assert int(match.group(1)) == 3  # the model and the two versions whose writes completed
    assert "Apply complete" not in out
    assert current(MlflowRegistry(b.uri)) is None  # the lease was released
    assert len(b.client.search_model_versions(f"name = '{name}'")) == 2
    assert run_cli(*args(b.uri, b.repo, "apply", "--auto-approve"))[0] == 0
    assert len(b.client.search_model_versions(f"name = '{name}'")) == 5


# -- pagination ------------------------------------------------------------------------


def test_2501_models_are_read_across_pages(tmp_path: Path) -> None:
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    uri = empty_sqlite(tmp_path / "many.db")
    store = SqlAlchemyStore(uri)
    for i in range(2501):
        store.create_registered_model(f"m{i:04d}")
    reg = MlflowRegistry(uri)
    calls: list[str | None] = []
    original = reg._registry.search_registered_models

    def spy(**kw: Any) -> Any:
        calls.append(kw.get("page_token"))
        return original(**kw)

    reg._registry.search_registered_models = spy
    found = reg.search_models(None)
    assert len(found) == 2501
    assert len(calls) == 3 and calls[0] is None  # pages of 1,000


def test_a_repeated_page_token_is_detected(proxy: FaultProxy) -> None:
    page = json.dumps({"registered_models": [{"name": "loop"}], "next_page_token": "same"})
    proxy.add(Rule("GET", "/registered-models/search", "status", 200, page))
    with pytest.raises(RegistryError, match=r"page token .* twice"):
        MlflowRegistry(proxy.url).search_models(None)
    assert len(proxy.requests_to("/registered-models/search")) == 2


# -- prune safety --------------------------------------------------------------------


def test_prune_never_touches_unmanaged_models_and_refuses_mass_deletion(
    tmp_path: Path, run_cli: CLI
) -> None:
    b = Backend("sqlite", empty_sqlite(tmp_path / "p.db"), tmp_path / "repo")
    (b.repo / "manifests").mkdir(parents=True)
    runs = b.make_runs("exp", ["a", "b", "c", "d"])
    c = b.client
    c.create_registered_model("by-hand")  # not managed: never pruned
    c.create_model_version("by-hand", f"runs:/{runs['a']}", run_id=runs["a"])
    head = "apiVersion: regctl/v1\nkind: RegisteredModel\nname: m\nexperiment: exp\nprune: true\n"
    write_manifest(
        b.repo,
        "m",
        head
        + "versions:\n"
        + "".join(f"  - run: {r}\n" for r in "abcd")
        + "    aliases: [Production]\n",
    )
    write_manifest(
        b.repo,
        "gone",
        "apiVersion: regctl/v1\nkind: RegisteredModel\nname: gone\n"
        "experiment: exp\nversions:\n  - run: a\n    aliases: [Old]\n",
    )
    assert run_cli(*args(b.uri, b.repo, "apply", "--auto-approve"))[0] == 0
    # drop 3 of m's 4 entries and the whole 'gone' model: 5 of 7 managed objects
    write_manifest(b.repo, "m", head + "versions:\n  - run: d\n    aliases: [Production]\n")
    (b.repo / "manifests" / "gone.yaml").unlink()
    code, _, err = run_cli(*args(b.uri, b.repo, "apply", "--auto-approve", "--prune"))
    assert code == 1 and "--allow-mass-delete" in err
    code, out, _ = run_cli(*args(b.uri, b.repo, "diff", "--prune", "--allow-mass-delete"))
    # an alias goes before the version or model it is on
    lines = [ln.strip() for ln in out.splitlines()]
    assert lines.index("- alias Old (on version 1)") < lines.index("- registered model gone")
    assert "by-hand" not in out
    code, _, err = run_cli(
        *args(b.uri, b.repo, "apply", "--auto-approve", "--prune", "--allow-mass-delete")
    )
    assert code == 0, err
    assert [int(v.version) for v in c.search_model_versions("name = 'm'")] == [4]
    assert not c.search_registered_models("name = 'gone'")
    assert len(c.search_model_versions("name = 'by-hand'")) == 1


def test_prune_with_an_unreadable_manifest_set_is_refused(tmp_path: Path, run_cli: CLI) -> None:
    b = Backend("sqlite", empty_sqlite(tmp_path / "p.db"), tmp_path / "repo")
    (b.repo / "manifests").mkdir(parents=True)
    (b.repo / "manifests" / "broken.yaml").write_text("apiVersion: regctl/v1\nkind: [\n")
    code, _, err = run_cli(*args(b.uri, b.repo, "apply", "--auto-approve", "--prune"))
    assert code == 1 and "manifests/broken.yaml:" in err


# -- hostile input -------------------------------------------------------------------


def test_alias_bomb_is_refused_fast_and_small(tmp_path: Path) -> None:
    from regctl.adapters.manifests import load_manifests
    from regctl.errors import InputError
    from regctl.policy.loading import load_policies

    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        prev, cur = chr(96 + i), chr(97 + i)
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    bomb = "\n".join(lines) + "\n"
    for folder, loader in (("manifests", load_manifests), ("policies", load_policies)):
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / "bomb.yaml").write_text(bomb)
        tracemalloc.start()
        with pytest.raises(InputError, match="anchor"):
            loader(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 50 * 2**20  # expanded, the bomb is 9**10 strings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kind: Policy\napiVersion: regctl/v1\nname: p\nname: q\n", "duplicate key"),
        ("!!python/object/apply:os.system ['true']\n", "explicit YAML tag"),
        (
            "apiVersion: regctl/v1\nkind: Policy\nname: p\nmatch: {}\nrules: []\nextra: 1\n",
            "unknown field",
        ),
        ("a: " + "[" * 50 + "]" * 50 + "\n", "nesting deeper"),
    ],
)
def test_hostile_policy_files_are_refused(tmp_path: Path, text: str, expected: str) -> None:
    from regctl.errors import InputError
    from regctl.policy.loading import load_policies

    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text(text)
    with pytest.raises(InputError, match=expected):
        load_policies(tmp_path)


def test_hostile_run_directory_escapes_blocks_and_uploads_nothing(
    server_backend: Backend, uniq: str, run_cli: CLI, tmp_path: Path
) -> None:
    b = server_backend
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.txt").write_text("secret")
    d = b.repo / "runs" / "run_hmm_20251009_105640"
    d.mkdir(parents=True)
    (d / "pipeline_config.json").write_text('{"model_type": "hmm", "dataset": "d"}')
    (d / "metrics.json").write_text('{"bic_final": 1.0}')
    (d / "..hidden").write_text("a dotted name, still inside")
    (d / "line\nbreak.txt").write_text("x")
    os.symlink(outside / "secret.txt", d / "to-file")
    os.symlink(outside / "dir", d / "to-dir")
    os.symlink("../../..", d / "up")
    os.mkfifo(d / "fifo")
    write_manifest(
        b.repo,
        "h",
        f"apiVersion: regctl/v1\nkind: RegisteredModel\nname: {uniq}-h\n"
        f"experiment: {uniq}-exp\nversions:\n  - run: {d.name}\n    run_dir: runs/{d.name}\n",
    )
    code, _, err = run_cli(*args(b.uri, b.repo, "sync"))
    assert code == 0, err
    for name in ("to-file", "to-dir", "up", "fifo", "line"):
        assert name in err
    exp = b.client.get_experiment_by_name(f"{uniq}-exp")
    run = b.client.search_runs([exp.experiment_id])[0]
    paths = sorted(a.path for a in b.client.list_artifacts(run.info.run_id))
    assert paths == ["..hidden", "metrics.json", "pipeline_config.json"]


# -- secrets -------------------------------------------------------------------------

SENTINEL = "s3cr3t-SENTINEL-x9"


def test_no_output_or_plan_file_contains_a_credential(
    server_backend: Backend,
    uniq: str,
    run_cli: CLI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    b = server_backend
    b.make_runs(f"{uniq}-exp", ["a"])
    manifest(b.repo, f"{uniq}-s", f"{uniq}-exp", ["a"], {"Production": "a"})
    (b.repo / "policies").mkdir()
    (b.repo / "policies" / "p.yaml").write_text(
        "apiVersion: regctl/v1\nkind: Policy\nname: p\nmatch: {}\nrules:\n"
        "  - name: d\n    require_description: true\n"
    )
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", SENTINEL)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SENTINEL)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    host = b.uri.split("://", 1)[1]
    uri = f"http://bob:{SENTINEL}@{host}"
    plan = tmp_path / "plan.json"
    outputs = []
    for cmd in (
        ["validate"],
        ["sync", "--dry-run"],
        ["check"],
        ["check", "--format", "json"],
        ["check", "--format", "github"],
        ["check", "--format", "markdown"],
        ["diff"],
        ["diff", "--format", "json"],
        ["diff", "--format", "markdown"],
        ["diff", "--out", str(plan)],
        ["apply", "--auto-approve"],
        ["--debug", "diff"],
        ["unlock", "nope"],
        ["resolve", f"{uniq}-s@Production"],
        ["resolve", f"{uniq}-s@Production", "--format", "json"],
        ["resolve", "nope@x"],
    ):
        code, out, err = run_cli("--tracking-uri", uri, "--repo", str(b.repo), *cmd)
        outputs.append((cmd, code, out + err))
    # errors against an unreachable server, with credentials in the URI
    for cmd in (["diff"], ["--debug", "apply", "--auto-approve"]):
        code, out, err = run_cli(
            "--tracking-uri", f"http://bob:{SENTINEL}@127.0.0.1:9", "--repo", str(b.repo), *cmd
        )
        assert code == 1
        outputs.append((cmd, code, out + err))
    for cmd, _code, text in outputs:
        assert SENTINEL not in text, (cmd, text)
    assert SENTINEL not in plan.read_text()
    assert any(code == 0 for _, code, _ in outputs)


def test_leftover_lease_model_is_never_managed(server_backend: Backend) -> None:
    from regctl.engine.lease import acquire

    registry = MlflowRegistry(server_backend.uri)
    held = acquire(registry, "a test", "", timeout=30)
    held.release()  # a released generation stays: the next acquirer deletes it
    # even tagged as managed by hand, a lease model is never managed (prune never deletes it)
    server_backend.client.set_registered_model_tag(held.lease.model, "regctl.managed", "true")
    models = registry.search_models(None)
    assert held.lease.model in models
    assert not [n for n, m in models.items() if m.managed and is_lease_model(n)]
