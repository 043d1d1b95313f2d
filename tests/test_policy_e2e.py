"""Policies against a real server: the gate in apply, live incumbents, offline data."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from regctl.adapters.rundir import read_run_dir

from conftest import REPO, Backend, Recorder, write_manifest

CLI = Callable[..., tuple[int, str, str]]
GOLDEN = Path(__file__).parent / "golden"

POLICY = """\
apiVersion: regctl/v1
kind: Policy
name: lgbm-regression
match: {params: {model_type: lgbm, primary_metric: rmse}}
rules:
  - name: schema-metrics
    require_metrics: [rmse_test, corr_val]
  - name: schema-params
    require_params: [target, dataset_slug]
  - name: run-name
    run_name: '^run_\\d{8}_\\d{6}_lgbm_{target}_{objective}$'
  - name: production-bar
    aliases: [Production]
    metrics: {rmse_test: {max: 0.06}, corr_val: {min: 0.2}}
  - name: no-worse-than-incumbent
    aliases: [Production]
    compare_to: Production
    metrics: {rmse_test: {max_increase: 5%}}
  - name: described
    require_description: true
    severity: warn
"""


def run_dir(root: Path, name: str, rmse_test: float, corr_val: float = 0.3) -> Path:
    d = root / "runs" / name
    d.mkdir(parents=True)
    target = name.split("_lgbm_")[1].rsplit("_", 1)[0] if "_lgbm_" in name else "y"
    (d / "pipeline_config.json").write_text(
        json.dumps(
            {"model_type": "lgbm", "target": target, "objective": "huber", "dataset": "BTC, 60"}
        )
    )
    (d / "metrics.json").write_text(json.dumps({"rmse_test": rmse_test, "corr_val": corr_val}))
    (d / "model.txt").write_text("tree\n")
    return d


def setup_repo(b: Backend, uniq: str, entries: str) -> None:
    (b.repo / "policies").mkdir(exist_ok=True)
    (b.repo / "policies" / "lgbm.yaml").write_text(POLICY)
    write_manifest(
        b.repo,
        "m",
        f"apiVersion: regctl/v1\nkind: RegisteredModel\nname: {uniq}-m\n"
        f"experiment: {uniq}-exp\nversions:\n" + textwrap.dedent(entries),
    )


def args(b: Backend, *rest: str) -> list[str]:
    return ["--tracking-uri", b.uri, "--repo", str(b.repo), *rest]


A = "run_20251008_145809_lgbm_y_logret_168h_huber"
B = "run_20251010_101010_lgbm_y_logret_168h_huber"


def test_deny_blocks_apply_waiver_lets_it_through_expired_waiver_blocks(
    server_backend: Backend, uniq: str, run_cli: CLI, http_log: Recorder
) -> None:
    b = server_backend
    run_dir(b.repo, A, rmse_test=0.08)  # over the Production bar of 0.06
    setup_repo(
        b,
        uniq,
        f"""\
        - run: {A}
          run_dir: runs/{A}
          description: too weak for Production
          aliases: [Production]
        """,
    )
    http_log.clear()
    code, out, err = run_cli(*args(b, "apply", "--auto-approve"))
    assert code == 3
    assert (
        f"{uniq}-m" in err
        and A in err
        and "lgbm-regression" in err
        and "production-bar" in err
        and "0.08" in err
        and "0.06" in err
    )
    assert "nothing was written" in err
    assert http_log.writes() == []  # not even sync
    assert not any(m == "PUT" for m, _ in http_log.calls)

    digest = read_run_dir(b.repo / "runs" / A).digest  # a waiver binds to this content
    waiver = textwrap.dedent(f"""\
        ---
        apiVersion: regctl/v1
        kind: Waiver
        policy: lgbm-regression
        rule: production-bar
        model: {uniq}-m
        run: {A}
        digest: {digest}
        reason: Accepted by the risk review.
        expires: 2999-12-31
        """)
    with (b.repo / "policies" / "lgbm.yaml").open("a") as f:
        f.write(waiver)
    code, out, err = run_cli(*args(b, "apply", "--auto-approve"))
    assert code == 0, err
    assert "waived" in out and "Accepted by the risk review." in out
    aliases = b.client.get_registered_model(f"{uniq}-m").aliases
    assert {k: int(v) for k, v in aliases.items()} == {"Production": 1}

    # an expired waiver denies again (check judges every declared version)
    text = (b.repo / "policies" / "lgbm.yaml").read_text().replace("2999-12-31", "2020-01-01")
    (b.repo / "policies" / "lgbm.yaml").write_text(text)
    code, out, _ = run_cli(*args(b, "check"))
    assert code == 3
    assert "expired" in out and "2020-01-01" in out
    # and blocks a new promotion
    run_dir(b.repo, B, rmse_test=0.09)
    setup_repo(
        b,
        uniq,
        f"""\
        - run: {A}
          run_dir: runs/{A}
          description: too weak for Production
        - run: {B}
          run_dir: runs/{B}
          description: even weaker
          aliases: [Production]
        """,
    )
    with (b.repo / "policies" / "lgbm.yaml").open("a") as f:
        digest_b = read_run_dir(b.repo / "runs" / B).digest
        f.write(waiver.replace(A, B).replace(digest, digest_b).replace("2999-12-31", "2020-01-01"))
    http_log.clear()
    code, _, err = run_cli(*args(b, "apply", "--auto-approve"))
    assert code == 3
    assert "waiver expired on 2020-01-01" in err
    assert http_log.writes() == []


def test_compare_to_judges_against_the_live_incumbent(
    server_backend: Backend, uniq: str, run_cli: CLI
) -> None:
    b = server_backend
    run_dir(b.repo, A, rmse_test=0.040)
    run_dir(b.repo, B, rmse_test=0.044)  # 10% worse than A
    setup_repo(
        b,
        uniq,
        f"""\
        - run: {A}
          run_dir: runs/{A}
          description: incumbent
          aliases: [Production]
        - run: {B}
          run_dir: runs/{B}
          description: candidate
        """,
    )
    code, out, err = run_cli(*args(b, "apply", "--auto-approve"))
    assert code == 0, err
    assert "no incumbent" in out
    setup_repo(
        b,
        uniq,
        f"""\
        - run: {A}
          run_dir: runs/{A}
          description: incumbent
        - run: {B}
          run_dir: runs/{B}
          description: candidate
          aliases: [Production]
        """,
    )
    code, out, err = run_cli(*args(b, "diff"))
    assert code == 3
    assert "rmse_test: 0.044 (incumbent 0.04)" in out
    deny = next(line for line in out.splitlines() if "DENY" in line)
    assert f"{uniq}-m v2, run {B}" in deny
    assert "lgbm-regression/no-worse-than-incumbent" in deny
    assert "0.044 vs 0.04 (+0.004, +10.00%)" in deny and "max_increase 5%" in deny
    code, _, err = run_cli(*args(b, "apply", "--auto-approve"))
    assert code == 3
    assert "no-worse-than-incumbent" in err


def test_offline_verdicts_equal_verdicts_after_sync(
    server_backend: Backend, uniq: str, run_cli: CLI
) -> None:
    b = server_backend
    run_dir(b.repo, A, rmse_test=0.05, corr_val=0.1)  # corr_val under the bar
    setup_repo(
        b,
        uniq,
        f"""\
        - run: {A}
          run_dir: runs/{A}
          aliases: [Production]
        """,
    )
    code, before, _ = run_cli(*args(b, "check", "--format", "json"))
    assert code == 3
    assert run_cli(*args(b, "sync"))[0] == 0
    code, after, _ = run_cli(*args(b, "check", "--format", "json"))
    assert code == 3

    def verdicts(text: str) -> list[tuple[str, str, str, str, str]]:
        data = json.loads(text)
        assert data["format_version"] == 1
        return [
            (r["policy"], r["rule"], r["outcome"], r["observed"], r["bound"])
            for r in data["results"]
        ]

    assert verdicts(before) == verdicts(after)
    denied = [v for v in verdicts(after) if v[2] == "deny"]
    assert [v[:2] for v in denied] == [("lgbm-regression", "production-bar")]
    assert "0.1" in denied[0][3] and "0.2" in denied[0][4]


def test_missing_metric_fails_closed(server_backend: Backend, uniq: str, run_cli: CLI) -> None:
    b = server_backend
    d = run_dir(b.repo, A, rmse_test=0.05)
    (d / "metrics.json").write_text(json.dumps({"rmse_test": 0.05}))  # corr_val missing
    setup_repo(b, uniq, f"- run: {A}\n  run_dir: runs/{A}\n")
    code, out, _ = run_cli(*args(b, "check"))
    assert code == 3
    assert "corr_val" in out and "missing" in out


def test_check_github_annotations(server_backend: Backend, uniq: str, run_cli: CLI) -> None:
    b = server_backend
    run_dir(b.repo, A, rmse_test=0.08)
    setup_repo(b, uniq, f"- run: {A}\n  run_dir: runs/{A}\n  aliases: [Production]\n")
    code, out, _ = run_cli(*args(b, "check", "--format", "github"))
    assert code == 3
    lines = [line for line in out.splitlines() if line.startswith("::error ")]
    assert lines, out
    assert "file=manifests/m.yaml" in lines[0] and "line=6" in lines[0]
    assert any("production-bar" in line for line in lines)
    assert any(line.startswith("::warning ") and "described" in line for line in out.splitlines())


def test_pull_request_comment_golden(
    examples_repo: Path, run_cli: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The markdown comment of a promotion over an incumbent, byte for byte (sqlite)."""
    monkeypatch.chdir(examples_repo)
    base = examples_repo / "examples" / "runs" / "BINANCE_BTCUSDT.P, 60"
    new = base / "run_20251015_120000_lgbm_y_logret_168h_huber"
    shutil.copytree(base / A, new)
    metrics = json.loads((new / "metrics.json").read_text())
    metrics["test"]["rmse"] = 0.0452  # 1.2% worse than the incumbent: within the 5% rule
    (new / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (new / "run_metadata.json").unlink()
    path = examples_repo / "manifests" / "btcusdt-1h-inference-7d-logret.yaml"
    path.write_text(path.read_text().replace("aliases: [Staging]", "aliases: [Production]"))
    assert run_cli("apply", "--auto-approve")[0] == 0
    path.write_text(
        path.read_text().replace("aliases: [Production]", "aliases: [Staging]")
        + f"  - run: {new.name}\n"
        f"    run_dir: examples/runs/BINANCE_BTCUSDT.P, 60/{new.name}\n"
        "    description: Retrained on one more week.\n"
        "    aliases: [Production]\n"
    )
    code, out, err = run_cli("diff", "--format", "markdown")
    assert code == 0, err
    golden = GOLDEN / "promote-lgbm.md"
    if os.environ.get("REGCTL_UPDATE_GOLDEN"):  # regenerate, then review the diff in git
        golden.write_text(out)
    assert out == golden.read_text()


def test_shipped_examples_pass_the_shipped_policies(
    examples_repo: Path, run_cli: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(examples_repo)
    code, out, _ = run_cli("check")
    assert code == 0, out
    assert "0 denied" in out
    assert (REPO / "policies").is_dir()
