"""The promotion gate holds against an attacker (issue 13), on a real server.

Each test plays one attack from the issue against a real `mlflow server` and asserts that
regctl refuses before any write (or judges fail-closed). The threat model in
docs/reliability.md names each test; the comments say which protection each one needs.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from regctl.adapters.rundir import read_run_dir
from regctl.core.model import LEDGER_MODEL

from conftest import REPO, Backend, Recorder, git_commit, init_git, write_manifest

CLI = Callable[..., tuple[int, str, str]]

A = "run_20251008_145809_lgbm_y_logret_168h_huber"
B = "run_20251010_101010_lgbm_y_logret_168h_huber"
C = "run_20251012_121212_lgbm_y_logret_168h_huber"


def args(b: Backend, *rest: str) -> list[str]:
    return ["--tracking-uri", b.uri, "--repo", str(b.repo), *rest]


def run_dir(
    root: Path,
    name: str,
    *,
    rmse_test: float = 0.045,
    corr_val: float = 0.3,
    model_type: str = "lgbm",
    model: str = "tree\n",
    metrics_text: str | None = None,
) -> Path:
    """A small LGBM run directory with every param and metric the shipped policies want."""
    d = root / "runs" / name
    d.mkdir(parents=True)
    config = {
        "model_type": model_type,
        "target": "y_logret_168h",
        "objective": "huber",
        "dataset": "BINANCE_BTCUSDT.P, 60",
        "feature_list_id": "default",
        "hyperparameter_tuning_method": "optuna",
    }
    (d / "pipeline_config.json").write_text(json.dumps(config))
    metrics = {
        "rmse_train": 0.04,
        "rmse_val": 0.05,
        "rmse_test": rmse_test,
        "corr_train": 0.4,
        "corr_val": corr_val,
        "corr_test": 0.3,
    }
    (d / "metrics.json").write_text(metrics_text or json.dumps(metrics))
    (d / "model.txt").write_text(model)
    return d


def shipped_policies(repo: Path) -> None:
    shutil.copytree(REPO / "policies", repo / "policies", dirs_exist_ok=True)


def manifest(b: Backend, uniq: str, entries: str, *, name: str = "m", **extra: str) -> str:
    model = f"{uniq}-{name}"
    head = "".join(f"{k}: {v}\n" for k, v in extra.items())
    write_manifest(
        b.repo,
        name,
        f"apiVersion: regctl/v1\nkind: RegisteredModel\nname: {model}\n"
        f"experiment: {uniq}-exp\n{head}versions:\n" + textwrap.dedent(entries),
    )
    return model


def log_like_a_pipeline(
    b: Backend,
    experiment: str,
    name: str,
    params: dict[str, str],
    metrics: dict[str, float],
    files: Path | dict[str, str],
    *,
    finish: bool = True,
) -> str:
    """Log a run the way a training job (or an attacker) would, with MLflow's client."""
    c = b.client
    exp = c.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else c.create_experiment(experiment)
    run = c.create_run(exp_id, run_name=name)
    rid = run.info.run_id
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    c.log_batch(
        rid,
        metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
        params=[Param(k, v) for k, v in params.items()],
    )
    if isinstance(files, Path):
        c.log_artifacts(rid, str(files))
    else:
        tmp = b.repo / ".upload" / rid
        tmp.mkdir(parents=True)
        for rel, text in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(text)
        c.log_artifacts(rid, str(tmp))
        shutil.rmtree(tmp)
    if finish:
        c.set_terminated(rid)
    return str(rid)


def versions_of(b: Backend, model: str) -> list[Any]:
    return list(b.client.search_model_versions(f"name = '{model}'"))


# --------------------------------------------------------------------- 1. saved plans


