"""Tests of the run-directory reader (regctl.adapters.rundir, regctl.core.runs and
regctl.core.runschema): no server, real files in tmp_path."""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import stat
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from regctl.adapters.rundir import open_run_file, read_run_dir
from regctl.core.runs import PATH_PARAMS, RunFile, RunRecord, Skipped, run_name_problem
from regctl.errors import InputError, Location

REPO = Path(__file__).resolve().parents[1]
DATASET = "BINANCE_BTCUSDT.P, 60"
LGBM_RUN = "run_20251008_145809_lgbm_y_logret_168h_huber"
HMM_RUN = "run_hmm_20251009_105640"

LGBM_CONFIG: dict[str, Any] = {
    "model_type": "lgbm",
    "dataset": DATASET,
    "target": "y_logret_168h",
    "objective": "huber",
    "prepared_data_dir": "/data/prepared/p1",
    "feature_store": {"features_csv": "/fs/features.csv", "targets_csv": "/fs/targets.csv"},
    "feature_list_id": "binance_btcusdt_p60_default",
    "hyperparameter_tuning_method": "optuna",
}
PER_SPLIT_METRICS = {
    "train": {"rmse": 0.0548, "corr": 0.41},
    "val": {"rmse": 0.0669, "corr": 0.315},
    "test": {"rmse": 0.0448, "corr": 0.29},
}


def write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=2), encoding="utf-8")


def make_run(
    parent: Path,
    name: str = LGBM_RUN,
    *,
    config: object = LGBM_CONFIG,
    metrics: object = PER_SPLIT_METRICS,
    run_metadata: object = None,
    diagnostics: object = None,
    files: Mapping[str, str] | None = None,
) -> Path:
    """A run directory under `parent`; None leaves a JSON file out."""
    run = parent / name
    run.mkdir(parents=True)
    for file_name, value in (
        ("pipeline_config.json", config),
        ("metrics.json", metrics),
        ("run_metadata.json", run_metadata),
        ("diagnostics.json", diagnostics),
    ):
        if value is not None:
            write_json(run / file_name, value)
    for rel, text in (files if files is not None else {"model.txt": "tree\n"}).items():
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_text(text, encoding="utf-8")
    return run


def params_of(run: Path) -> dict[str, str]:
    return dict(read_run_dir(run).params)


def problems_of(excinfo: pytest.ExceptionInfo[InputError]) -> list[tuple[Location, str, str]]:
    return [(p.location, p.field, p.message) for p in excinfo.value.problems]


def in_thread(action: Callable[[], object], fifo: Path) -> object:
    """Run `action`, failing (not hanging) if it blocks on `fifo`, e.g. by opening it."""
    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(action()), daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():
        # Unblock an open() waiting for a writer, so the thread can finish.
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        pytest.fail(f"blocked on the FIFO {fifo}")
    assert result, "the action raised (see the thread's traceback)"
    return result[0]


# ------------------------------------------------------------------- the derivation table


def test_lgbm_regression_params_and_metrics(tmp_path: Path) -> None:
    run = make_run(tmp_path / DATASET)
    record = read_run_dir(run)
    run_dir = str(run.resolve())
    assert record.run_name == LGBM_RUN
    assert record.run_dir == run_dir
    assert dict(record.params) == {
        "model_type": "lgbm",
        "target": "y_logret_168h",
        "objective": "huber",
        "primary_metric": "rmse",
        "dataset_slug": "BINANCE_BTCUSDT.P__60",
        "prepared_data_dir": "/data/prepared/p1",
        "output_dir": str((tmp_path / DATASET).resolve()),
        "feature_store.features_csv": "/fs/features.csv",
        "feature_store.targets_csv": "/fs/targets.csv",
        "feature_list_id": "binance_btcusdt_p60_default",
        "hyperparam_tuning": "1",
        "run_dir": run_dir,
        "model_path": f"{run_dir}/model.txt",
    }
    assert dict(record.metrics) == {
        "rmse_train": 0.0548,
        "rmse_val": 0.0669,
        "rmse_test": 0.0448,
        "corr_train": 0.41,
        "corr_val": 0.315,
        "corr_test": 0.29,
    }
    assert list(record.params) == sorted(record.params)
    assert list(record.metrics) == sorted(record.metrics)
    assert record.warnings == ()
    assert record.skipped == ()


def test_record_is_read_only(tmp_path: Path) -> None:
    record = read_run_dir(make_run(tmp_path / DATASET))
    with pytest.raises(TypeError):
        record.params["target"] = "other"  # type: ignore[index]
    with pytest.raises(AttributeError):
        record.run_name = "other"  # type: ignore[misc]


def test_lgbm_classification(tmp_path: Path) -> None:
    config = {
        **LGBM_CONFIG,
        "target": "y_up_24h",
        "objective": "binary",
        "hyperparameter_tuning_method": None,
    }
    metrics = {
        split: {"auc": auc, "logloss": loss}
        for split, auc, loss in (("train", 0.71, 0.61), ("val", 0.64, 0.66), ("test", 0.62, 0.67))
    }
    run = make_run(
        tmp_path / DATASET,
        "run_20251010_090000_lgbm_y_up_24h_binary",
        config=config,
        metrics=metrics,
    )
    record = read_run_dir(run)
    assert {k: record.params[k] for k in ("objective", "primary_metric", "hyperparam_tuning")} == {
        "objective": "binary",
        "primary_metric": "auc",
        "hyperparam_tuning": "0",
    }
    assert dict(record.metrics) == {
        "auc_train": 0.71,
        "auc_val": 0.64,
        "auc_test": 0.62,
        "logloss_train": 0.61,
        "logloss_val": 0.66,
        "logloss_test": 0.67,
    }
    assert record.warnings == ()


