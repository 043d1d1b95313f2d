"""Exact HTTP request counts of issue 7's targets 2, 4 and 5, against the real server.

Counts are exact where times are noisy, so these tests pin what benchmarks/run.py
measures at scale: observe/diff costs a constant number of requests however many models
there are, apply writes one request per change plus documented constants, and a second
sync of a synced run directory costs at most one request per directory and no upload.

The server is shared with other tests, so a complete (unscoped) observe reads every
model on it: the registered-model search pages are counted from the server's size
(1,000 models per page) rather than assumed.
"""

from __future__ import annotations

import math
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from regctl.adapters.mlflow.registry import MlflowRegistry
from regctl.engine.lease import acquire

from conftest import REPO, Backend, Recorder, write_manifest

CLI = Callable[..., tuple[int, str, str]]
API = "/api/2.0/mlflow"
EXAMPLES = REPO / "examples" / "runs" / "BINANCE_BTCUSDT.P, 60"

pytestmark = pytest.mark.server


def args(b: Backend, *rest: str) -> list[str]:
    return ["--tracking-uri", b.uri, "--repo", str(b.repo), *rest]


def kinds(rec: Recorder) -> Counter[str]:
    """Requests by `METHOD /path` (the API prefix dropped)."""
    return Counter(f"{m} {p.removeprefix(API)}" for m, p in rec.calls)


def clean_diff(b: Backend, run_cli: CLI, http_log: Recorder, *names: str) -> Counter[str]:
    """Requests of a `diff --exit-code` that finds the registry matching the manifests."""
    http_log.clear()
    code, out, err = run_cli(*args(b, "diff", "--exit-code", *names))
    assert code == 0, out + err
    assert "matches the manifests" in out
    return kinds(http_log)


def searches(models: int, versions: int = 1, runs: int = 1) -> dict[str, int]:
    """The requests of a complete observe: model pages, version pages, one experiment
    search and the run searches."""
    return {
        "GET /registered-models/search": models,
        "GET /model-versions/search": versions,
        "POST /experiments/search": 1,
        "POST /runs/search": runs,
    }


def model_pages(b: Backend) -> int:
    """Pages a complete registered-model search takes on the shared server now."""
    store = b.client._get_registry_client().store
    total, token = 0, None
    while True:
        page = store.search_registered_models(max_results=1000, page_token=token)
        total += len(page)
        token = page.token
        if not token:
            return max(1, math.ceil(total / 1000))


def fleet(
    b: Backend,
    prefix: str,
    n: int,
    *,
    prod: int = 2,
    described: str = "v1",
    by_id: bool = False,
) -> None:
    """n managed models x 3 versions (runs r0-r2 of one experiment) x 2 aliases, seeded
    through the store (one request per object) and declared by matching manifests with
    `prod` on version `prod` and version 1's description `described`. With `by_id`,
    every version has a run of its own and the entries name it by id."""
    from mlflow.entities.model_registry import RegisteredModelTag

    exp = f"{prefix}-exp"
    shared = b.make_runs(exp, ["r0", "r1", "r2"])
    store = b.client._get_registry_client().store
    for i in range(n):
        name = f"{prefix}-m{i:03d}"
        # by id: three runs of its own per model, so that ids grow with the versions
        runs = b.make_runs(exp, [f"m{i}-r{j}" for j in range(3)]) if by_id else shared
        if by_id:
            runs = {f"r{j}": runs[f"m{i}-r{j}"] for j in range(3)}
        store.create_registered_model(name, tags=[RegisteredModelTag("regctl.managed", "true")])
        for j in range(3):
            run_id = runs[f"r{j}"]
            store.create_model_version(
                name, f"runs:/{run_id}", run_id=run_id, description=f"v{j + 1}"
            )
        store.set_registered_model_alias(name, "prod", "2")
        store.set_registered_model_alias(name, "staging", "3")
        entries = "".join(
            (f"  - run_id: {runs[f'r{j}']}\n" if by_id else f"  - run: r{j}\n")
            + f"    description: {described if j == 0 else f'v{j + 1}'}\n"
            + (f"    aliases: [{', '.join(a)}]\n" if (a := aliases(j + 1, prod)) else "")
            for j in range(3)
        )
        where = "" if by_id else f"experiment: {exp}\n"
        write_manifest(
            b.repo,
            name,
            f"apiVersion: regctl/v1\nkind: RegisteredModel\nname: {name}\n{where}"
            f"versions:\n{entries}",
        )