def test_a_hand_edited_saved_plan_is_refused_before_any_write(
    server_backend: Backend, uniq: str, run_cli: CLI, http_log: Recorder
) -> None:
    """Protection: apply re-plans and compares; it never executes the file's changes."""
    b = server_backend
    victim = f"{uniq}-unmanaged"
    b.client.create_registered_model(victim)
    run_dir(b.repo, A)
    model = manifest(b, uniq, f"- run: {A}\n  run_dir: runs/{A}\n  aliases: [Staging]\n")
    plan_file = b.repo / "plan.json"
    code, _, err = run_cli(*args(b, "diff", "--out", str(plan_file)))
    assert code == 0, err
    data = json.loads(plan_file.read_text())
    assert data["target"] == b.uri and data["inputs"]["manifests"].startswith("sha256:")
    data["changes"].append({"action": "delete_model", "model": victim})
    plan_file.write_text(json.dumps(data))
    http_log.clear()
    code, _, err = run_cli(*args(b, "apply", str(plan_file), "--auto-approve"))
    assert code == 1
    assert "re-planning now does not give this plan's changes" in err
    assert f"delete_model '{victim}'" in err and "nothing was written" in err
    assert http_log.writes() == []
    assert b.client.get_registered_model(victim).name == victim
    assert versions_of(b, model) == []

    # a changed alias target is refused the same way, naming the first difference
    data["changes"].pop()
    for change in data["changes"]:
        if change["action"] == "set_alias":
            change["alias"] = "Production"
    plan_file.write_text(json.dumps(data))
    code, _, err = run_cli(*args(b, "apply", str(plan_file), "--auto-approve"))
    assert code == 1 and "change " in err and "'Production'" in err
    assert http_log.writes() == []

    # the untouched plan applies, and is then "already applied"
    code, _, err = run_cli(*args(b, "diff", "--out", str(plan_file)))
    assert code == 0, err
    code, out, err = run_cli(*args(b, "apply", str(plan_file), "--auto-approve"))
    assert code == 0, err
    assert "Verified" in out
    code, _, err = run_cli(*args(b, "apply", str(plan_file), "--auto-approve"))
    assert code == 1 and "already applied" in err


def test_a_saved_plan_is_bound_to_its_inputs_and_target(
    server_backend: Backend, uniq: str, run_cli: CLI, http_log: Recorder, tmp_path: Path
) -> None:
    b = server_backend
    run_dir(b.repo, A)
    shipped_policies(b.repo)
    manifest(b, uniq, f"- run: {A}\n  run_dir: runs/{A}\n  description: d\n")
    plan_file = b.repo / "plan.json"
    assert run_cli(*args(b, "diff", "--out", str(plan_file)))[0] == 0

    # manifests edited after the plan was made
    path = b.repo / "manifests" / "m.yaml"
    original = path.read_text()
    path.write_text(original.replace("description: d", "description: e"))
    http_log.clear()
    code, _, err = run_cli(*args(b, "apply", str(plan_file), "--auto-approve"))
    assert code == 1 and "the manifests changed since this plan was made" in err
    path.write_text(original)

    # policies edited after the plan was made (policy judges what is applied, always)
    pol = b.repo / "policies" / "lgbm.yaml"
    pol.write_text(pol.read_text().replace("max: 0.06", "max: 0.01"))
    code, _, err = run_cli(*args(b, "apply", str(plan_file), "--auto-approve"))
    assert code == 1 and "the policies changed since this plan was made" in err
    shutil.copy(REPO / "policies" / "lgbm.yaml", pol)

    # another target
    other = f"sqlite:///{tmp_path / 'other.db'}"
    code, _, err = run_cli(
        "--tracking-uri", other, "--repo", str(b.repo), "apply", str(plan_file), "--auto-approve"
    )
    assert code == 1 and f"this plan is for {b.uri}" in err

    # other flags
    code, _, err = run_cli(*args(b, "apply", str(plan_file), "--auto-approve", "--prune"))
    assert code == 1 and "made without --prune" in err
    assert http_log.writes() == []
    assert not (tmp_path / "other.db").exists() or versions_of(b, f"{uniq}-m") == []

    # a plan file that is not a plan: one line naming the file
    for junk in ("[]", '{"format_version": 2}', '{"format_version": 1, "changes": []}', "{"):
        plan_file.write_text(junk)
        code, _, err = run_cli(*args(b, "apply", str(plan_file), "--auto-approve"))
        assert code == 1, junk
        assert err.startswith(f"error: {plan_file}") and err.count("\n") == 1, err
        assert "internal error" not in err
    assert http_log.writes() == []


# -------------------------------------------------------------- 2. fail-open matching


def test_uppercase_model_type_is_judged_and_denied(
    server_backend: Backend, uniq: str, run_cli: CLI
) -> None:
    """Protection: `match` normalises model_type as sync does (case-insensitive)."""
    b = server_backend
    shipped_policies(b.repo)
    run_dir(b.repo, A, rmse_test=0.5, corr_val=0.01, model_type="LGBM")
    manifest(
        b, uniq, f"- run: {A}\n  run_dir: runs/{A}\n  description: d\n  aliases: [Production]\n"
    )
    code, out, err = run_cli(*args(b, "check"))
    assert code == 3, out + err
    assert "lgbm-regression/production-bar" in out and "rmse_test is above the maximum" in out
    assert run_cli(*args(b, "apply", "--auto-approve"))[0] == 3
    assert b.client.search_registered_models(f"name = '{uniq}-m'") == []