@pytest.mark.parametrize(
    ("objective", "primary_metric"),
    [
        ("binary", "auc"),
        ("cross_entropy", "auc"),
        ("xentropy", "auc"),
        ("quantile", "pinball_loss"),
        ("huber", "rmse"),
        ("regression", "rmse"),
        ("tweedie", "rmse"),
        (None, "rmse"),
    ],
)
def test_primary_metric_by_objective(
    tmp_path: Path, objective: str | None, primary_metric: str
) -> None:
    config = {**LGBM_CONFIG, "objective": objective}
    params = params_of(make_run(tmp_path, config=config))
    assert params["primary_metric"] == primary_metric
    assert ("objective" in params) == (objective is not None)


def test_primary_metric_from_config_wins(tmp_path: Path) -> None:
    config = {**LGBM_CONFIG, "objective": "binary", "primary_metric": "logloss"}
    assert params_of(make_run(tmp_path, config=config))["primary_metric"] == "logloss"


def test_hmm_params_with_diagnostics(tmp_path: Path) -> None:
    config = {
        "model_type": "hmm",
        "dataset": DATASET,
        "input_data": "/data/features.csv",
        "state_grid": [2, 3, 4],
    }
    diagnostics = {
        "n_states": 4,  # metrics.json's value wins
        "aic_final": 2000.5,
        "entropy_final": 12.25,
        "rows": 320,
        "n_features": 3,
        "converged": True,  # not a schema metric: ignored
        "state_occupancy": [0.5, 0.5],
    }
    run = make_run(
        tmp_path / DATASET,
        HMM_RUN,
        config=config,
        metrics={"n_states": 3, "bic_final": 212234.27, "test_ll": -18482.57},
        diagnostics=diagnostics,
        files={"model.joblib": "pickle"},
    )
    record = read_run_dir(run)
    run_dir = str(run.resolve())
    assert dict(record.params) == {
        "model_type": "hmm",
        "target": "unsupervised target",
        "primary_metric": "bic",
        "dataset_slug": "BINANCE_BTCUSDT.P__60",
        "input_data": "/data/features.csv",
        "output_dir": str((tmp_path / DATASET).resolve()),
        "feature_list_id": "NA",
        "hyperparam_tuning": "1",
        "run_dir": run_dir,
        "model_path": f"{run_dir}/model.joblib",
    }
    assert dict(record.metrics) == {
        "n_states": 3.0,
        "bic_final": 212234.27,
        "test_ll": -18482.57,
        "aic_final": 2000.5,
        "entropy_final": 12.25,
        "rows": 320.0,
        "n_features": 3.0,
    }
    assert record.warnings == ()


def test_hmm_icl_and_ignored_target_and_objective(tmp_path: Path) -> None:
    config = {
        "model_type": "hmm",
        "dataset": "d",
        "selection_criterion": "icl",
        "target": "y_logret_1h",
        "objective": "huber",
    }
    run = make_run(tmp_path, HMM_RUN, config=config, metrics={}, files={"model.joblib": "x"})
    record = read_run_dir(run)
    assert record.params["primary_metric"] == "icl"
    assert record.params["target"] == "unsupervised target"
    assert "objective" not in record.params
    assert record.params["hyperparam_tuning"] == "0"
    assert record.warnings == (
        "pipeline_config.json: target 'y_logret_1h' ignored: HMM runs use 'unsupervised target'",
    )


def test_diagnostics_ignored_for_lgbm(tmp_path: Path) -> None:
    run = make_run(tmp_path, metrics={"rmse_test": 0.1}, diagnostics={"n_states": 3})
    assert dict(read_run_dir(run).metrics) == {"rmse_test": 0.1}


@pytest.mark.parametrize(
    ("run_name", "model_type", "model_file"),
    [
        ("run_20251008_145809_lgbm_y_huber", "lgbm", "model.txt"),
        ("run_hmm_20251009_105640", "hmm", "model.joblib"),
    ],
)
def test_model_type_from_run_name(
    tmp_path: Path, run_name: str, model_type: str, model_file: str
) -> None:
    config = {"dataset": "d", "target": "y", "objective": "huber"}
    run = make_run(tmp_path, run_name, config=config, files={model_file: "m"})
    params = params_of(run)
    assert params["model_type"] == model_type
    assert params["model_path"] == f"{run.resolve()}/{model_file}"


def test_model_type_missing_and_not_derivable(tmp_path: Path) -> None:
    run = make_run(tmp_path, "my_experiment", config={"dataset": "d"})
    with pytest.raises(InputError) as excinfo:
        read_run_dir(run, display="runs/my_experiment")
    assert problems_of(excinfo) == [
        (
            Location("runs/my_experiment/pipeline_config.json"),
            "model_type",
            "missing, and the run name contains neither '_lgbm_' nor a 'run_hmm_' prefix",
        )
    ]


@pytest.mark.parametrize(
    ("dataset", "slug"),
    [
        ("BINANCE_BTCUSDT.P, 60", "BINANCE_BTCUSDT.P__60"),
        ("a b,c", "a_b_c"),
        ("plain", "plain"),
        (60, "60"),
    ],
)
def test_dataset_slug(tmp_path: Path, dataset: object, slug: str) -> None:
    params = params_of(make_run(tmp_path, config={**LGBM_CONFIG, "dataset": dataset}))
    assert params["dataset_slug"] == slug


