"""Promotion by pull request: log, diff --base, saved plans, the lease, provenance.

Real git repositories in tmp_path, a real MLflow server, regctl in-process and (for the
concurrency test) as two real processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from regctl.core.model import PROVENANCE_TAG, is_lease_model

from conftest import REPO, Backend, Recorder, git_commit, init_git, write_manifest

CLI = Callable[..., tuple[int, str, str]]


def args(b: Backend, *rest: str) -> list[str]:
    return ["--tracking-uri", b.uri, "--repo", str(b.repo), *rest]


commit = git_commit


def manifest(b: Backend, uniq: str, name: str, entries: str) -> None:
    write_manifest(
        b.repo,
        name,
        f"apiVersion: regctl/v1\nkind: RegisteredModel\nname: {uniq}-{name}\n"
        f"experiment: {uniq}-exp\nversions:\n{entries}",
    )


def test_log_lists_promotions_with_author_and_commit(
    server_backend: Backend, uniq: str, run_cli: CLI
) -> None:
    b = server_backend
    r = init_git(b.repo)
    manifest(b, uniq, "m", "  - run: a\n    aliases: [Staging]\n")
    c1 = commit(r, "Add model")
    manifest(
        b, uniq, "m", "  - run: a\n    aliases: [Production]\n  - run: b\n    aliases: [Staging]\n"
    )
    c2 = commit(r, "Promote a", author="Grace Hopper <grace@example.com>")
    manifest(b, uniq, "m", "  - run: a\n  - run: b\n    aliases: [Production]\n")
    c3 = commit(r, "Promote b")
    code, out, err = run_cli(*args(b, "log", f"{uniq}-m"))
    assert code == 0, err
    assert c1[:7] in out and c2[:7] in out and c3[:7] in out
    assert "Grace Hopper <grace@example.com>" in out and "Promote a" in out
    assert "Production: (none) -> a" in out
    assert "Production: a -> b" in out
    code, out, _ = run_cli(*args(b, "log", f"{uniq}-m", "--alias", "Staging", "--format", "json"))
    data = json.loads(out)
    assert data["format_version"] == 1
    assert [e["short"] for e in data["events"]] == [c1[:7], c2[:7], c3[:7]]


def test_diff_base_shows_only_the_touched_model(
    server_backend: Backend, uniq: str, run_cli: CLI
) -> None:
    b = server_backend
    b.make_runs(f"{uniq}-exp", ["a", "b"])
    r = init_git(b.repo)
    manifest(b, uniq, "one", "  - run: a\n    aliases: [Production]\n")
    manifest(b, uniq, "two", "  - run: a\n    aliases: [Production]\n")
    commit(r, "Two models")
    assert run_cli(*args(b, "apply", "--auto-approve"))[0] == 0
    r.git.checkout("-b", "promote")
    manifest(b, uniq, "two", "  - run: a\n  - run: b\n    aliases: [Production]\n")
    commit(r, "Promote b in two")
    # drift on the untouched model is not this pull request's business
    b.client.update_registered_model(f"{uniq}-one", description="edited by hand")
    code, out, err = run_cli(*args(b, "diff", "--base", "main"))
    assert code == 0, err
    assert f"# {uniq}-two" in out
    assert f"{uniq}-one" not in out
    assert "+ version 2 from run b" in out
    code, out, err = run_cli(*args(b, "diff", "--base", "no-such-ref"))
    assert code == 1 and "no-such-ref" in err


def test_saved_plan_refused_after_hand_change_and_when_applied_twice(
    server_backend: Backend, uniq: str, run_cli: CLI, tmp_path: Path, http_log: Recorder
) -> None:
    b = server_backend
    b.make_runs(f"{uniq}-exp", ["a", "b"])
    manifest(b, uniq, "m", "  - run: a\n    aliases: [Production]\n  - run: b\n")
    assert run_cli(*args(b, "apply", "--auto-approve"))[0] == 0
    manifest(b, uniq, "m", "  - run: a\n  - run: b\n    aliases: [Production]\n")
    plan = tmp_path / "plan.json"
    assert run_cli(*args(b, "diff", "--out", str(plan)))[0] == 0
    b.client.set_registered_model_alias(f"{uniq}-m", "Staging", "1")  # by hand
    http_log.clear()
    code, _, err = run_cli(*args(b, "apply", "--auto-approve", str(plan)))
    assert code == 1 and "re-planning now does not give this plan's changes" in err
    assert http_log.writes() == []
    # a fresh plan applies once; the second time it is refused and writes nothing
    assert run_cli(*args(b, "diff", "--out", str(plan)))[0] == 0
    assert run_cli(*args(b, "apply", "--auto-approve", str(plan)))[0] == 0
    http_log.clear()
    code, _, err = run_cli(*args(b, "apply", "--auto-approve", str(plan)))
    assert code == 1 and "already applied" in err
    assert http_log.writes() == []


def test_provenance_is_recorded_on_model_and_versions(
    server_backend: Backend, uniq: str, run_cli: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    import urllib.request

    b = server_backend
    b.make_runs(f"{uniq}-exp", ["a", "b"])
    r = init_git(b.repo)
    manifest(b, uniq, "m", "  - run: a\n    aliases: [Production]\n  - run: b\n")
    sha = commit(r, "Add model")
    monkeypatch.setenv("GITHUB_ACTOR", "octocat")
    assert run_cli(*args(b, "apply", "--auto-approve"))[0] == 0

    def rest(path: str) -> dict:
        with urllib.request.urlopen(f"{b.uri}/api/2.0/mlflow/{path}") as resp:
            return json.loads(resp.read())

    def tags(obj: dict) -> dict[str, str]:
        return {t["key"]: t["value"] for t in obj.get("tags", [])}

    model = rest(f"registered-models/get?name={uniq}-m")["registered_model"]
    assert tags(model)[PROVENANCE_TAG].startswith(f"commit {sha} by octocat at 20")
    for v in ("1", "2"):
        mv = rest(f"model-versions/get?name={uniq}-m&version={v}")["model_version"]
        assert f"commit {sha} by octocat" in tags(mv)[PROVENANCE_TAG]
    # a promotion is recorded on the model, with the alias it moved (one request per
    # changed model); the versions keep the record of the apply that created them
    manifest(b, uniq, "m", "  - run: a\n  - run: b\n    aliases: [Production]\n")
    sha2 = commit(r, "Promote b")
    assert run_cli(*args(b, "apply", "--auto-approve"))[0] == 0
    model = rest(f"registered-models/get?name={uniq}-m")["registered_model"]
    assert tags(model)[PROVENANCE_TAG].startswith(f"commit {sha2} by octocat at 20")
    assert tags(model)[PROVENANCE_TAG].endswith("; aliases: Production -> v2")
    for v in ("1", "2"):
        mv = rest(f"model-versions/get?name={uniq}-m&version={v}")["model_version"]
        assert f"commit {sha} by octocat" in tags(mv)[PROVENANCE_TAG]
    # a description edit is recorded on the model; the version keeps its promotion record
    manifest(
        b,
        uniq,
        "m",
        "  - run: a\n  - run: b\n    description: reviewed\n    aliases: [Production]\n",
    )
    sha3 = commit(r, "Describe b")
    assert run_cli(*args(b, "apply", "--auto-approve"))[0] == 0
    model = rest(f"registered-models/get?name={uniq}-m")["registered_model"]
    assert tags(model)[PROVENANCE_TAG].startswith(f"commit {sha3} by octocat")
    assert "aliases" not in tags(model)[PROVENANCE_TAG]  # this apply moved none
    mv = rest(f"model-versions/get?name={uniq}-m&version=2")["model_version"]
    assert mv["description"] == "reviewed"
    assert f"commit {sha} by octocat" in tags(mv)[PROVENANCE_TAG]
    # runs carry no regctl tags: run tags belong to people
    run_id = mv["run_id"]
    run = rest(f"runs/get?run_id={run_id}")["run"]
    assert not [t for t in run["data"].get("tags", []) if t["key"].startswith("regctl.")]


def test_held_lease_blocks_and_unlock_breaks_it_by_id_only(
    server_backend: Backend, uniq: str, run_cli: CLI
) -> None:
    from regctl.config import Settings, open_registry
    from regctl.engine.lease import LeaseLost, acquire, current

    b = server_backend
    b.make_runs(f"{uniq}-exp", ["a"])
    manifest(b, uniq, "m", "  - run: a\n")
    registry = open_registry(Settings(b.repo, b.uri))
    holder = acquire(registry, "someone else", "abc123", timeout=30)
    holder.start_heartbeat()  # a live holder: it keeps its lease fresh while it works
    try:
        code, _, err = run_cli(*args(b, "apply", "--auto-approve", "--lock-timeout", "1"))
        assert code == 1
        assert "held by someone else" in err and holder.lease.id in err
        code, _, err = run_cli(*args(b, "unlock", "not-the-id"))
        assert code == 1 and "exact id" in err
        assert current(registry) is not None
        holder.check()  # still held
        code, out, _ = run_cli(*args(b, "unlock", holder.lease.id))
        assert code == 0 and holder.lease.id in out
        assert current(registry) is None
        with pytest.raises(LeaseLost, match="released or broken"):
            holder.check()  # the broken holder stops before its next write phase
        assert holder.should_stop()
    finally:
        holder.release()
    assert run_cli(*args(b, "apply", "--auto-approve"))[0] == 0


def test_stale_lease_is_taken_over(server_backend: Backend, uniq: str, run_cli: CLI) -> None:
    """A lease from another machine, expired an hour ago and never released."""
    from regctl.config import Settings, open_registry
    from regctl.engine.lease import acquire, current
    from regctl.engine.process import Process

    b = server_backend
    b.make_runs(f"{uniq}-exp", ["a"])
    manifest(b, uniq, "m", "  - run: a\n")
    registry = open_registry(Settings(b.repo, b.uri))
    elsewhere = Process("another-host", "another-boot pid:[1]", 4242, "17")
    an_hour_ago = time.time() - 3600
    crashed = acquire(
        registry, "crashed apply", "abc", timeout=30, clock=lambda: an_hour_ago, identity=elsewhere
    )
    code, _, err = run_cli(*args(b, "apply", "--auto-approve", "--lock-timeout", "0"))
    assert code == 0, err
    assert current(registry) is None
    # the apply that took over cleaned the stale generation up
    assert crashed.lease.model not in registry.search_models_like("regctl-lease%")


def test_two_concurrent_applies_one_writer_and_convergence(
    server_backend: Backend, uniq: str
) -> None:
    b = server_backend
    runs = [f"r{i}" for i in range(8)]
    b.make_runs(f"{uniq}-exp", runs)
    entries = "".join(f"  - run: {r}\n    description: entry {r}\n" for r in runs)
    manifest(b, uniq, "m", entries + "    aliases: [Production]\n")
    env = dict(os.environ, PYTHONPATH=str(REPO / "controller"))
    cmd = [
        sys.executable,
        "-m",
        "regctl",
        *args(b, "apply", "--auto-approve", "--lock-timeout", "0"),
    ]
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(*p.communicate(timeout=120), p.returncode) for p in procs]
    codes = sorted(r[2] for r in results)
    applied = [r for r in results if "Apply complete" in r[0]]
    assert len(applied) == 1  # exactly one writer
    for out, err, code in results:
        if "Apply complete" not in out:
            # the loser waited on nothing (lock-timeout 0): it names the holder, or it ran
            # after the winner and found nothing to do
            assert (code == 0 and "No changes" in out) or (
                code == 1 and ("held by" in err or "registry changed after" in err)
            ), (out, err)
    assert codes[0] == 0
    versions = b.client.search_model_versions(f"name = '{uniq}-m'")
    assert sorted(v.run_id for v in versions) == sorted(
        {v.run_id for v in versions}
    )  # one version per manifest entry
    assert len(versions) == 8
    assert b.client.get_registered_model(f"{uniq}-m").aliases == {"Production": "8"}
    # the lease is free again: every generation left is released
    leases = b.client.search_registered_models("name LIKE 'regctl-lease%'")
    assert leases
    for rm in leases:
        assert is_lease_model(rm.name)
        assert rm.tags["regctl.lease.released"] == rm.tags["regctl.lease.id"], rm.tags