def test_a_run_with_no_params_cannot_take_a_protected_alias(
    server_backend: Backend, uniq: str, run_cli: CLI
) -> None:
    """Protection: a protected alias needs a policy with a non-empty match (fail closed)."""
    b = server_backend
    shipped_policies(b.repo)
    rid = log_like_a_pipeline(b, f"{uniq}-exp", "anything", {}, {}, {"model.txt": "x"})
    manifest(b, uniq, f"- run_id: {rid}\n  description: d\n  aliases: [Production]\n")
    code, out, err = run_cli(*args(b, "check"))
    assert code == 3, out + err
    assert f"no policy judges {uniq}-m v1 (run {rid}) for Production" in out
    assert "regctl/match" in out  # the lgbm and hmm policies cannot be decided
    assert run_cli(*args(b, "apply", "--auto-approve"))[0] == 3
    assert b.client.search_registered_models(f"name = '{uniq}-m'") == []


# ----------------------------------------------------------------- 3. squatted names


def test_a_squatted_run_name_is_never_registered(
    server_backend: Backend, uniq: str, run_cli: CLI, http_log: Recorder
) -> None:
    """Protection: a run counts as a directory's run only when its content is proven."""
    b = server_backend
    d = run_dir(b.repo, A)
    model = manifest(b, uniq, f"- run: {A}\n  run_dir: runs/{A}\n  aliases: [Staging]\n")
    record = read_run_dir(d)
    # the attacker: same name, same experiment, their own metrics and model.txt, FINISHED
    squat = log_like_a_pipeline(
        b,
        f"{uniq}-exp",
        A,
        dict(record.params),
        {**record.metrics, "rmse_test": 0.001},
        {"model.txt": "evil", "metrics.json": "{}", "pipeline_config.json": "{}"},
    )
    for command in (("diff",), ("sync",), ("apply", "--auto-approve")):
        http_log.clear()
        code, out, err = run_cli(*args(b, *command))
        assert code == 1, (command, out, err)
        assert f"run {squat} named '{A}'" in err and f"is not the run of runs/{A}" in err
        assert "metric 'rmse_test': run has 0.001, directory has 0.045" in err
        assert http_log.writes() == [], command
    assert b.client.search_registered_models(f"name = '{model}'") == []

    # a cleverer attacker copies params, metrics, names and sizes; only the bytes differ
    b.client.delete_run(squat)
    same_size = "tre3\n"
    copy = d.parent.parent / "copy" / A
    shutil.copytree(d, copy)
    (copy / "model.txt").write_text(same_size)
    squat2 = log_like_a_pipeline(
        b, f"{uniq}-exp", A, dict(record.params), dict(record.metrics), copy
    )
    code, _, err = run_cli(*args(b, "apply", "--auto-approve"))
    assert code == 1
    assert f"run {squat2} named '{A}'" in err and "file 'model.txt': sha256 " in err
    assert b.client.search_registered_models(f"name = '{model}'") == []


def test_a_pipeline_logged_run_is_proven_once_then_trusted_by_its_ledger_entry(
    server_backend: Backend, uniq: str, run_cli: CLI, http_log: Recorder
) -> None:
    """The honest case: a training job logged the directory itself. regctl downloads and
    hashes it once, records the proof on the ledger, and never downloads it again."""
    b = server_backend
    d = run_dir(b.repo, A)
    record = read_run_dir(d)
    rid = log_like_a_pipeline(b, f"{uniq}-exp", A, dict(record.params), dict(record.metrics), d)
    model = manifest(b, uniq, f"- run: {A}\n  run_dir: runs/{A}\n  aliases: [Staging]\n")
    http_log.clear()
    code, out, err = run_cli(*args(b, "diff"))
    assert code == 0, err
    downloads = [p for m, p in http_log.calls if m == "GET" and "/artifacts/" in p]
    assert len(downloads) == 3  # every file once: proof by content
    code, out, err = run_cli(*args(b, "apply", "--auto-approve"))
    assert code == 0, err
    (v,) = versions_of(b, model)
    assert v.run_id == rid
    ledger = b.client.get_registered_model(LEDGER_MODEL).tags
    assert ledger[f"regctl.proven.{rid}"] == record.digest
    http_log.clear()
    assert run_cli(*args(b, "diff", "--exit-code"))[0] == 0
    assert run_cli(*args(b, "sync"))[0] == 0
    assert not [p for m, p in http_log.calls if "/artifacts" in p]  # no list, no download