def test_dataset_slug_from_parent_directory(tmp_path: Path) -> None:
    config = {k: v for k, v in LGBM_CONFIG.items() if k != "dataset"}
    record = read_run_dir(make_run(tmp_path / "BYBIT_ETHUSDT, 15", config=config))
    assert record.params["dataset_slug"] == "BYBIT_ETHUSDT__15"
    assert record.warnings == (
        "pipeline_config.json: no dataset; dataset_slug taken from the parent directory"
        " 'BYBIT_ETHUSDT, 15'",
    )


def test_output_dir_from_config(tmp_path: Path) -> None:
    config = {**LGBM_CONFIG, "output_dir": "/models/elsewhere"}
    assert params_of(make_run(tmp_path, config=config))["output_dir"] == "/models/elsewhere"


def test_extra_feature_files_flattened(tmp_path: Path) -> None:
    config = {
        **LGBM_CONFIG,
        "extra_feature_files": [
            {"path": "/x/funding.csv", "include": ["funding_rate_8h", "oi_change_24h"]},
            {"path": "/x/basis.csv", "include": "basis_1h"},
            {"path": "/x/all.csv"},
            "/x/bare.csv",
            {"path": "/x/none.csv", "include": []},
        ],
    }
    params = params_of(make_run(tmp_path, config=config))
    assert {k: v for k, v in params.items() if k.startswith("extra_feature_files.")} == {
        "extra_feature_files.0.path": "/x/funding.csv",
        "extra_feature_files.0.include": "funding_rate_8h,oi_change_24h",
        "extra_feature_files.1.path": "/x/basis.csv",
        "extra_feature_files.1.include": "basis_1h",
        "extra_feature_files.2.path": "/x/all.csv",
        "extra_feature_files.3.path": "/x/bare.csv",
        "extra_feature_files.4.path": "/x/none.csv",
        "extra_feature_files.4.include": "",
    }


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        ({"path": "/a"}, "extra_feature_files", "must be a list, not an object"),
        ([{"include": "f"}], "extra_feature_files.0.path", "missing"),
        ([7], "extra_feature_files.0", "must be an object or a path, not a number"),
        (
            [{"path": "/a", "include": ["f", "g,h"]}],
            "extra_feature_files.0.include.1",
            "contains ','; include items are joined with ',' into one param",
        ),
        (
            [{"path": "/a", "include": {"f": 1}}],
            "extra_feature_files.0.include",
            "must be a string or a number, not an object",
        ),
    ],
)
def test_extra_feature_files_errors(
    tmp_path: Path, extra: object, field: str, message: str
) -> None:
    run = make_run(tmp_path, config={**LGBM_CONFIG, "extra_feature_files": extra})
    with pytest.raises(InputError) as excinfo:
        read_run_dir(run, display="r")
    assert problems_of(excinfo) == [(Location("r/pipeline_config.json"), field, message)]


@pytest.mark.parametrize(
    ("value", "param"),
    [
        ("binance_btcusdt_p60_default", "binance_btcusdt_p60_default"),
        (None, "NA"),
        (7, "7"),  # numbers and booleans become MLflow's str(): 7 -> "7"
        (0.05, "0.05"),
        (True, "True"),
    ],
)
def test_feature_list_id(tmp_path: Path, value: object, param: str) -> None:
    config = {**LGBM_CONFIG, "feature_list_id": value}
    assert params_of(make_run(tmp_path, config=config))["feature_list_id"] == param


def test_feature_list_id_absent_is_na(tmp_path: Path) -> None:
    config = {k: v for k, v in LGBM_CONFIG.items() if k != "feature_list_id"}
    assert params_of(make_run(tmp_path, config=config))["feature_list_id"] == "NA"


@pytest.mark.parametrize(
    ("settings", "flag"),
    [
        ({}, "0"),
        ({"hyperparameter_tuning_method": "optuna"}, "1"),
        ({"hyperparameter_tuning_method": "grid", "state_grid": None}, "1"),
        ({"state_grid": [2, 3, 4]}, "1"),
        ({"state_grid": {"min": 2, "max": 15}}, "1"),
        ({"hyperparameter_tuning_method": None}, "0"),
        ({"hyperparameter_tuning_method": "none"}, "0"),
        ({"hyperparameter_tuning_method": "None"}, "0"),
        ({"hyperparameter_tuning_method": ""}, "0"),
        ({"hyperparameter_tuning_method": False}, "0"),
        ({"state_grid": []}, "0"),
    ],
)
def test_hyperparam_tuning(tmp_path: Path, settings: dict[str, object], flag: str) -> None:
    base = {k: v for k, v in LGBM_CONFIG.items() if k != "hyperparameter_tuning_method"}
    assert params_of(make_run(tmp_path, config={**base, **settings}))["hyperparam_tuning"] == flag


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("target", ["a"], "must be a string or a number, not an array"),
        ("feature_store", "/fs", "must be an object, not a string"),
        ("input_data", {"path": "/x"}, "must be a string or a number, not an object"),
    ],
)
def test_config_value_types(tmp_path: Path, key: str, value: object, message: str) -> None:
    run = make_run(tmp_path, config={**LGBM_CONFIG, key: value})
    with pytest.raises(InputError) as excinfo:
        read_run_dir(run, display="r")
    assert problems_of(excinfo) == [(Location("r/pipeline_config.json"), key, message)]


