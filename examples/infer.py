"""A real inference client: resolve a registered model, download it, verify, load, predict.

    pip install -e '.[examples]'   # lightgbm, hmmlearn (scikit-learn, joblib), numpy
    python examples/infer.py btcusdt-1h-inference-7d-logret@Staging --rows 5
    python examples/infer.py btcusdt-1h-regimes-hmm@Production --tracking-uri http://...

What it does, in the order a service would:

1. `regctl.resolve(MODEL@ALIAS)`: the alias is read once and becomes one version number.
2. `Resolved.download(DIR)`: exactly that version's files (all or nothing); DIR is
   `--out`, else a temporary folder removed afterwards.
   Every file is hashed as it arrives and the whole is checked against the content
   digest the registry records for the version; a mismatch stops the download.
3. `regctl.verify(DIR)`: the folder is re-hashed against its lock, as a service would
   before each load. Loading a `.joblib` file runs pickled code, so a version without a
   content record is refused unless `--allow-unverified`.
4. Loads the model by the run's `model_type` param: LightGBM's `model.txt` with
   `lightgbm.Booster`, or the HMM's `model.joblib` and `scaler.joblib` with joblib.
5. Predicts on the first N rows of the example data's test split.

The example data: the run directories hold no feature rows (every file in them is an
artifact that `regctl sync` logs, so adding one would change the shipped runs), and the
models were trained on synthetic data drawn with fixed seeds. So the rows are drawn again
by `make_examples.py`'s own functions (`lgbm_data`, `hmm_data`), which give the very
rows the runs were trained and tested on: for LightGBM the predictions equal the
`y_pred` column of the run's `pred_test.csv`. Columns are picked by name, in the order
the model expects (`Booster.feature_name()`, the run's `pipeline_config.json`).

Exit codes: 0 success, 1 error (one line on stderr), 2 bad arguments, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import math
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import regctl
from regctl.engine.resolved import Resolved, UnverifiedContent
from regctl.errors import RegctlError
from regctl.escape import text

EXAMPLES = Path(__file__).resolve().parent
INSTALL = "pip install -e '.[examples]'"


class InferenceError(Exception):
    """Something this client cannot go on from; `str(err)` is the one line it prints."""


@dataclass(frozen=True)
class Prediction:
    """What a model said about the rows: a header and one line of values per row."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, tuple[float, ...]], ...]  # (timestamp, values)
    summary: str = ""


# ------------------------------------------------------------------------ the example data


def _load(module: str) -> ModuleType:
    """Import a library of the examples extra, or fail in one line saying how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise InferenceError(f"{err.name or module} is not installed: {INSTALL}") from err


def _example_data() -> ModuleType:
    """`make_examples.py` (beside this file): how the example runs were trained."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return _load("make_examples")


def _columns(available: Sequence[str], wanted: Sequence[str]) -> list[int]:
    """Indexes of `wanted` among the example data's columns, in the model's order."""
    missing = [name for name in wanted if name not in available]
    if missing:
        raise InferenceError(
            f"the model expects features the example data does not have: {', '.join(missing)}"
            f" (it has {', '.join(available)})"
        )
    return [list(available).index(name) for name in wanted]


def _window(first: int, size: int, rows: int) -> range:
    if rows > size:
        raise InferenceError(f"--rows {rows}: the example data's test split has {size} rows")
    return range(first, first + rows)


def _config(folder: Path) -> dict[str, Any]:
    path = folder / "pipeline_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InferenceError(f"{path}: cannot read the training config: {err}") from err
    if not isinstance(config, dict):
        raise InferenceError(f"{path}: expected a JSON object")
    return config


# ---------------------------------------------------------------------------- the models


def predict_lgbm(folder: Path, model_file: str, rows: int) -> Prediction:
    """LightGBM: `model.txt`, the features by name, the first `rows` test rows."""
    lgb = _load("lightgbm")
    examples = _example_data()
    path = folder / model_file
    if path.suffix != ".txt":
        raise InferenceError(f"{model_file}: a LightGBM model is a text file (model.txt)")
    booster = lgb.Booster(model_file=str(path))
    x, _ = examples.lgbm_data()
    split = dict(examples.SPLITS)
    window = _window(split["train"] + split["val"], split["test"], rows)
    columns = _columns(examples.LGBM_FEATURES, booster.feature_name())
    features = x[window.start : window.stop, columns]
    target = _config(folder).get("target", "y")
    predicted = booster.predict(features)
    return Prediction(
        (f"pred_{target}",),
        tuple((examples.stamp(i), (float(p),)) for i, p in zip(window, predicted, strict=True)),
    )


def predict_hmm(folder: Path, model_file: str, rows: int) -> Prediction:
    """The HMM: `model.joblib` and `scaler.joblib`; the rows decoded as one sequence."""
    joblib = _load("joblib")
    examples = _example_data()
    path = folder / model_file
    scaler_path = path.with_name("scaler.joblib")
    if not scaler_path.is_file():
        raise InferenceError(f"{scaler_path.name}: missing from the download")
    model = joblib.load(path)
    scaler = joblib.load(scaler_path)
    features = _config(folder).get("features", examples.HMM_FEATURES)
    if not isinstance(features, list) or len(features) != scaler.n_features_in_:
        raise InferenceError(
            f"pipeline_config.json: features {features!r} do not fit the scaler"
            f" ({scaler.n_features_in_} features)"
        )
    window = _window(examples.HMM_TRAIN, examples.HMM_TEST, rows)
    columns = _columns(examples.HMM_FEATURES, features)
    raw = examples.hmm_data()[window.start : window.stop, columns]
    scaled = scaler.transform(raw)
    states = model.predict(scaled)  # the most likely path (Viterbi)
    confidence = model.predict_proba(scaled).max(axis=1)  # as the run's regimes.csv has it
    return Prediction(
        ("state", "p_state"),
        tuple(
            (examples.stamp(i), (float(s), float(p)))
            for i, s, p in zip(window, states, confidence, strict=True)
        ),
        f"log-likelihood of the {rows} rows: {float(model.score(scaled)):.6f}",
    )