# --------------------------------------------------------------------- 4. waivers


def waiver(model: str, binding: str) -> str:
    return (
        "---\napiVersion: regctl/v1\nkind: Waiver\npolicy: lgbm-regression\n"
        f"rule: production-bar\nmodel: {model}\n{binding}\n"
        "reason: Accepted by the risk review.\nexpires: 2999-12-31\n"
    )


def test_a_waiver_binds_to_one_run_never_to_a_name(
    server_backend: Backend, uniq: str, run_cli: CLI
) -> None:
    """Protection: waivers bind by run_id, or by name in the model's experiment + digest."""
    b = server_backend
    shipped_policies(b.repo)
    d = run_dir(b.repo, A, rmse_test=0.08)  # over the Production bar of 0.06
    digest = read_run_dir(d).digest
    model = manifest(
        b, uniq, f"- run: {A}\n  run_dir: runs/{A}\n  description: d\n  aliases: [Production]\n"
    )
    lgbm = b.repo / "policies" / "lgbm.yaml"
    shipped = lgbm.read_text()
    code, out, err = run_cli(*args(b, "check"))  # check prints the binding to paste
    assert code == 3 and f"a waiver of this run gives: run: {A}, digest: {digest}" in out

    # a name alone binds nothing; check prints the line to paste
    lgbm.write_text(shipped + waiver(model, f"run: {A}"))
    code, out, err = run_cli(*args(b, "check", "--format", "json"))
    assert code == 3, err
    (bar,) = [
        r
        for r in json.loads(out)["results"]
        if r["rule"] == "production-bar" and r["check"] == "rmse_test"
    ]
    assert bar["outcome"] == "deny" and "names the run by name only" in bar["waiver_note"]
    assert bar["waive_with"] == f"run: {A}, digest: {digest}"

    # the right name with another run's digest binds nothing either
    lgbm.write_text(shipped + waiver(model, f"run: {A}\ndigest: sha256:{'0' * 64}"))
    code, out, err = run_cli(*args(b, "check", "--format", "json"))
    assert code == 3, err
    (bar,) = [
        r
        for r in json.loads(out)["results"]
        if r["rule"] == "production-bar" and r["check"] == "rmse_test"
    ]
    assert bar["outcome"] == "deny" and f"is not this run's {digest}" in bar["waiver_note"]

    lgbm.write_text(shipped + waiver(model, f"run: {A}\ndigest: {digest}"))
    code, out, err = run_cli(*args(b, "apply", "--auto-approve"))
    assert code == 0, out + err

    # another run named A in another experiment, rmse_test 0.5, taken by run_id
    evil = log_like_a_pipeline(
        b,
        f"{uniq}-other-exp",
        A,
        dict(read_run_dir(d).params),
        {**read_run_dir(d).metrics, "rmse_test": 0.5},
        {"model.txt": "other"},
    )
    manifest(
        b,
        uniq,
        f"- run: {A}\n  run_dir: runs/{A}\n  description: d\n"
        f"- run_id: {evil}\n  description: e\n  aliases: [Production]\n",
    )
    code, out, err = run_cli(*args(b, "check"))
    assert code == 3, out + err
    assert "rmse_test 0.5" in out and "not in the model's experiment" in out
    code, out, err = run_cli(*args(b, "apply", "--auto-approve"))
    assert code == 3
    assert b.client.get_model_version_by_alias(model, "Production").run_id != evil


# ------------------------------------------------------------------ 5. non-finite


def test_minus_infinity_passes_no_bound_before_or_after_sync(
    server_backend: Backend, uniq: str, run_cli: CLI
) -> None:
    """Protection: NaN and +-Infinity (and MLflow's +-1.797e308 for them) fail every bound."""
    b = server_backend
    shipped_policies(b.repo)
    metrics = (
        '{"rmse_train": 0.04, "rmse_val": 0.05, "rmse_test": -Infinity, '
        '"corr_train": 0.4, "corr_val": 0.3, "corr_test": 0.3}'
    )
    run_dir(b.repo, A, metrics_text=metrics)
    manifest(
        b, uniq, f"- run: {A}\n  run_dir: runs/{A}\n  description: d\n  aliases: [Production]\n"
    )
    code, out, err = run_cli(*args(b, "check"))
    assert code == 3, out + err
    assert "rmse_test is -Infinity, not a finite number" in out
    assert run_cli(*args(b, "sync"))[0] == 0  # logged as MLflow stores it: -1.797e308
    code, out, err = run_cli(*args(b, "check"))
    assert code == 3, out + err
    assert "rmse_test is -1.7976931348623157e+308 (MLflow's stand-in for -Infinity)" in out
    assert run_cli(*args(b, "apply", "--auto-approve"))[0] == 3