def test_param_longer_than_mlflow_keeps(tmp_path: Path) -> None:
    run = make_run(tmp_path, config={**LGBM_CONFIG, "input_data": "/" + "x" * 6000})
    with pytest.raises(InputError) as excinfo:
        read_run_dir(run, display="r")
    assert problems_of(excinfo) == [
        (
            Location("r/pipeline_config.json"),
            "input_data",
            "value is 6001 characters; MLflow keeps 6000 and would truncate it silently",
        )
    ]
    exactly = make_run(tmp_path / "ok", config={**LGBM_CONFIG, "input_data": "/" + "x" * 5999})
    assert len(params_of(exactly)["input_data"]) == 6000


def test_relative_data_path_is_warned(tmp_path: Path) -> None:
    record = read_run_dir(make_run(tmp_path, config={**LGBM_CONFIG, "input_data": "data.csv"}))
    assert record.params["input_data"] == "data.csv"
    assert record.warnings == (
        "pipeline_config.json: input_data 'data.csv' is not an absolute path",
    )


# ------------------------------------------------------------------ model_path, run_dir


def test_model_path_mapped_from_recorded_run_dir(tmp_path: Path) -> None:
    old = f"/models/{DATASET}/{LGBM_RUN}"
    run = make_run(
        tmp_path / DATASET,
        run_metadata={"run_dir": old, "model_path": f"{old}/model/booster.txt"},
        files={"model/booster.txt": "tree"},
    )
    params = params_of(run)
    assert params["run_dir"] == str(run.resolve())
    assert params["model_path"] == f"{run.resolve()}/model/booster.txt"
    assert "external_model_path" not in params


def test_model_path_outside_recorded_run_dir_is_external(tmp_path: Path) -> None:
    run = make_run(
        tmp_path,
        run_metadata={"run_dir": f"/models/{LGBM_RUN}", "model_path": "/shared/models/m.txt"},
    )
    params = params_of(run)
    assert params["model_path"] == "/shared/models/m.txt"
    assert params["external_model_path"] == "/shared/models/m.txt"
    assert params["run_dir"] == str(run.resolve())


def test_model_path_relative_to_run_dir(tmp_path: Path) -> None:
    run = make_run(tmp_path, run_metadata={"model_path": "model.txt"})
    params = params_of(run)
    assert params["model_path"] == f"{run.resolve()}/model.txt"
    assert "external_model_path" not in params


def test_model_path_relative_escaping_run_dir_is_external(tmp_path: Path) -> None:
    run = make_run(tmp_path / "a", run_metadata={"model_path": "../shared/model.txt"})
    params = params_of(run)
    expected = str((tmp_path / "a" / "shared" / "model.txt").resolve())
    assert params["model_path"] == params["external_model_path"] == expected


def test_model_path_mapped_by_run_name_without_recorded_run_dir(tmp_path: Path) -> None:
    run = make_run(tmp_path, run_metadata={"model_path": f"/old/{LGBM_RUN}/model.txt"})
    assert params_of(run)["model_path"] == f"{run.resolve()}/model.txt"
    # Not mapped when the file is not there: it stays where the metadata says.
    other = make_run(
        tmp_path / "b", run_metadata={"model_path": f"/old/{LGBM_RUN}/gone.txt"}, files={}
    )
    assert params_of(other)["external_model_path"] == f"/old/{LGBM_RUN}/gone.txt"


