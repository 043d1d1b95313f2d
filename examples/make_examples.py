"""Train the two tiny example runs that the shipped manifests reference.

    pip install -e '.[examples]'   # lightgbm, hmmlearn, numpy, pandas
    python examples/make_examples.py

Writes, replacing whatever was there:

    examples/runs/BINANCE_BTCUSDT.P, 60/run_20251008_145809_lgbm_y_logret_168h_huber/
    examples/runs/BINANCE_BTCUSDT.P, 60/run_hmm_20251009_105640/

The models are real (a LightGBM huber regression with a small grid search, and a
hmmlearn GaussianHMM selected by BIC over a state grid) but trained on synthetic data
drawn with fixed seeds, so the directories stay tens of KB and need no market data.
The configs record the data paths of an imaginary training box (`/data/...`) and
run_metadata.json records where the run directory was written there (`/models/...`):
params are write-once, so they must not depend on the machine that runs this script,
and regctl maps the recorded model path into wherever the directory is now.

Output is deterministic (fixed seeds, one thread, LightGBM's deterministic mode, rounded
numbers): running it again with the same library versions rewrites identical files.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import joblib
import lightgbm as lgb
import numpy as np
from hmmlearn.hmm import GaussianHMM
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

DATASET = "BINANCE_BTCUSDT.P, 60"
RUNS_ROOT = Path(__file__).resolve().parent / "runs" / DATASET
# Where the imaginary training box kept its data and its runs (never this machine's paths).
DATA_ROOT = f"/data/{DATASET}"
TRAIN_OUTPUT_DIR = f"/models/{DATASET}"

LGBM_RUN = "run_20251008_145809_lgbm_y_logret_168h_huber"
HMM_RUN = "run_hmm_20251009_105640"
START = datetime(2025, 6, 1, tzinfo=UTC)


# ------------------------------------------------------------------------------ writing


def write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")


def stamp(index: int) -> str:
    return (START + timedelta(hours=index)).strftime("%Y-%m-%dT%H:%M:%SZ")


def fresh_dir(name: str) -> Path:
    path = RUNS_ROOT / name
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def r6(value: float) -> float:
    return round(float(value), 6)


# --------------------------------------------------------------------------------- LGBM

LGBM_FEATURES = ["ret_24h", "ret_168h", "vol_24h", "rsi_14", "volume_z", "funding_rate_8h"]
LGBM_FIXED = {
    "objective": "huber",
    "alpha": 0.05,  # the huber delta, on the scale of a 7-day log return
    "min_data_in_leaf": 20,
    "feature_fraction": 1.0,
    "bagging_fraction": 1.0,
    "lambda_l2": 1.0,
    "num_threads": 1,
    "deterministic": True,
    "force_row_wise": True,
    "seed": 20251008,
    "verbose": -1,
}
LGBM_GRID = {"num_leaves": [3, 7], "learning_rate": [0.05, 0.1]}
LGBM_ROUNDS = 20
SPLITS = (("train", 300), ("val", 100), ("test", 100))


def lgbm_data() -> tuple[np.ndarray, np.ndarray]:
    """A noisy linear signal on the scale of a 7-day BTC log return (std about 0.05)."""
    rng = np.random.default_rng(20251008)
    rows = sum(n for _, n in SPLITS)
    x = rng.normal(size=(rows, len(LGBM_FEATURES)))
    x[:, 2] = np.abs(x[:, 2])  # volatility is positive
    x[:, 3] = 50 + 15 * np.tanh(x[:, 3])  # an RSI-like bounded oscillator
    signal = 0.022 * x[:, 0] + 0.012 * x[:, 1] - 0.010 * x[:, 2] + 0.008 * x[:, 5]
    y = signal + rng.normal(scale=0.042, size=rows)
    return x, y


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    return {
        "rmse": r6(math.sqrt(float(np.mean((y_true - y_pred) ** 2)))),
        "mae": r6(float(np.mean(np.abs(y_true - y_pred)))),
        "corr": r6(float(np.corrcoef(y_true, y_pred)[0, 1])),
    }


def make_lgbm() -> Path:
    out = fresh_dir(LGBM_RUN)
    x, y = lgbm_data()
    bounds: dict[str, tuple[int, int]] = {}
    start = 0
    for split, size in SPLITS:
        bounds[split] = (start, start + size)
        start += size
    part = {split: (x[a:b], y[a:b]) for split, (a, b) in bounds.items()}

    def train(extra: dict[str, Any]) -> lgb.Booster:
        features, target = part["train"]
        data = lgb.Dataset(features, target, feature_name=LGBM_FEATURES, free_raw_data=False)
        return lgb.train({**LGBM_FIXED, **extra}, data, num_boost_round=LGBM_ROUNDS)

    # Grid search on the validation split: the run's hyperparameter tuning.
    trials = []
    for leaves in LGBM_GRID["num_leaves"]:
        for rate in LGBM_GRID["learning_rate"]:
            candidate = {"num_leaves": leaves, "learning_rate": rate}
            val_x, val_y = part["val"]
            rmse = scores(val_y, train(candidate).predict(val_x))["rmse"]
            trials.append((rmse, leaves, rate, candidate))
    best_rmse, _, _, best = min(trials, key=lambda t: (t[0], t[1], t[2]))
    booster = train(best)
    booster.save_model(str(out / "model.txt"))

    metrics: dict[str, Any] = {}
    for split, (a, _) in bounds.items():
        features, target = part[split]
        predicted = booster.predict(features)
        metrics[split] = scores(target, predicted)
        write_csv(
            out / f"pred_{split}.csv",
            ["timestamp", "y_true", "y_pred"],
            (
                [stamp(a + i), f"{t:.6f}", f"{p:.6f}"]
                for i, (t, p) in enumerate(zip(target, predicted, strict=True))
            ),
        )
    metrics["num_boost_round"] = LGBM_ROUNDS  # a flat entry beside the per-split ones
    write_json(out / "metrics.json", metrics)

    gain = booster.feature_importance(importance_type="gain")
    split_counts = booster.feature_importance(importance_type="split")
    ranked = sorted(
        zip(LGBM_FEATURES, gain, split_counts, strict=True), key=lambda r: (-r[1], r[0])
    )
    write_csv(
        out / "feature_importance.csv",
        ["feature", "gain", "split"],
        ([name, f"{g:.6f}", int(s)] for name, g, s in ranked),
    )

    write_json(
        out / "best_params.json",
        {**best, "val_rmse": best_rmse, "trials": [t[3] | {"val_rmse": t[0]} for t in trials]},
    )
    features_csv = f"/data/feature_store/{DATASET}/features.csv"
    targets_csv = f"/data/feature_store/{DATASET}/targets.csv"
    funding_csv = f"/data/extra/{DATASET}/funding.csv"
    prepared = f"/data/prepared/{DATASET}/prepared_20251008_1450"
    train_run_dir = f"{TRAIN_OUTPUT_DIR}/{LGBM_RUN}"
    write_json(
        out / "pipeline_config.json",
        {
            "model_type": "lgbm",
            "dataset": DATASET,
            "target": "y_logret_168h",
            "objective": "huber",
            "feature_store": {"features_csv": features_csv, "targets_csv": targets_csv},
            "extra_feature_files": [{"path": funding_csv, "include": ["funding_rate_8h"]}],
            "feature_list_id": "binance_btcusdt_p60_default",
            "features": LGBM_FEATURES,
            "prepared_data_dir": prepared,
            "splits": dict(SPLITS),
            "hyperparameter_tuning_method": "grid",
            "param_grid": LGBM_GRID,
            "lgbm_params": LGBM_FIXED,
            "num_boost_round": LGBM_ROUNDS,
        },
    )
    write_json(
        out / "paths.json",
        {
            "features_csv": features_csv,
            "targets_csv": targets_csv,
            "extra_feature_files": [funding_csv],
            "prepared_data_dir": prepared,
            "output_dir": TRAIN_OUTPUT_DIR,
            "run_dir": train_run_dir,
            "model_path": f"{train_run_dir}/model.txt",
        },
    )
    write_json(
        out / "run_metadata.json",
        {
            "run_name": LGBM_RUN,
            "started_at": "2025-10-08T14:58:09Z",
            "run_dir": train_run_dir,
            "model_path": f"{train_run_dir}/model.txt",
            "lightgbm_version": lgb.__version__,
            "best_iteration": booster.current_iteration(),
        },
    )
    write_json(
        out / "prep_metadata.json",
        {
            "dataset": DATASET,
            "source": "synthetic (examples/make_examples.py); the paths name a training box",
            "rows": len(y),
            "start": stamp(0),
            "end": stamp(len(y) - 1),
            "frequency": "1h",
            "features": LGBM_FEATURES,
            "target": "y_logret_168h",
            "splits": {
                split: {"start": stamp(a), "end": stamp(b - 1), "rows": b - a}
                for split, (a, b) in bounds.items()
            },
        },
    )
    return out


# ---------------------------------------------------------------------------------- HMM

HMM_FEATURES = ["logret_1h", "vol_24h", "volume_z"]
HMM_GRID = [2, 3, 4]
HMM_SEED = 20251009
HMM_TRAIN, HMM_TEST = 320, 80


def hmm_data() -> np.ndarray:
    """Three market regimes (calm, trending, stressed) from a sticky Markov chain."""
    rng = np.random.default_rng(HMM_SEED)
    means = np.array([[0.0002, 0.004, -0.3], [0.0015, 0.008, 0.4], [-0.002, 0.02, 1.5]])
    scales = np.array([[0.003, 0.0008, 0.4], [0.006, 0.0015, 0.5], [0.015, 0.004, 0.8]])
    transitions = np.array([[0.95, 0.04, 0.01], [0.05, 0.92, 0.03], [0.06, 0.04, 0.90]])
    state, rows = 0, []
    for _ in range(HMM_TRAIN + HMM_TEST):
        rows.append(rng.normal(means[state], scales[state]))
        state = int(rng.choice(3, p=transitions[state]))
    return np.array(rows)


def make_hmm() -> Path:
    out = fresh_dir(HMM_RUN)
    raw = hmm_data()
    scaler = StandardScaler().fit(raw[:HMM_TRAIN])
    scaled = scaler.transform(raw)
    train, test = scaled[:HMM_TRAIN], scaled[HMM_TRAIN:]

    grid = []
    for n_states in HMM_GRID:
        model = GaussianHMM(
            n_components=n_states,
            covariance_type="diag",
            n_iter=50,
            tol=1e-3,
            random_state=HMM_SEED,
        )
        model.fit(train)
        posterior = model.predict_proba(train)
        entropy = float(-np.sum(posterior * np.log(np.clip(posterior, 1e-300, None))))
        bic = float(model.bic(train))
        grid.append(
            {
                "n_states": n_states,
                "train_ll": round(float(model.score(train)), 4),
                "bic": round(bic, 4),
                "aic": round(float(model.aic(train)), 4),
                "icl": round(bic + 2 * entropy, 4),  # ICL = BIC + 2 x classification entropy
                "entropy": round(entropy, 4),
                # monitor_.converged is also true when n_iter ran out: judge by the tolerance.
                "converged": bool(
                    len(model.monitor_.history) >= 2
                    and model.monitor_.history[-1] - model.monitor_.history[-2] < model.tol
                ),
                "n_iter": int(model.monitor_.iter),
                "model": model,
            }
        )
    best = min(grid, key=lambda g: (g["bic"], g["n_states"]))
    model = best["model"]
    joblib.dump(model, out / "model.joblib")
    joblib.dump(scaler, out / "scaler.joblib")

    write_csv(
        out / "selection_grid.csv",
        ["n_states", "train_ll", "bic", "aic", "icl", "entropy", "converged", "n_iter", "selected"],
        (
            [
                g["n_states"],
                g["train_ll"],
                g["bic"],
                g["aic"],
                g["icl"],
                g["entropy"],
                g["converged"],
                g["n_iter"],
                g is best,
            ]
            for g in grid
        ),
    )
    states = model.predict(scaled)
    confidence = model.predict_proba(scaled).max(axis=1)
    write_csv(
        out / "regimes.csv",
        ["timestamp", "split", "state", "p_state"],
        (
            [stamp(i), "train" if i < HMM_TRAIN else "test", int(s), f"{p:.4f}"]
            for i, (s, p) in enumerate(zip(states, confidence, strict=True))
        ),
    )
    test_ll = round(float(model.score(test)), 4)
    occupancy = np.bincount(states[:HMM_TRAIN], minlength=model.n_components) / HMM_TRAIN
    diagnostics = {
        "n_states": best["n_states"],
        "bic_final": best["bic"],
        "aic_final": best["aic"],
        "icl_final": best["icl"],
        "entropy_final": best["entropy"],
        "train_final_ll": best["train_ll"],
        "test_ll": test_ll,
        "rows": HMM_TRAIN,
        "n_features": len(HMM_FEATURES),
        "converged": best["converged"],
        "n_iter": best["n_iter"],
        "covariance_type": "diag",
        "state_occupancy": [round(float(v), 4) for v in occupancy],
    }
    write_json(out / "diagnostics.json", diagnostics)
    # metrics.json carries the headline numbers; the rest of the schema's HMM metrics
    # (aic_final, entropy_final, rows, n_features) come from diagnostics.json.
    write_json(
        out / "metrics.json",
        {
            key: diagnostics[key]
            for key in ("n_states", "bic_final", "icl_final", "train_final_ll", "test_ll")
        },
    )
    write_json(
        out / "prep_metadata.json",
        {
            "dataset": DATASET,
            "source": "synthetic (examples/make_examples.py); the paths name a training box",
            "rows": HMM_TRAIN + HMM_TEST,
            "train_rows": HMM_TRAIN,
            "test_rows": HMM_TEST,
            "start": stamp(0),
            "end": stamp(HMM_TRAIN + HMM_TEST - 1),
            "frequency": "1h",
            "features": HMM_FEATURES,
            "scaler": "StandardScaler fitted on the train rows",
        },
    )
    write_json(
        out / "pipeline_config.json",
        {
            "model_type": "hmm",
            "dataset": DATASET,
            "input_data": f"{DATA_ROOT}/features.csv",
            "features": HMM_FEATURES,
            "state_grid": HMM_GRID,
            "selection_criterion": "bic",
            "covariance_type": "diag",
            "n_iter": 50,
            "tol": 1e-3,
            "test_rows": HMM_TEST,
            "seed": HMM_SEED,
        },
    )
    return out


def main() -> None:
    with threadpool_limits(limits=1):  # one BLAS/OpenMP thread: same numbers every run
        for path in (make_lgbm(), make_hmm()):
            size = sum(f.stat().st_size for f in path.iterdir())
            print(f"{path.relative_to(RUNS_ROOT.parent.parent)}: {size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