def aliases(version: int, prod: int) -> list[str]:
    return [a for a, at in (("prod", prod), ("staging", 3)) if at == version]


# -- target 2: observe and diff ------------------------------------------------------------


def test_diff_requests_do_not_grow_with_models(
    server_backend: Backend, uniq: str, run_cli: CLI, http_log: Recorder, tmp_path: Path
) -> None:
    """N models x 3 versions x 2 aliases, no changes: N=20 and N=60 cost the same requests,
    exactly ceil(models/1000) + ceil(versions/200000) + 1 experiment search + 1 run search
    (for up to 100 experiments)."""
    counts = {}
    for n in (20, 60):
        repo = tmp_path / f"repo-{n}"
        (repo / "manifests").mkdir(parents=True)
        b = Backend("server", server_backend.uri, repo)
        fleet(b, f"{uniq}-n{n}", n)
        counts[n] = clean_diff(b, run_cli, http_log)
        assert counts[n] == searches(model_pages(b))
    assert sum(counts[20].values()) == sum(counts[60].values())


def test_run_lookups_of_several_experiments_share_one_search(
    server_backend: Backend, uniq: str, run_cli: CLI, http_log: Recorder
) -> None:
    """Models whose runs live in three experiments: still one experiment search and one
    run search (ceil(runs/50000) pages over up to 100 experiments), not one per experiment."""
    b = server_backend
    for part in ("a", "b", "c"):
        fleet(b, f"{uniq}-{part}", 4)
    assert clean_diff(b, run_cli, http_log) == searches(model_pages(b))


def test_scoped_diff_requests_grow_by_name_filter_chunks(
    server_backend: Backend, uniq: str, run_cli: CLI, http_log: Recorder
) -> None:
    """Scoped to named models, models and versions are searched with `name IN (...)`
    filters of NAMES_PER_FILTER names each: two requests per chunk, not per model."""
    from regctl.adapters.mlflow.read import NAMES_PER_FILTER

    b = server_backend
    n = NAMES_PER_FILTER + 10
    fleet(b, uniq, n)
    names = [f"{uniq}-m{i:03d}" for i in range(n)]
    chunks = math.ceil(n / NAMES_PER_FILTER)
    assert clean_diff(b, run_cli, http_log, *names) == searches(chunks, versions=chunks)


def test_diff_requests_with_run_ids_are_batched(
    server_backend: Backend, uniq: str, run_cli: CLI, http_log: Recorder
) -> None:
    """Entries that name runs by id (as `regctl import` writes them when a run name is
    not unique): one experiment search and one run search per 100 ids, not a request
    per version."""
    b = server_backend
    n = 20
    fleet(b, uniq, n, by_id=True)
    expected = searches(model_pages(b), runs=math.ceil(3 * n / 100))
    assert clean_diff(b, run_cli, http_log) == expected


