"""`regctl sync` against a real MLflow server (and the embedded store for the main job)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, Backend, Recorder, write_manifest

CLI = Callable[..., tuple[int, str, str]]

LGBM_RUN = "run_20251008_145809_lgbm_y_logret_168h_huber"
HMM_RUN = "run_hmm_20251009_105640"
EXAMPLES = REPO / "examples" / "runs" / "BINANCE_BTCUSDT.P, 60"


def make_run_dir(
    root: Path,
    name: str,
    config: dict[str, Any],
    metrics: dict[str, Any],
    extra: dict[str, str] | None = None,
) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "pipeline_config.json").write_text(json.dumps(config))
    (d / "metrics.json").write_text(json.dumps(metrics))
    for rel, text in (extra or {}).items():
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return d


def manifest_for(repo: Path, model: str, experiment: str, run_dirs: list[Path]) -> None:
    entries = "".join(
        f"  - run: {d.name}\n    run_dir: {d.relative_to(repo).as_posix()}\n" for d in run_dirs
    )
    write_manifest(
        repo,
        model,
        f"apiVersion: regctl/v1\nkind: RegisteredModel\nname: {model}\n"
        f"experiment: {experiment}\nversions:\n{entries}",
    )


def args(b: Backend, *rest: str) -> list[str]:
    return ["--tracking-uri", b.uri, "--repo", str(b.repo), *rest]


def logged_run(b: Backend, experiment: str, name: str) -> Any:
    c = b.client
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id], f"attributes.run_name = '{name}'")
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]


def artifact_list(b: Backend, run_id: str, path: str | None = None) -> dict[str, int]:
    out: dict[str, int] = {}
    for info in b.client.list_artifacts(run_id, path):
        if info.is_dir:
            out.update(artifact_list(b, run_id, info.path))
        else:
            out[info.path] = info.file_size
    return out


def test_regression_classification_and_hmm_are_logged_per_schema(
    server_backend: Backend, uniq: str, run_cli: CLI
) -> None:
    b = server_backend
    runs = b.repo / "runs" / "BINANCE_BTCUSDT.P, 60"
    reg = make_run_dir(
        runs,
        "run_20251008_145809_lgbm_y_logret_168h_huber",
        {
            "model_type": "lgbm",
            "target": "y_logret_168h",
            "objective": "huber",
            "dataset": "BINANCE_BTCUSDT.P, 60",
            "prepared_data_dir": "/data/prep",
            "feature_store": {"features_csv": "/fs/f.csv", "targets_csv": "/fs/t.csv"},
            "extra_feature_files": [{"path": "/x/a.csv", "include": ["f1", "f2"]}],
            "feature_list_id": "fl1",
            "hyperparameter_tuning_method": "grid",
        },
        {
            "rmse_train": 0.05,
            "rmse_val": 0.06,
            "rmse_test": 0.0448,
            "corr_train": 0.4,
            "corr_val": 0.315,
            "corr_test": 0.3,
        },
        {"model.txt": "tree\n", "sub dir/notes, v1.txt": "hello"},
    )
    clf = make_run_dir(
        runs,
        "run_20251009_101010_lgbm_y_up_binary",
        {
            "model_type": "lgbm",
            "target": "y_up",
            "objective": "binary",
            "dataset": "BINANCE_BTCUSDT.P, 60",
            "input_data": "/data/in.csv",
        },
        {
            "train": {"auc": 0.7, "logloss": 0.6},
            "val": {"auc": 0.65, "logloss": 0.62},
            "test": {"auc": 0.64, "logloss": 0.63},
        },
        {"model.txt": "tree\n"},
    )
    hmm = make_run_dir(
        runs,
        "run_hmm_20251009_105640",
        {
            "model_type": "hmm",
            "dataset": "BINANCE_BTCUSDT.P, 60",
            "input_data": "/d/f.csv",
            "state_grid": [2, 3],
            "selection_criterion": "icl",
        },
        {"n_states": 3, "bic_final": 100.5, "test_ll": -5.0},
        {
            "model.joblib": "x",
            "diagnostics.json": json.dumps(
                {
                    "aic_final": 90.0,
                    "icl_final": 101.0,
                    "entropy_final": 1.5,
                    "train_final_ll": -40.0,
                    "rows": 300,
                    "n_features": 4,
                }
            ),
        },
    )
    exp = f"{uniq}-exp"
    manifest_for(b.repo, f"{uniq}-m", exp, [reg, clf, hmm])
    code, out, err = run_cli(*args(b, "sync"))
    assert code == 0, err
    assert "synced: 3 logged" in out

    r = logged_run(b, exp, reg.name)
    assert r.info.status == "FINISHED"
    assert r.data.params == {
        "model_type": "lgbm",
        "target": "y_logret_168h",
        "objective": "huber",
        "primary_metric": "rmse",
        "dataset_slug": "BINANCE_BTCUSDT.P__60",
        "prepared_data_dir": "/data/prep",
        "output_dir": str(runs.resolve()),
        "feature_store.features_csv": "/fs/f.csv",
        "feature_store.targets_csv": "/fs/t.csv",
        "extra_feature_files.0.path": "/x/a.csv",
        "extra_feature_files.0.include": "f1,f2",
        "feature_list_id": "fl1",
        "hyperparam_tuning": "1",
        "run_dir": str(reg.resolve()),
        "model_path": str((reg / "model.txt").resolve()),
    }
    assert r.data.metrics == {
        "rmse_train": 0.05,
        "rmse_val": 0.06,
        "rmse_test": 0.0448,
        "corr_train": 0.4,
        "corr_val": 0.315,
        "corr_test": 0.3,
    }
    assert artifact_list(b, r.info.run_id) == {
        "metrics.json": len((reg / "metrics.json").read_bytes()),
        "model.txt": 5,
        "pipeline_config.json": len((reg / "pipeline_config.json").read_bytes()),
        "sub dir/notes, v1.txt": 5,
    }
    # no tags of regctl's own: only MLflow's system tags
    assert {k for k in r.data.tags if not k.startswith("mlflow.")} == set()

    r = logged_run(b, exp, clf.name)
    assert r.data.params["primary_metric"] == "auc"
    assert r.data.params["input_data"] == "/data/in.csv"
    assert r.data.params["feature_list_id"] == "NA"
    assert r.data.params["hyperparam_tuning"] == "0"
    assert r.data.metrics == {
        "auc_train": 0.7,
        "auc_val": 0.65,
        "auc_test": 0.64,
        "logloss_train": 0.6,
        "logloss_val": 0.62,
        "logloss_test": 0.63,
    }

    r = logged_run(b, exp, hmm.name)
    assert r.data.params["target"] == "unsupervised target"
    assert "objective" not in r.data.params
    assert r.data.params["primary_metric"] == "icl"
    assert r.data.params["hyperparam_tuning"] == "1"
    assert r.data.metrics == {
        "n_states": 3,
        "bic_final": 100.5,
        "test_ll": -5.0,
        "aic_final": 90.0,
        "icl_final": 101.0,
        "entropy_final": 1.5,
        "train_final_ll": -40.0,
        "rows": 300,
        "n_features": 4,
    }


def test_second_sync_creates_nothing_and_uploads_nothing(
    server_backend: Backend, uniq: str, run_cli: CLI, http_log: Recorder
) -> None:
    b = server_backend
    d = make_run_dir(
        b.repo / "runs",
        "run_hmm_20251009_105640",
        {"model_type": "hmm", "dataset": "d"},
        {"bic_final": 1.0},
        {"model.joblib": "x"},
    )
    manifest_for(b.repo, f"{uniq}-m", f"{uniq}-exp", [d])
    assert run_cli(*args(b, "sync"))[0] == 0
    http_log.clear()
    code, out, _ = run_cli(*args(b, "sync"))
    assert code == 0
    assert "0 logged, 0 resumed, 1 already logged; uploaded 0 files" in out
    assert http_log.writes() == []
    assert not any(m == "PUT" for m, _ in http_log.calls)


def test_interrupted_sync_resumes_with_only_missing_files(
    server_backend: Backend,
    uniq: str,
    run_cli: CLI,
    monkeypatch: pytest.MonkeyPatch,
    http_log: Recorder,
) -> None:
    from regctl.adapters.mlflow import registry as mlflow_store

    b = server_backend
    files = {f"part{i}.csv": f"{i}\n" * (i + 1) for i in range(6)}
    d = make_run_dir(
        b.repo / "runs",
        "run_hmm_20251009_105640",
        {"model_type": "hmm", "dataset": "d"},
        {"bic_final": 1.0},
        files,
    )
    manifest_for(b.repo, f"{uniq}-m", f"{uniq}-exp", [d])
    original = mlflow_store.MlflowRegistry.upload_artifact
    uploaded: list[str] = []

    started: list[str] = []
    lock = threading.Lock()

    def flaky(self: Any, run: Any, local: str, rel: str) -> None:
        with lock:
            started.append(rel)
            if len(started) > 3:
                raise KeyboardInterrupt
        original(self, run, local, rel)
        uploaded.append(rel)

    monkeypatch.setattr(mlflow_store.MlflowRegistry, "upload_artifact", flaky)
    code, _, err = run_cli(*args(b, "sync"))
    assert code == 130
    run = logged_run(b, f"{uniq}-exp", d.name)
    assert run.info.status == "RUNNING"
    sent = artifact_list(b, run.info.run_id)
    # uploads run concurrently: the 3 before the interruption, plus any already in flight
    assert 3 <= len(sent) < 8 and set(uploaded) == set(sent)

    monkeypatch.setattr(mlflow_store.MlflowRegistry, "upload_artifact", original)
    http_log.clear()
    code, out, err = run_cli(*args(b, "sync"))
    assert code == 0, err
    assert "0 logged, 1 resumed" in out
    puts = [p for m, p in http_log.calls if m == "PUT"]
    assert len(puts) == 8 - len(sent)  # 8 files in all (6 + config + metrics)
    assert not any(p.endswith(tuple(uploaded)) for p in puts)
    run = logged_run(b, f"{uniq}-exp", d.name)  # still exactly one run
    assert run.info.status == "FINISHED"
    assert len(artifact_list(b, run.info.run_id)) == 8


def test_links_and_fifos_are_neither_uploaded_nor_opened(
    server_backend: Backend, uniq: str, run_cli: CLI, tmp_path: Path
) -> None:
    b = server_backend
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.txt").write_text("secret")
    (outside / "dir" / "inner.txt").write_text("inner")
    d = make_run_dir(
        b.repo / "runs",
        "run_hmm_20251009_105640",
        {"model_type": "hmm", "dataset": "d"},
        {"bic_final": 1.0},
        {"model.joblib": "x"},
    )
    os.symlink(outside / "secret.txt", d / "link.txt")
    os.symlink(outside / "dir", d / "linkdir")
    os.mkfifo(d / "pipe")
    manifest_for(b.repo, f"{uniq}-m", f"{uniq}-exp", [d])
    code, _, err = run_cli(*args(b, "sync"))  # a FIFO opened for reading would block here
    assert code == 0, err
    assert "link.txt" in err and "linkdir" in err and "pipe" in err
    run = logged_run(b, f"{uniq}-exp", d.name)
    assert sorted(artifact_list(b, run.info.run_id)) == [
        "metrics.json",
        "model.joblib",
        "pipeline_config.json",
    ]


def test_changed_param_fails_and_writes_nothing(
    server_backend: Backend, uniq: str, run_cli: CLI, http_log: Recorder
) -> None:
    b = server_backend
    d = make_run_dir(
        b.repo / "runs",
        "run_20251008_145809_lgbm_y_1h_huber",
        {
            "model_type": "lgbm",
            "target": "y_1h",
            "objective": "huber",
            "dataset": "d",
            "feature_list_id": "a",
        },
        {"rmse_test": 1.0},
    )
    manifest_for(b.repo, f"{uniq}-m", f"{uniq}-exp", [d])
    assert run_cli(*args(b, "sync"))[0] == 0
    cfg = json.loads((d / "pipeline_config.json").read_text())
    cfg["feature_list_id"] = "b"
    (d / "pipeline_config.json").write_text(json.dumps(cfg))
    http_log.clear()
    code, _, err = run_cli(*args(b, "sync"))
    assert code == 1
    assert "param 'feature_list_id': run has 'a', directory has 'b'" in err
    assert "manifests/" in err and ".yaml:6:5" in err
    assert http_log.writes() == []
    # apply refuses too, before any registry write
    code, _, err = run_cli(*args(b, "apply", "--auto-approve"))
    assert code == 1
    assert http_log.writes() == []


def test_moved_run_dir_only_warns_about_path_params(
    server_backend: Backend, uniq: str, run_cli: CLI
) -> None:
    b = server_backend
    d = make_run_dir(
        b.repo / "a",
        "run_hmm_20251009_105640",
        {"model_type": "hmm", "dataset": "d"},
        {"bic_final": 1.0},
    )
    manifest_for(b.repo, f"{uniq}-m", f"{uniq}-exp", [d])
    assert run_cli(*args(b, "sync"))[0] == 0
    moved = b.repo / "b" / d.name
    moved.parent.mkdir()
    shutil.move(d, moved)
    manifest_for(b.repo, f"{uniq}-m", f"{uniq}-exp", [moved])
    code, out, err = run_cli(*args(b, "sync"))
    assert code == 0, err
    assert "param 'run_dir'" in err and "path params differ between machines" in err
    assert "1 already logged" in out


def test_run_name_breaking_the_schema_is_reported(
    server_backend: Backend, uniq: str, run_cli: CLI
) -> None:
    b = server_backend
    d = make_run_dir(
        b.repo / "runs",
        "run_20251008_145809_lgbm_wrongtarget_huber",
        {"model_type": "lgbm", "target": "y_1h", "objective": "huber", "dataset": "d"},
        {"rmse_test": 1.0},
    )
    manifest_for(b.repo, f"{uniq}-m", f"{uniq}-exp", [d])
    code, _, err = run_cli(*args(b, "validate"))
    assert code == 0
    assert "run_20251008_145809_lgbm_wrongtarget_huber" in err and "warning:" in err


def test_diff_lists_runs_that_sync_would_log(
    server_backend: Backend, uniq: str, run_cli: CLI
) -> None:
    b = server_backend
    d = make_run_dir(
        b.repo / "runs",
        "run_hmm_20251009_105640",
        {"model_type": "hmm", "dataset": "d"},
        {"bic_final": 1.0},
    )
    manifest_for(b.repo, f"{uniq}-m", f"{uniq}-exp", [d])
    code, out, _ = run_cli(*args(b, "diff"))
    assert code == 0
    assert f"+ run run_hmm_20251009_105640 in experiment '{uniq}-exp'" in out
    assert "+ version 1 from run run_hmm_20251009_105640" in out


def test_main_job_in_a_git_checkout_with_history(
    examples_repo: Path, run_cli: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's main job where a user runs it: a clone, whose previous commit already
    declares the same aliases. On an empty registry the reviewed holder is the entry this
    apply registers, so the alias does not move and no incumbent is missing (this was a
    deny, 'neither its version nor a single run of it can be found')."""
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-C", str(examples_repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "examples"], check=True)
    (examples_repo / "NOTES.md").write_text("a later commit that changes no manifest\n")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "notes"], check=True)
    monkeypatch.chdir(examples_repo)
    code, out, err = run_cli("apply", "--auto-approve")
    assert code == 0, out + err
    assert "Verified: the registry matches the manifests." in out
    code, out, err = run_cli("diff", "--exit-code")
    assert code == 0, out + err