# -------------------------------------------------------------- 7. drift repair


commit = git_commit


def a_in_production(b: Backend, uniq: str, run_cli: CLI) -> tuple[Any, str]:
    """The shipped policies, a git repository whose one commit puts run A (rmse_test
    0.045) in Production, applied: (the repository, the model's name)."""
    shipped_policies(b.repo)
    r = init_git(b.repo)
    run_dir(b.repo, A, rmse_test=0.045)
    model = manifest(
        b, uniq, f"- run: {A}\n  run_dir: runs/{A}\n  description: a\n  aliases: [Production]\n"
    )
    commit(r, "A in Production")
    assert run_cli(*args(b, "apply", "--auto-approve"))[0] == 0
    return r, model


def test_moving_production_back_is_a_repair_and_promotions_compare_to_the_declared_holder(
    server_backend: Backend, uniq: str, run_cli: CLI
) -> None:
    """Protection: compare_to judges against the holder the base manifests declared."""
    b = server_backend
    r, model = a_in_production(b, uniq, run_cli)

    # by hand: a better, unmanaged version takes Production
    hand = run_dir(b.repo / "elsewhere", B, rmse_test=0.02)
    rec = read_run_dir(hand)
    rid = log_like_a_pipeline(b, f"{uniq}-exp", B, dict(rec.params), dict(rec.metrics), hand)
    v2 = b.client.create_model_version(model, f"runs:/{rid}", run_id=rid)
    b.client.set_registered_model_alias(model, "Production", v2.version)

    # a compare_to rule on a metric the declared holder lacks: moving back to the holder
    # is a repair, not judged by compare_to (judged, it would deny: the metric is missing)
    probe = b.repo / "policies" / "probe.yaml"
    probe.write_text(
        "apiVersion: regctl/v1\nkind: Policy\nname: probe\n"
        "match: {params: {model_type: lgbm}}\nrules:\n  - name: no-worse-sharpe\n"
        "    aliases: [Production]\n    compare_to: Production\n"
        "    metrics: {sharpe_test: {max_decrease: 1%}}\n"
    )
    code, out, err = run_cli(*args(b, "diff", "--exit-code"))
    assert code == 2, out + err  # drift, not a denial
    code, out, err = run_cli(*args(b, "apply", "--auto-approve"))
    assert code == 0, out + err
    assert b.client.get_model_version_by_alias(model, "Production").version == "1"
    probe.unlink()

    # by hand again, a worse holder; a PR promotes C, better than it but 20% worse than
    # the declared holder A: judged against A (not the hand-made holder), it is denied
    bad = run_dir(
        b.repo / "elsewhere", "run_20251011_111111_lgbm_y_logret_168h_huber", rmse_test=0.09
    )
    rec = read_run_dir(bad)
    bad_id = log_like_a_pipeline(
        b, f"{uniq}-exp", rec.run_name, dict(rec.params), dict(rec.metrics), bad
    )
    worse = b.client.create_model_version(model, f"runs:/{bad_id}", run_id=bad_id)
    b.client.set_registered_model_alias(model, "Production", worse.version)
    run_dir(b.repo, C, rmse_test=0.054)
    manifest(
        b,
        uniq,
        f"- run: {A}\n  run_dir: runs/{A}\n  description: a\n"
        f"- run: {C}\n  run_dir: runs/{C}\n  description: c\n  aliases: [Production]\n",
    )
    code, out, err = run_cli(*args(b, "diff", "--base", "main"))
    assert code == 3, out + err
    assert "no-worse-than-incumbent" in out and "vs Production v1" in out


# --------------------------------------------------------------- 8. pin, wrong run