def test_run_metadata_already_current(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    current = str(run.resolve())
    write_json(
        run / "run_metadata.json", {"run_dir": current, "model_path": f"{current}/model.txt"}
    )
    params = params_of(run)
    assert params["model_path"] == f"{current}/model.txt"
    assert "external_model_path" not in params


def test_model_file_missing_is_warned(tmp_path: Path) -> None:
    record = read_run_dir(make_run(tmp_path, files={}))
    assert "model_path" not in record.params
    assert record.warnings == ("no model.txt in the run directory, so no model_path param",)


def test_mapped_model_path_missing_is_warned(tmp_path: Path) -> None:
    run = make_run(
        tmp_path, run_metadata={"run_dir": "/old/r", "model_path": "/old/r/m.txt"}, files={}
    )
    record = read_run_dir(run)
    assert record.params["model_path"] == f"{run.resolve()}/m.txt"
    assert record.warnings == (
        "run_metadata.json: model_path 'm.txt' is not a regular file in the run directory",
    )


def test_run_dir_through_a_symlinked_parent_is_resolved(tmp_path: Path) -> None:
    run = make_run(tmp_path / "real")
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    record = read_run_dir(tmp_path / "alias" / LGBM_RUN)
    assert record.run_dir == str(run.resolve())
    assert record.params["output_dir"] == str((tmp_path / "real").resolve())


# ----------------------------------------------------------------------------- metrics


def test_flat_metrics(tmp_path: Path) -> None:
    run = make_run(tmp_path, metrics={"rmse_test": 0.0448, "corr_val": 0.315, "best_iter": 20})
    assert dict(read_run_dir(run).metrics) == {
        "best_iter": 20.0,
        "corr_val": 0.315,
        "rmse_test": 0.0448,
    }


def test_mixed_metrics_and_equal_duplicates(tmp_path: Path) -> None:
    metrics = {"rmse_test": 0.0448, "test": {"rmse": 0.0448, "corr": 0.3}, "val": {"corr": 0.2}}
    run = make_run(tmp_path, metrics=metrics)
    assert dict(read_run_dir(run).metrics) == {
        "rmse_test": 0.0448,
        "corr_test": 0.3,
        "corr_val": 0.2,
    }


def test_conflicting_duplicate_metric(tmp_path: Path) -> None:
    run = make_run(tmp_path, metrics={"rmse_test": 0.05, "test": {"rmse": 0.04}})
    with pytest.raises(InputError) as excinfo:
        read_run_dir(run, display="r")
    assert problems_of(excinfo) == [
        (
            Location("r/metrics.json"),
            "rmse_test",
            "given twice with different values (0.05 and 0.04)",
        )
    ]


def test_non_numeric_metrics_skipped_with_warnings(tmp_path: Path) -> None:
    metrics = {
        "rmse_test": 0.0448,
        "note": "good",
        "ok": True,
        "missing": None,
        "curve": [0.1, 0.2],
        "val": {"rmse": "n/a", "corr": 0.3, "deep": {"x": 1}},
        "huge": 10**400,
        "r2 (test)": 0.5,
    }
    record = read_run_dir(make_run(tmp_path, metrics=metrics))
    assert dict(record.metrics) == {"rmse_test": 0.0448, "corr_val": 0.3}
    assert record.warnings == (
        "metrics.json: note: metric skipped (a string, not a number)",
        "metrics.json: ok: metric skipped (a boolean, not a number)",
        "metrics.json: missing: metric skipped (null, not a number)",
        "metrics.json: curve: metric skipped (an array, not a number)",
        "metrics.json: val.rmse: metric skipped (a string, not a number)",
        "metrics.json: val.deep: metric skipped (an object, not a number)",
        "metrics.json: huge: metric skipped (too large)",
        "metrics.json: r2 (test): metric skipped (MLflow rejects the name 'r2 (test)')",
    )


def test_nan_and_infinity_kept(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    (run / "metrics.json").write_text(
        '{"test": {"rmse": NaN}, "ll_val": -Infinity, "bic": Infinity}', encoding="utf-8"
    )
    metrics = read_run_dir(run).metrics
    assert math.isnan(metrics["rmse_test"])
    assert metrics["ll_val"] == -math.inf
    assert metrics["bic"] == math.inf


# ------------------------------------------------------------------------------- files


def test_files_listed_recursively_sorted_with_sizes(tmp_path: Path) -> None:
    files = {
        "model.txt": "tree",
        "sub/x.json": "{}",
        "sub/deeper/y.csv": "a,b\n",
        "pred test, 1.csv": "1",
        ".hidden": "",
    }
    record = read_run_dir(make_run(tmp_path / DATASET, files=files))
    root = Path(record.run_dir)
    expected = sorted([*files, "metrics.json", "pipeline_config.json"])
    assert record.files == tuple(
        RunFile(rel, (root / rel).stat().st_size, _sha256(root / rel)) for rel in expected
    )
    assert [f.rel_path for f in record.files] == [
        ".hidden",
        "metrics.json",
        "model.txt",
        "pipeline_config.json",
        "pred test, 1.csv",
        "sub/deeper/y.csv",
        "sub/x.json",
    ]
    assert record.files[0] == RunFile(".hidden", 0, hashlib.sha256(b"").hexdigest())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_content_digest_is_over_paths_sizes_and_sha256(tmp_path: Path) -> None:
    """The tree digest changes with any byte, name or size, and with nothing else."""
    run = make_run(tmp_path / DATASET, files={"model.txt": "tree", "sub/a.csv": "1"})
    first = read_run_dir(run).digest
    assert first.startswith("sha256:") and len(first) == 7 + 64
    lines = "".join(
        f"{_sha256(run / rel)} {(run / rel).stat().st_size} {rel}\n"
        for rel in sorted(["metrics.json", "model.txt", "pipeline_config.json", "sub/a.csv"])
    )
    expected = hashlib.sha256(("regctl-tree-v1\n" + lines).encode()).hexdigest()
    assert first == "sha256:" + expected
    os.utime(run / "model.txt", (0, 0))  # times are not content
    assert read_run_dir(run).digest == first
    (run / "model.txt").write_text("trea")  # same size, one byte differs
    assert read_run_dir(run).digest != first
    (run / "model.txt").write_text("tree")
    (run / "sub" / "a.csv").rename(run / "sub" / "b.csv")
    assert read_run_dir(run).digest != first


def test_spaces_and_commas_everywhere(tmp_path: Path) -> None:
    parent = tmp_path / "models, all" / DATASET
    run = make_run(parent, files={"model.txt": "t", "a b, c/d, e.csv": "x"})
    record = read_run_dir(run)
    assert record.run_dir == str(run.resolve())
    assert record.params["output_dir"] == str(parent.resolve())
    assert RunFile("a b, c/d, e.csv", 1, hashlib.sha256(b"x").hexdigest()) in record.files
    with open_run_file(record, "a b, c/d, e.csv") as handle:
        assert handle.read() == b"x"


def test_symlink_to_file_outside_is_skipped(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not upload", encoding="utf-8")
    run = make_run(tmp_path / "runs")
    (run / "leak.txt").symlink_to(secret)
    (run / "dangling").symlink_to(tmp_path / "nowhere")
    (run / "loop").symlink_to("loop")  # stat through it would fail with ELOOP
    record = read_run_dir(run)
    assert record.skipped == (
        Skipped("dangling", "symbolic link (not followed)"),
        Skipped("leak.txt", "symbolic link (not followed)"),
        Skipped("loop", "symbolic link (not followed)"),
    )
    assert {f.rel_path for f in record.files} == {
        "metrics.json",
        "model.txt",
        "pipeline_config.json",
    }


def test_symlinked_directory_is_skipped_not_walked(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big.bin").write_text("data", encoding="utf-8")
    run = make_run(tmp_path / "runs")
    (run / "sub").mkdir()
    (run / "sub" / "linked").symlink_to(outside, target_is_directory=True)
    record = read_run_dir(run)
    assert record.skipped == (Skipped("sub/linked", "symbolic link (not followed)"),)
    assert not [f for f in record.files if "big.bin" in f.rel_path]


def test_fifo_is_skipped_and_never_opened(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    fifo = run / "pipe"
    os.mkfifo(fifo)
    record = in_thread(lambda: read_run_dir(run), fifo)
    assert isinstance(record, RunRecord)
    assert record.skipped == (Skipped("pipe", "FIFO"),)


def test_socket_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path)
    monkeypatch.chdir(run)  # AF_UNIX paths are short: bind a relative name
    with socket.socket(socket.AF_UNIX) as server:
        server.bind("sock")
        assert read_run_dir(run).skipped == (Skipped("sock", "socket"),)


def test_device_is_skipped(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    try:
        os.mknod(run / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("creating a device node needs privileges")
    assert read_run_dir(run).skipped == (Skipped("null", "device"),)


def test_odd_names_are_skipped(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    (run / "two\nlines.csv").write_text("x", encoding="utf-8")
    (run / "tab\there").write_text("x", encoding="utf-8")
    (run / "back\\slash").write_text("x", encoding="utf-8")
    (run / "dir\nname").mkdir()
    (run / "dir\nname" / "inner.txt").write_text("x", encoding="utf-8")
    fd = os.open(bytes(run) + b"/latin1-\xe9.csv", os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)
    record = read_run_dir(run)
    assert record.skipped == (
        Skipped("back\\slash", "name contains a backslash (a path separator on Windows)"),
        Skipped("dir\\nname", "name contains a newline"),
        Skipped("latin1-\\xe9.csv", "name is not valid UTF-8"),
        Skipped("tab\\there", "name contains a control character"),
        Skipped("two\\nlines.csv", "name contains a newline"),
    )
    assert {f.rel_path for f in record.files} == {
        "metrics.json",
        "model.txt",
        "pipeline_config.json",
    }


def test_reading_twice_is_identical(tmp_path: Path) -> None:
    run = make_run(tmp_path / DATASET, files={"b.txt": "b", "a/c.txt": "c", "model.txt": "m"})
    assert read_run_dir(run) == read_run_dir(run)


# ------------------------------------------------------------------------------ errors


def test_missing_required_files_reported_together(tmp_path: Path) -> None:
    run = make_run(tmp_path, config=None, metrics=None)
    with pytest.raises(InputError) as excinfo:
        read_run_dir(run, display="runs/x")
    assert problems_of(excinfo) == [
        (Location("runs/x/pipeline_config.json"), "", "missing (required in a run directory)"),
        (Location("runs/x/metrics.json"), "", "missing (required in a run directory)"),
    ]
    assert str(excinfo.value) == (
        "runs/x/pipeline_config.json: missing (required in a run directory)\n"
        "runs/x/metrics.json: missing (required in a run directory)"
    )


def test_invalid_json_reports_line_and_column(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    (run / "metrics.json").write_text(
        '{\n  "rmse_test": 0.04,\n  "corr_val": ,\n}', encoding="utf-8"
    )
    with pytest.raises(InputError) as excinfo:
        read_run_dir(run, display="r")
    assert problems_of(excinfo) == [
        (Location("r/metrics.json", 3, 15), "", "invalid JSON: Expecting value")
    ]
    assert str(excinfo.value) == "r/metrics.json:3:15: invalid JSON: Expecting value"


def test_display_defaults_to_the_given_path(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    (run / "pipeline_config.json").write_text("{", encoding="utf-8")
    with pytest.raises(InputError) as excinfo:
        read_run_dir(run)
    assert problems_of(excinfo) == [
        (
            Location(f"{run}/pipeline_config.json", 1, 2),
            "",
            "invalid JSON: Expecting property name enclosed in double quotes",
        )
    ]


@pytest.mark.parametrize(
    ("text", "location", "field", "message"),
    [
        ("[1, 2]", ("r/pipeline_config.json", 0, 0), "", "must be a JSON object, not an array"),
        ('"lgbm"', ("r/pipeline_config.json", 0, 0), "", "must be a JSON object, not a string"),
        (
            '{"target": "a",\n "target": "b"}',
            ("r/pipeline_config.json", 0, 0),
            "target",
            "duplicate key",
        ),
        ('{"a": "\xff"}', ("r/pipeline_config.json", 1, 8), "", "not valid UTF-8"),
    ],
)
def test_bad_config_file(
    tmp_path: Path, text: str, location: tuple[str, int, int], field: str, message: str
) -> None:
    run = make_run(tmp_path)
    data = text.encode("latin-1") if "\xff" in text else text.encode("utf-8")
    (run / "pipeline_config.json").write_bytes(data)
    with pytest.raises(InputError) as excinfo:
        read_run_dir(run, display="r")
    assert problems_of(excinfo) == [(Location(*location), field, message)]


def test_config_with_utf8_bom_is_read(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    text = (run / "pipeline_config.json").read_text(encoding="utf-8")
    (run / "pipeline_config.json").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert params_of(run)["target"] == "y_logret_168h"


def test_symlinked_config_is_an_error(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs", config=None)
    write_json(tmp_path / "elsewhere.json", LGBM_CONFIG)
    (run / "pipeline_config.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(InputError) as excinfo:
        read_run_dir(run, display="r")
    assert problems_of(excinfo) == [
        (
            Location("r/pipeline_config.json"),
            "",
            "is a symbolic link (not followed) (must be a regular file)",
        )
    ]


def test_fifo_metrics_is_an_error_without_blocking(tmp_path: Path) -> None:
    run = make_run(tmp_path, metrics=None)
    os.mkfifo(run / "metrics.json")

    def attempt() -> object:
        with pytest.raises(InputError) as excinfo:
            read_run_dir(run, display="r")
        return problems_of(excinfo)

    assert in_thread(attempt, run / "metrics.json") == [
        (Location("r/metrics.json"), "", "is a FIFO, not a regular file (must be a regular file)")
    ]


def test_optional_run_metadata_must_be_valid(tmp_path: Path) -> None:
    run = make_run(tmp_path, run_metadata=["not", "an", "object"])
    with pytest.raises(InputError) as excinfo:
        read_run_dir(run, display="r")
    assert problems_of(excinfo) == [
        (Location("r/run_metadata.json"), "", "must be a JSON object, not an array")
    ]


@pytest.mark.parametrize("kind", ["missing", "file", "symlink"])
def test_run_dir_itself_invalid(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "run"
    message = {
        "missing": "run directory does not exist",
        "file": "run directory is a regular file, not a directory",
        "symlink": "run directory is a symbolic link (not followed)",
    }[kind]
    if kind == "file":
        target.write_text("x", encoding="utf-8")
    elif kind == "symlink":
        real = make_run(tmp_path, "real")
        target.symlink_to(real, target_is_directory=True)
    with pytest.raises(InputError) as excinfo:
        read_run_dir(str(target) + ("/" if kind == "symlink" else ""), display="runs/run")
    assert problems_of(excinfo) == [(Location("runs/run"), "", message)]


# --------------------------------------------------------------------------- run names


@pytest.mark.parametrize(
    ("run_name", "params", "problem"),
    [
        (LGBM_RUN, {"model_type": "lgbm", "target": "y_logret_168h", "objective": "huber"}, None),
        (LGBM_RUN, {"model_type": "LGBM", "target": "y_logret_168h", "objective": "huber"}, None),
        (
            LGBM_RUN,
            {"model_type": "lgbm", "target": "y_logret_168h", "objective": "quantile"},
            f"run name {LGBM_RUN!r} does not follow the LGBM naming"
            " run_YYYYMMDD_HHMMSS_lgbm_{target}_{objective}"
            " (expected suffix _lgbm_y_logret_168h_quantile)",
        ),
        (
            "run_2025108_145809_lgbm_y_huber",
            {"model_type": "lgbm"},
            "run name 'run_2025108_145809_lgbm_y_huber' does not follow the LGBM naming"
            " run_YYYYMMDD_HHMMSS_lgbm_{target}_{objective}",
        ),
        ("run_20251008_145809_lgbm_anything", {"model_type": "lgbm"}, None),
        (
            "run_20251308_145809_lgbm_y_huber",
            {"model_type": "lgbm", "target": "y", "objective": "huber"},
            "run name 'run_20251308_145809_lgbm_y_huber': 20251308_145809 is not a real date"
            " and time (run_YYYYMMDD_HHMMSS_lgbm_{target}_{objective})",
        ),
        (
            "run_20250230_000000_lgbm_y_huber",
            {"model_type": "lgbm", "target": "y", "objective": "huber"},
            "run name 'run_20250230_000000_lgbm_y_huber': 20250230_000000 is not a real date"
            " and time (run_YYYYMMDD_HHMMSS_lgbm_{target}_{objective})",
        ),
        (HMM_RUN, {"model_type": "hmm"}, None),
        (
            "run_hmm_20251009_246000",
            {"model_type": "hmm"},
            "run name 'run_hmm_20251009_246000': 20251009_246000 is not a real date and time"
            " (run_hmm_YYYYMMDD_HHMMSS)",
        ),
        (
            "run_hmm_20251009_105640_v2",
            {"model_type": "hmm"},
            "run name 'run_hmm_20251009_105640_v2' does not follow the HMM naming"
            " run_hmm_YYYYMMDD_HHMMSS",
        ),
        ("anything", {"model_type": "xgboost"}, None),
        ("anything", {}, None),
    ],
)
def test_run_name_problem(run_name: str, params: dict[str, str], problem: str | None) -> None:
    assert run_name_problem(run_name, params) == problem


def test_run_name_problem_becomes_a_warning(tmp_path: Path) -> None:
    run = make_run(tmp_path, "run_20251008_145809_lgbm_y_logret_24h_huber")
    assert read_run_dir(run).warnings == (
        "run name 'run_20251008_145809_lgbm_y_logret_24h_huber' does not follow the LGBM naming"
        " run_YYYYMMDD_HHMMSS_lgbm_{target}_{objective} (expected suffix"
        " _lgbm_y_logret_168h_huber)",
    )


# ------------------------------------------------------------------------ open_run_file


def test_open_run_file_reads_regular_files(tmp_path: Path) -> None:
    record = read_run_dir(make_run(tmp_path, files={"model.txt": "tree", "sub/x.json": "{}"}))
    with open_run_file(record, "model.txt") as handle:
        assert handle.read() == b"tree"
    with open_run_file(record, "sub/x.json") as handle:
        assert handle.read() == b"{}"


@pytest.mark.parametrize(
    ("rel_path", "message"),
    [
        ("../outside.txt", "not a relative path inside the run directory"),
        ("sub/../model.txt", "not a relative path inside the run directory"),
        ("/etc/passwd", "not a relative path inside the run directory"),
        ("", "not a relative path inside the run directory"),
        ("sub//x.json", "not a relative path inside the run directory"),
        ("leak.txt", "is a symbolic link (not followed)"),
        ("linked/x.txt", "component 'linked' is a symbolic link, not a directory"),
        ("model.txt/x", "component 'model.txt' is a regular file, not a directory"),
        ("sub", "is a directory, not a regular file"),
        ("nothing.txt", "cannot open: No such file or directory"),
    ],
)
def test_open_run_file_refuses(tmp_path: Path, rel_path: str, message: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.txt").write_text("secret", encoding="utf-8")
    (tmp_path / "outside.txt").write_text("secret", encoding="utf-8")
    run = make_run(tmp_path / "runs", files={"model.txt": "m", "sub/x.json": "{}"})
    record = read_run_dir(run)
    (run / "leak.txt").symlink_to(outside / "x.txt")
    (run / "linked").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InputError) as excinfo:
        open_run_file(record, rel_path)
    assert problems_of(excinfo) == [(Location(f"{record.run_dir}/{rel_path}"), "", message)]


def test_open_run_file_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    record = read_run_dir(make_run(tmp_path))
    fifo = Path(record.run_dir) / "pipe"
    os.mkfifo(fifo)

    def attempt() -> object:
        with pytest.raises(InputError) as excinfo:
            open_run_file(record, "pipe")
        return problems_of(excinfo)

    assert in_thread(attempt, fifo) == [
        (Location(f"{record.run_dir}/pipe"), "", "is a FIFO, not a regular file")
    ]


def test_open_run_file_refuses_a_run_dir_replaced_by_a_symlink(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs")
    record = read_run_dir(run)
    run.rename(tmp_path / "moved")
    run.symlink_to(tmp_path / "moved", target_is_directory=True)
    with pytest.raises(InputError) as excinfo:
        open_run_file(record, "model.txt")
    assert [p.message for p in excinfo.value.problems] == ["cannot open: Not a directory"]


# --------------------------------------------------------------------- shipped examples

EXAMPLES = REPO / "examples" / "runs" / DATASET


def test_shipped_lgbm_example() -> None:
    record = read_run_dir(EXAMPLES / LGBM_RUN)
    run_dir = str((EXAMPLES / LGBM_RUN).resolve())
    assert record.run_dir == run_dir
    assert dict(record.params) == {
        "model_type": "lgbm",
        "target": "y_logret_168h",
        "objective": "huber",
        "primary_metric": "rmse",
        "dataset_slug": "BINANCE_BTCUSDT.P__60",
        "prepared_data_dir": f"/data/prepared/{DATASET}/prepared_20251008_1450",
        "output_dir": str(EXAMPLES.resolve()),
        "feature_store.features_csv": f"/data/feature_store/{DATASET}/features.csv",
        "feature_store.targets_csv": f"/data/feature_store/{DATASET}/targets.csv",
        "extra_feature_files.0.path": f"/data/extra/{DATASET}/funding.csv",
        "extra_feature_files.0.include": "funding_rate_8h",
        "feature_list_id": "binance_btcusdt_p60_default",
        "hyperparam_tuning": "1",
        "run_dir": run_dir,
        # run_metadata.json says /models/...; mapped into where the directory is now.
        "model_path": f"{run_dir}/model.txt",
    }
    for key in PATH_PARAMS & set(record.params):
        assert record.params[key].startswith(str(REPO.resolve()) + "/")
    assert sorted(record.metrics) == [
        "corr_test",
        "corr_train",
        "corr_val",
        "mae_test",
        "mae_train",
        "mae_val",
        "num_boost_round",
        "rmse_test",
        "rmse_train",
        "rmse_val",
    ]
    # The bar the shipped Production alias is held to (SPEC section 4's example policy).
    assert record.metrics["rmse_test"] <= 0.06
    assert record.metrics["corr_val"] >= 0.2
    assert [f.rel_path for f in record.files] == [
        "best_params.json",
        "feature_importance.csv",
        "metrics.json",
        "model.txt",
        "paths.json",
        "pipeline_config.json",
        "pred_test.csv",
        "pred_train.csv",
        "pred_val.csv",
        "prep_metadata.json",
        "run_metadata.json",
    ]
    assert sum(f.size for f in record.files) < 100_000
    assert record.skipped == ()
    assert record.warnings == ()


def test_shipped_hmm_example() -> None:
    record = read_run_dir(EXAMPLES / HMM_RUN)
    run_dir = str((EXAMPLES / HMM_RUN).resolve())
    assert dict(record.params) == {
        "model_type": "hmm",
        "target": "unsupervised target",
        "primary_metric": "bic",
        "dataset_slug": "BINANCE_BTCUSDT.P__60",
        "input_data": f"/data/{DATASET}/features.csv",
        "output_dir": str(EXAMPLES.resolve()),
        "feature_list_id": "NA",
        "hyperparam_tuning": "1",
        "run_dir": run_dir,
        "model_path": f"{run_dir}/model.joblib",
    }
    assert sorted(record.metrics) == sorted(
        [
            "n_states",
            "bic_final",
            "aic_final",
            "icl_final",
            "entropy_final",
            "train_final_ll",
            "test_ll",
            "rows",
            "n_features",
        ]
    )
    assert [f.rel_path for f in record.files] == [
        "diagnostics.json",
        "metrics.json",
        "model.joblib",
        "pipeline_config.json",
        "prep_metadata.json",
        "regimes.csv",
        "scaler.joblib",
        "selection_grid.csv",
    ]
    assert sum(f.size for f in record.files) < 100_000
    assert record.skipped == ()
    assert record.warnings == ()