def test_main_job_on_the_embedded_default(
    examples_repo: Path, run_cli: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's main job on a copy of the repo: sync + apply to sqlite:///mlflow.db."""
    from mlflow import MlflowClient

    monkeypatch.chdir(examples_repo)
    code, out, err = run_cli("apply", "--auto-approve")
    assert code == 0, err
    assert "Verified: the registry matches the manifests." in out
    c = MlflowClient(f"sqlite:///{examples_repo / 'mlflow.db'}")
    base = examples_repo / "examples" / "runs" / "BINANCE_BTCUSDT.P, 60"
    for exp, run_name, model, alias in (
        (
            "binance-btcusdt-perp-1h-7d-logret",
            LGBM_RUN,
            "btcusdt-1h-inference-7d-logret",
            "Staging",
        ),
        ("hmm-btcusdt-1h", HMM_RUN, "btcusdt-1h-regimes-hmm", "Production"),
    ):
        e = c.get_experiment_by_name(exp)
        runs = c.search_runs([e.experiment_id])
        assert [r.info.run_name for r in runs] == [run_name]
        run = runs[0]
        assert run.data.params["run_dir"] == str((base / run_name).resolve())
        assert run.data.params["model_path"].startswith(str((base / run_name).resolve()))
        assert run.data.params["dataset_slug"] == "BINANCE_BTCUSDT.P__60"
        names = sorted(p.name for p in (base / run_name).iterdir())
        assert sorted(a.path for a in c.list_artifacts(run.info.run_id)) == names
        rm = c.get_registered_model(model)
        assert rm.description
        assert {a: int(v) for a, v in rm.aliases.items()} == {alias: 1}
        mv = c.get_model_version(model, "1")
        assert mv.run_id == run.info.run_id and mv.description
    lgbm = c.search_runs(
        [c.get_experiment_by_name("binance-btcusdt-perp-1h-7d-logret").experiment_id]
    )[0]
    assert lgbm.data.params["model_type"] == "lgbm"
    assert lgbm.data.params["objective"] == "huber"
    assert lgbm.data.params["feature_list_id"] == "binance_btcusdt_p60_default"
    assert set(lgbm.data.metrics) >= {
        "rmse_train",
        "rmse_val",
        "rmse_test",
        "corr_train",
        "corr_val",
        "corr_test",
    }

    code, out, _ = run_cli("apply", "--auto-approve")
    assert code == 0
    assert "No changes." in out
    code, out, _ = run_cli("sync")
    assert "0 logged, 0 resumed, 2 already logged; uploaded 0 files" in out


def test_dry_run_lists_what_sync_would_do_and_writes_nothing(
    server_backend: Backend, uniq: str, run_cli: CLI, http_log: Recorder
) -> None:
    b = server_backend
    d = make_run_dir(
        b.repo / "runs",
        "run_hmm_20251009_105640",
        {"model_type": "hmm", "dataset": "d"},
        {"bic_final": 1.0},
    )
    manifest_for(b.repo, f"{uniq}-m", f"{uniq}-exp", [d])
    http_log.clear()
    code, out, _ = run_cli(*args(b, "sync", "--dry-run"))
    assert code == 0
    assert "  + run_hmm_20251009_105640" in out and "would log or resume 1 run(s)" in out
    assert http_log.writes() == []