def test_a_pin_cannot_bind_a_new_run_dir_to_another_runs_version(
    server_backend: Backend, uniq: str, run_cli: CLI, http_log: Recorder
) -> None:
    """Protection: a pending run (not logged yet) cannot be an existing version."""
    b = server_backend
    other = log_like_a_pipeline(b, f"{uniq}-exp", "someone-else", {}, {}, {"f": "x"})
    model = f"{uniq}-m"
    b.client.create_registered_model(model)
    b.client.create_model_version(model, f"runs:/{other}", run_id=other)
    run_dir(b.repo, A)
    manifest(b, uniq, f"- run: {A}\n  run_dir: runs/{A}\n  version: 1\n  aliases: [Production]\n")
    for command in (("diff",), ("apply", "--auto-approve")):
        http_log.clear()
        code, out, err = run_cli(*args(b, *command))
        assert code == 1, (command, out, err)
        assert "versions[0].version: version 1 of" in err
        assert f"is registered from run {other}" in err and "is not logged yet" in err
        assert http_log.writes() == []
    assert b.client.get_registered_model(model).aliases == {}


# ------------------------------------------------------------------ attacks (helper h/attack)
#
# Each test below is marked `# ATTACK:` and plays an attack that got through on the code
# it was written against; it fails until the protection it names exists.


def forge_ledger(b: Backend, run_id: str, digest: str) -> None:
    """What anyone who may tag registered models can do: vouch for any run on the ledger."""
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):  # it may exist already
        b.client.create_registered_model(LEDGER_MODEL)
    b.client.set_registered_model_tag(LEDGER_MODEL, f"regctl.proven.{run_id}", digest)


def test_attack_a_forged_ledger_entry_does_not_prove_a_squatted_run(
    server_backend: Backend, uniq: str, run_cli: CLI
) -> None:
    # ATTACK: the ledger vouches without a download, and anyone may write it. The digest is
    # public (diff --out, check and anyone with the branch can compute it), so a squatter
    # copies the directory's params and metrics, changes model.txt (same size), and writes
    # `regctl.proven.<their run>` = the directory's digest: apply registers their model.
    b = server_backend
    d = run_dir(b.repo, A)
    record = read_run_dir(d)
    model = manifest(b, uniq, f"- run: {A}\n  run_dir: runs/{A}\n  aliases: [Staging]\n")
    copy = b.repo / "copy" / A
    shutil.copytree(d, copy)
    (copy / "model.txt").write_text("evil\n")  # same size as "tree\n"
    squat = log_like_a_pipeline(
        b, f"{uniq}-exp", A, dict(record.params), dict(record.metrics), copy
    )
    forge_ledger(b, squat, record.digest)
    code, out, err = run_cli(*args(b, "apply", "--auto-approve"))
    assert code == 1, out + err
    assert f"run {squat} named '{A}'" in err and "file 'model.txt': sha256 " in err
    assert b.client.search_registered_models(f"name = '{model}'") == []


def test_attack_a_forged_ledger_entry_does_not_carry_a_waiver_to_another_run(
    server_backend: Backend, uniq: str, run_cli: CLI
) -> None:
    # ATTACK: a waiver binds by name + digest; for a run taken by run_id (no run_dir) the
    # digest is read from the ledger, unproven. Another run with the waived run's name in
    # the model's experiment, rmse_test 0.5, plus a forged ledger entry: the waiver covers it.
    b = server_backend
    shipped_policies(b.repo)
    d = run_dir(b.repo, A, rmse_test=0.08)
    record = read_run_dir(d)
    model = f"{uniq}-m"
    lgbm = b.repo / "policies" / "lgbm.yaml"
    lgbm.write_text(lgbm.read_text() + waiver(model, f"run: {A}\ndigest: {record.digest}"))
    evil = log_like_a_pipeline(
        b,
        f"{uniq}-exp",
        A,
        dict(record.params),
        {**record.metrics, "rmse_test": 0.5},
        {"model.txt": "evil"},
    )
    forge_ledger(b, evil, record.digest)
    manifest(b, uniq, f"- run_id: {evil}\n  description: e\n  aliases: [Production]\n")
    code, out, err = run_cli(*args(b, "check"))
    assert code == 3, out + err
    assert "rmse_test 0.5" in out and "DENY" in out
    assert run_cli(*args(b, "apply", "--auto-approve"))[0] == 3
    assert b.client.search_registered_models(f"name = '{model}'") == []