# -- target 4: apply -----------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 5])
def test_apply_writes_one_request_per_change_plus_constants(
    server_backend: Backend,
    uniq: str,
    run_cli: CLI,
    http_log: Recorder,
    monkeypatch: pytest.MonkeyPatch,
    k: int,
) -> None:
    """K alias moves + K description changes (one of each in K models):

    - exactly one write per change: K alias POSTs, K model-version PATCHes, no read
      before a write;
    - provenance (`regctl.applied`): one tag per changed model (K), naming the commit and
      the alias moves; no version tag (the versions keep the record of their creation);
    - the lease (no refresh in a short apply): one create of its generation, one delete
      of the released generation before it, the release tag; three lease searches (take,
      confirm, the check before the changes);
    - reads: three observes (plan, plan again under the lease, verify afterwards: it
      touched every model, so verify reads the registry whole, not K names), each the
      model pages, one version search, one experiment search, one run search.
    """
    monkeypatch.setenv("REGCTL_COMMIT", "0123456789abcdef")
    b = server_backend
    fleet(b, uniq, k, prod=3, described="v1 reviewed")
    acquire(MlflowRegistry(b.uri), "a test", "", timeout=60).release()  # one to delete
    pages = model_pages(b)
    http_log.clear()
    code, out, err = run_cli(*args(b, "apply", "--auto-approve"))
    assert code == 0, out + err
    assert f"Apply complete: {2 * k} of {2 * k} changes applied." in out
    assert kinds(http_log) == {
        # the changes
        "POST /registered-models/alias": k,
        "PATCH /model-versions/update": k,
        # provenance
        "POST /registered-models/set-tag": k + 1,  # + the lease's release
        # the lease
        "POST /registered-models/create": 1,
        "DELETE /registered-models/delete": 1,
        # reads: 3 observes + the lease's 3 searches
        "GET /registered-models/search": 3 * pages + 3,
        "GET /model-versions/search": 3,
        "POST /experiments/search": 3,
        "POST /runs/search": 3,
    }
    assert len(http_log.writes()) == 2 * k + k + 3
    # nothing left: a second apply reads once and writes nothing
    http_log.clear()
    code, out, _ = run_cli(*args(b, "apply", "--auto-approve"))
    assert code == 0
    assert http_log.writes() == []
    assert len(http_log.calls) == pages + 3


def test_a_small_apply_verifies_only_the_models_it_touched(
    server_backend: Backend, uniq: str, run_cli: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Repairing one model of four reads the others back never: its verify observes that
    model by name, not the whole registry (the plans before it read everything)."""
    b = server_backend
    fleet(b, uniq, 4)  # the manifests match the registry
    b.client.set_registered_model_alias(f"{uniq}-m002", "prod", "3")  # drift in one model
    asked: list[list[str] | None] = []
    original = MlflowRegistry.search_models

    def search_models(self: MlflowRegistry, names: Any) -> Any:
        asked.append(None if names is None else sorted(set(names) - {"regctl-ledger"}))
        return original(self, names)

    monkeypatch.setattr(MlflowRegistry, "search_models", search_models)
    code, out, err = run_cli(
        *args(b, "apply", "--auto-approve", *(f"{uniq}-m{i:03d}" for i in range(4)))
    )
    assert code == 0, out + err
    assert "Apply complete: 1 of 1 changes applied." in out
    assert "Verified: the registry matches the manifests." in out
    every = sorted(f"{uniq}-m{i:03d}" for i in range(4))
    assert asked == [every, every, [f"{uniq}-m002"]]


# -- target 5: sync ------------------------------------------------------------------------


def test_second_sync_costs_at_most_one_request_per_run_dir(
    server_backend: Backend, uniq: str, run_cli: CLI, http_log: Recorder
) -> None:
    """A synced run directory is checked with list-based lookups batched per experiment:
    one experiment search and one run search for all of them, one read of the ledger that
    vouches for their content (issue 13: a name is not proof), and no upload."""
    b = server_backend
    dirs = []
    for run in ("run_20251008_145809_lgbm_y_logret_168h_huber", "run_hmm_20251009_105640"):
        dest = b.repo / "runs" / "BINANCE_BTCUSDT.P, 60" / run
        shutil.copytree(EXAMPLES / run, dest)
        dirs.append(dest)
    entries = "".join(
        f'  - run: {d.name}\n    run_dir: "{d.relative_to(b.repo).as_posix()}"\n' for d in dirs
    )
    write_manifest(
        b.repo,
        "m",
        f"apiVersion: regctl/v1\nkind: RegisteredModel\nname: {uniq}-m\n"
        f"experiment: {uniq}-exp\nversions:\n{entries}",
    )
    files = sum(1 for d in dirs for p in d.rglob("*") if p.is_file())
    http_log.clear()
    code, out, err = run_cli(*args(b, "sync"))
    assert code == 0, out + err
    assert sum(m == "PUT" for m, _ in http_log.calls) == files  # one PUT per file

    http_log.clear()
    code, out, err = run_cli(*args(b, "sync"))
    assert code == 0, out + err
    assert "uploaded 0 files (0 bytes)" in out
    assert kinds(http_log) == {
        "POST /experiments/search": 1,
        "POST /runs/search": 1,
        "GET /registered-models/get": 1,
    }
    assert not [p for _, p in http_log.calls if "/artifacts" in p]  # proven: no download