PREDICTORS: dict[str, Callable[[Path, str, int], Prediction]] = {
    "lgbm": predict_lgbm,
    "hmm": predict_hmm,
}
# What each loader needs (unpickling the HMM imports hmmlearn and scikit-learn): imported
# before the download, so that a missing library fails first, in one line.
LIBRARIES = {"lgbm": ("lightgbm", "numpy"), "hmm": ("joblib", "hmmlearn", "sklearn", "numpy")}


# ------------------------------------------------------------------------------ the client


def _verify(resolved: Resolved, folder: Path, allow_unverified: bool) -> str:
    """Re-hash the download against its lock (the download itself was checked against the
    registry's record); what to print. A version without a record is refused unless
    `allow_unverified`: loading a .joblib file runs pickled code."""
    checked = regctl.verify(folder)  # raises VerifyFailed, naming the files, on a mismatch
    if resolved.content_digest is None:
        if not allow_unverified:
            raise InferenceError(
                f"{text(resolved.target)}: version {resolved.version} has no content record, "
                "so its files cannot be checked against the reviewed bytes; record one with "
                f"`regctl verify --record {text(resolved.model)}/{resolved.version}` or pass "
                "--allow-unverified"
            )
        return f"no (no content record; {checked.files} files, {checked.digest})"
    return f"yes, {checked.digest} ({checked.files} files, the registry's record)"


def _format(value: float, column: str) -> str:
    if not math.isfinite(value):
        raise InferenceError(f"the model predicted {value} for {column}")
    return str(int(value)) if column == "state" else f"{value:.6f}"


def infer(
    target: str,
    tracking_uri: str | None,
    rows: int,
    folder: Path,
    allow_unverified: bool = False,
) -> list[str]:
    """Resolve, download into `folder`, verify, load and predict; the lines to print."""
    resolved: Resolved = regctl.resolve(target, tracking_uri)
    model_type = resolved.params.get("model_type", "")
    predict = PREDICTORS.get(model_type)
    if predict is None:
        known = ", ".join(sorted(PREDICTORS))
        raise InferenceError(
            f"{text(resolved.target)}: model_type {text(model_type)!r} is not one this client"
            f" loads ({known})"
        )
    for module in LIBRARIES[model_type]:
        _load(module)
    _example_data()
    with warnings.catch_warnings():  # a version without a record: _verify decides
        warnings.simplefilter("ignore", UnverifiedContent)
        downloaded = resolved.download(folder)
    verified = _verify(resolved, downloaded, allow_unverified)
    prediction = predict(downloaded, resolved.model_file, rows)
    lines = [
        f"{text(resolved.target)}: {text(resolved.model)} version {resolved.version}"
        f" ({text(model_type)})",
        f"  run:        {text(resolved.run_name)} ({text(resolved.run_id)})",
        f"  downloaded: {text(str(downloaded))}",
        f"  verified:   {verified}",
        f"  model file: {text(resolved.model_file)}",
        f"  rows:       the first {rows} of the example data's test split"
        " (examples/make_examples.py)",
        *_table(prediction),
    ]
    if prediction.summary:
        lines.append(prediction.summary)
    return lines


def _table(prediction: Prediction) -> list[str]:
    """The timestamps left-aligned, the numbers right-aligned under their headers."""
    body = [
        [stamp, *(_format(v, c) for v, c in zip(values, prediction.columns, strict=True))]
        for stamp, values in prediction.rows
    ]
    table = [["timestamp", *prediction.columns], *body]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = []
    for first, *numbers in table:
        cells = [n.rjust(w) for n, w in zip(numbers, widths[1:], strict=True)]
        lines.append("  ".join([first.ljust(widths[0]), *cells]))
    return lines


def _rows(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a number from 1, not {value}")
    return number


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="infer.py",
        description="Resolve MODEL@ALIAS with regctl, download, verify, load and predict.",
    )
    parser.add_argument("target", metavar="MODEL@ALIAS", help="or MODEL/VERSION")
    parser.add_argument("--tracking-uri", help="else MLFLOW_TRACKING_URI, else ./mlflow.db")
    parser.add_argument("--rows", type=_rows, default=5, help="rows to predict (default 5)")
    parser.add_argument(
        "--out", type=Path, help="download here and keep it (absent or empty); else a temp dir"
    )
    parser.add_argument(
        "--allow-unverified",
        action="store_true",
        help="load a version that has no content record (registered before digests)",
    )
    args = parser.parse_args(argv)
    run = functools.partial(infer, args.target, args.tracking_uri, args.rows)
    try:
        if args.out is not None:
            lines = run(args.out, args.allow_unverified)
        else:
            with tempfile.TemporaryDirectory(prefix="regctl-infer-") as tmp:
                lines = run(Path(tmp) / "model", args.allow_unverified)
    except KeyboardInterrupt:
        return 130
    except (RegctlError, InferenceError, OSError) as err:
        print(f"infer.py: error: {text(str(err))}", file=sys.stderr)
        return 1
    except Exception as err:  # a model library's own failure: still one line
        print(f"infer.py: error: {type(err).__name__}: {text(str(err))}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