def test_attack_a_hand_registered_version_with_a_foreign_source_is_never_adopted(
    server_backend: Backend, uniq: str, run_cli: CLI
) -> None:
    # ATTACK: MLflow stores a version's source as given, checking only runs:/,
    # mlflow-artifacts:/ and local ones against run_id. Adoption takes any version whose
    # run_id is the entry's run: one whose source merely contains `/<run id>/artifacts`
    # counts as the run's root, and one whose source is anywhere else is taken when the
    # entry gives no artifact_path. The alias then points at files the run does not hold
    # (`models:/m@Staging` downloads them).
    b = server_backend
    d = run_dir(b.repo, A)
    rec = read_run_dir(d)
    rid = log_like_a_pipeline(b, f"{uniq}-exp", A, dict(rec.params), dict(rec.metrics), d)
    # the server checks runs:/, mlflow-artifacts:/ and local sources against run_id; any
    # other scheme that names no host (s3://, gs://, models:/) is stored as given
    sources = {
        "look": f"s3://attacker-bucket/{rid}/artifacts",
        "far": "s3://attacker-bucket/model",
    }
    for name, source in sources.items():
        b.client.create_registered_model(f"{uniq}-{name}")
        b.client.create_model_version(f"{uniq}-{name}", source, run_id=rid)
        manifest(b, uniq, f"- run: {A}\n  run_dir: runs/{A}\n  aliases: [Staging]\n", name=name)
    code, out, err = run_cli(*args(b, "apply", "--auto-approve"))
    assert code in (0, 1), out + err
    for name in sources:
        for number in b.client.get_registered_model(f"{uniq}-{name}").aliases.values():
            assert b.client.get_model_version(f"{uniq}-{name}", number).source == f"runs:/{rid}"


def test_attack_moving_the_model_to_another_experiment_escapes_compare_to(
    server_backend: Backend, uniq: str, run_cli: CLI
) -> None:
    # ATTACK: the base's declared holder is found by (run name, run_id, artifact_path), not
    # by its experiment. A pull request that moves the model to a new experiment and points
    # the same run name at another directory makes the holder "created by this plan": no
    # incumbent, so a 29% worse rmse_test passes no-worse-than-incumbent.
    b = server_backend
    r, model = a_in_production(b, uniq, run_cli)
    run_dir(b.repo / "worse", A, rmse_test=0.058)  # under the bar of 0.06
    write_manifest(
        b.repo,
        "m",
        f"apiVersion: regctl/v1\nkind: RegisteredModel\nname: {model}\n"
        f"experiment: {uniq}-exp2\nversions:\n"
        f"- run: {A}\n  run_dir: worse/runs/{A}\n  description: a\n  aliases: [Production]\n",
    )
    code, out, err = run_cli(*args(b, "diff", "--base", "main"))
    assert code == 3, out + err
    assert "no-worse-than-incumbent" in out


def test_attack_deleting_the_declared_holder_escapes_compare_to(
    server_backend: Backend, uniq: str, run_cli: CLI
) -> None:
    # ATTACK: the declared holder's version, deleted by hand, is "no incumbent" (fail open):
    # its run and metrics are still there. A promotion 20% worse then passes compare_to.
    b = server_backend
    r, model = a_in_production(b, uniq, run_cli)
    b.client.delete_model_version(model, "1")  # by hand, in the registry
    run_dir(b.repo, C, rmse_test=0.054)
    manifest(
        b,
        uniq,
        f"- run: {A}\n  run_dir: runs/{A}\n  description: a\n"
        f"- run: {C}\n  run_dir: runs/{C}\n  description: c\n  aliases: [Production]\n",
    )
    code, out, err = run_cli(*args(b, "diff", "--base", "main"))
    assert code == 3, out + err
    assert "no-worse-than-incumbent" in out


def test_attack_a_forged_applied_tag_does_not_choose_the_base(
    server_backend: Backend, uniq: str, run_cli: CLI
) -> None:
    # ATTACK: without --base (the apply workflow, `check` in the plan workflow, the
    # controller) the base commit is read from the model's `regctl.applied` tag, which
    # anyone who may tag the model can rewrite. Pointed at a commit that declared no
    # Production holder, compare_to has no incumbent: a 20% worse version is applied.
    b = server_backend
    shipped_policies(b.repo)
    r = init_git(b.repo)
    run_dir(b.repo, A, rmse_test=0.045)
    entry_a = f"- run: {A}\n  run_dir: runs/{A}\n  description: a\n"
    model = manifest(b, uniq, entry_a)
    first = commit(r, "A, no alias yet")
    manifest(b, uniq, entry_a + "  aliases: [Production]\n")
    commit(r, "A in Production")
    assert run_cli(*args(b, "apply", "--auto-approve"))[0] == 0
    b.client.set_registered_model_tag(
        model, "regctl.applied", f"commit {first} by mallory at 2025-01-01T00:00:00Z"
    )
    run_dir(b.repo, C, rmse_test=0.054)
    manifest(
        b,
        uniq,
        entry_a + f"- run: {C}\n  run_dir: runs/{C}\n  description: c\n  aliases: [Production]\n",
    )
    commit(r, "C in Production")
    code, out, err = run_cli(*args(b, "apply", "--auto-approve"))
    assert code == 3, out + err
    assert b.client.get_model_version_by_alias(model, "Production").version == "1"


def test_attack_a_lowercase_compare_to_still_compares(
    server_backend: Backend, uniq: str, run_cli: CLI
) -> None:
    # ATTACK: `aliases:` scoping ignores case (a rule for `production` judges Production)
    # but `compare_to` looks its alias up exactly: `compare_to: production` never finds
    # the holder of Production, so the rule always passes ("no incumbent"), silently.
    b = server_backend
    (b.repo / "policies").mkdir()
    (b.repo / "policies" / "p.yaml").write_text(
        "apiVersion: regctl/v1\nkind: Policy\nname: lgbm\n"
        "match: {params: {model_type: lgbm}}\nrules:\n  - name: no-worse\n"
        "    aliases: [production]\n    compare_to: production\n"
        "    metrics: {rmse_test: {max_increase: 5%}}\n"
    )
    r = init_git(b.repo)
    run_dir(b.repo, A, rmse_test=0.045)
    entry_a = f"- run: {A}\n  run_dir: runs/{A}\n"
    manifest(b, uniq, entry_a + "  aliases: [Production]\n")
    commit(r, "A in Production")
    assert run_cli(*args(b, "apply", "--auto-approve"))[0] == 0
    run_dir(b.repo, C, rmse_test=0.054)
    manifest(b, uniq, entry_a + f"- run: {C}\n  run_dir: runs/{C}\n  aliases: [Production]\n")
    code, out, err = run_cli(*args(b, "diff", "--base", "main"))
    assert code in (1, 3), out + err  # denied, or the policy refused as ambiguous
    assert "no incumbent" not in out


def test_attack_a_squatters_path_params_do_not_choose_the_model_file(
    server_backend: Backend, uniq: str, run_cli: CLI
) -> None:
    # ATTACK: path params (run_dir, model_path) only warn when they differ, since they
    # differ between machines; but inference takes the model file from them
    # (`model_artifact_path`). A squatter with the directory's exact files points
    # model_path at another of its files (an old model, or the config): proven, registered,
    # and `regctl resolve` names that file as the model.
    from regctl.engine.download import model_artifact_path

    b = server_backend
    d = run_dir(b.repo, A)
    (d / "baseline").mkdir()
    (d / "baseline" / "model.txt").write_text("old model\n")
    record = read_run_dir(d)
    model = manifest(b, uniq, f"- run: {A}\n  run_dir: runs/{A}\n  aliases: [Staging]\n")
    params = dict(record.params)
    params["model_path"] = params["run_dir"] + "/baseline/model.txt"
    log_like_a_pipeline(b, f"{uniq}-exp", A, params, dict(record.metrics), d)
    code, out, err = run_cli(*args(b, "apply", "--auto-approve"))
    if code == 0:
        v = b.client.get_model_version_by_alias(model, "Staging")
        assert model_artifact_path(b.client.get_run(v.run_id).data.params) == "model.txt"
    else:
        assert code == 1 and "model_path" in err, out + err


def test_attack_a_renamed_run_does_not_hand_its_entry_to_a_squatter(
    server_backend: Backend, uniq: str, run_cli: CLI
) -> None:
    # ATTACK: an entry without run_dir (what `regctl import` writes) is bound by run name
    # alone. Rename the run it was registered from (or delete it) and log your own run
    # under that name: the next apply, with no manifest change, registers yours and moves
    # the entry's alias to it; the version that held it is left "undeclared".
    b = server_backend
    honest = log_like_a_pipeline(b, f"{uniq}-exp", A, {}, {"rmse_test": 0.045}, {"m": "a"})
    model = manifest(b, uniq, f"- run: {A}\n  aliases: [Staging]\n")
    assert run_cli(*args(b, "apply", "--auto-approve"))[0] == 0
    b.client.update_run(honest, name=f"{A}-old")  # by hand, with experiment write access
    log_like_a_pipeline(b, f"{uniq}-exp", A, {}, {"rmse_test": 0.001}, {"m": "evil"})
    code, out, err = run_cli(*args(b, "apply", "--auto-approve"))
    assert b.client.get_model_version_by_alias(model, "Staging").run_id == honest, out + err
