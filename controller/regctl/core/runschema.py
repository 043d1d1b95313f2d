"""A run's MLflow params and metrics, derived per the user's metadata schema.

SPEC section 3 and the metadata schema (select -> infer) say which params and metrics a
run directory yields. Pure: `regctl.adapters.rundir` walks the directory and parses its
JSON files; `derive_params` and `derive_metrics` take the parsed values and the set of
files present, never touch the file system, and add their problems and warnings to the
read's `Findings` (`regctl.core.runs`).

Decisions taken where SPEC section 3 is silent (each is repeated where it is made):

- Param values are strings made the way `mlflow.log_param` makes them, with `str()`:
  `0.05` -> `"0.05"`, `7` -> `"7"`, `true` -> `"True"`. A run logged by a training script
  with MLflow's own client and one logged by regctl then agree. `null` means absent.
  Objects and arrays are errors, except `extra_feature_files.{i}.include`.
- `extra_feature_files.{i}.include` given as a list is joined with `","`; an item that
  itself contains a comma is an error because the joined value would be ambiguous. An
  item of `extra_feature_files` may also be a plain string, taken as its `path`.
- `dataset_slug` without a `dataset` key comes from the name of the run directory's
  parent (the schema's layout is `models/<dataset>/<run>`), with a warning.
- `target` of an HMM run is always `unsupervised target` (a `target` key in its config is
  ignored with a warning); `objective` is never set for HMM runs.
- `primary_metric` by objective also knows LightGBM's alias `xentropy` (= `cross_entropy`).
  A `model_type` other than lgbm/hmm gets `primary_metric` only from the config.
- `hyperparam_tuning` is `0` when the key is absent, `null`, `false`, empty, or the
  string `none` (any case): each of those means "no tuning" in a training config.
- `model_type` missing from the config and not derivable from the run name is an error:
  the other derivations depend on it. It is kept as written; rules compare it ignoring case.
- `model_path` from `run_metadata.json` is mapped into the current run directory when it
  lies inside the recorded `run_dir`; with no `run_dir` recorded, when one of its
  components is the run name and the rest names a file present now. A relative
  `model_path` is relative to the run directory.
- `diagnostics.json` is read for HMM runs only (its metric names are the schema's HMM
  metrics); `metrics.json` wins where both give a value.
- A metric given twice (flat and per split) with different values is an error; a metric
  name MLflow would reject is skipped with a warning, like a non-numeric value.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Mapping
from typing import Final

from regctl.core.runs import (
    DIAGNOSTICS,
    METRICS,
    PIPELINE_CONFIG,
    RUN_METADATA,
    Findings,
    json_type,
    relative_inside,
)

MAX_PARAM_VALUE_LENGTH: Final = 6000
"""MLflow truncates longer param values silently, so a longer one is an input error."""

_MAX_METRIC_NAME_LENGTH: Final = 250
_METRIC_NAME_RE: Final = re.compile(r"^[/\w.\- :]*$")  # MLflow's rule on POSIX servers

HMM_TARGET: Final = "unsupervised target"
HMM_DIAGNOSTIC_METRICS: Final = (
    "n_states",
    "bic_final",
    "aic_final",
    "icl_final",
    "entropy_final",
    "train_final_ll",
    "test_ll",
    "rows",
    "n_features",
)
_MODEL_FILES: Final = {"lgbm": "model.txt", "hmm": "model.joblib"}
_OBJECTIVE_METRICS: Final = {
    "binary": "auc",
    "cross_entropy": "auc",
    "xentropy": "auc",  # LightGBM's alias of cross_entropy
    "quantile": "pinball_loss",
}
_NO_TUNING: Final = frozenset({"", "none"})


# -------------------------------------------------------------------------- params


def _scalar(
    found: Findings, source: Mapping[str, object], key: str, field: str, file: str
) -> str | None:
    """A config value as a param string (MLflow's `str()`); None when absent or null."""
    value = source.get(key)
    if value is None:
        return None
    text = _param_text(value)
    if text is None:
        found.problem(
            found.where(file), field, f"must be a string or a number, not {json_type(value)}"
        )
    return text


def derive_params(
    found: Findings,
    config: Mapping[str, object],
    run_meta: Mapping[str, object],
    present: set[str],
) -> dict[str, str]:
    """The run's params, from its parsed `pipeline_config.json` and `run_metadata.json`
    (empty when absent) and `present`, the relative paths of its regular files."""
    cfg = PIPELINE_CONFIG
    params: dict[str, str] = {}

    def put(key: str, value: str | None) -> None:
        if value is not None:
            params[key] = value

    model_type = _model_type(found, config)
    put("model_type", model_type)
    kind = (model_type or "").lower()

    target, objective = _target_and_objective(found, config, kind, model_type)
    put("target", target)
    put("objective", objective)
    put("primary_metric", _primary_metric(found, config, kind, model_type, objective))

    dataset = _dataset(found, config)
    if dataset is not None:
        put("dataset_slug", dataset.replace(" ", "_").replace(",", "_"))

    put("prepared_data_dir", _scalar(found, config, "prepared_data_dir", "prepared_data_dir", cfg))
    put("input_data", _scalar(found, config, "input_data", "input_data", cfg))
    output_dir = _scalar(found, config, "output_dir", "output_dir", cfg)
    put("output_dir", output_dir or posixpath.dirname(found.run_dir))

    params.update(_feature_store(found, config.get("feature_store")))
    params.update(_extra_feature_files(found, config.get("extra_feature_files")))

    put(
        "feature_list_id",
        _scalar(found, config, "feature_list_id", "feature_list_id", cfg) or "NA",
    )
    tuned = _tuning_configured(config.get("hyperparameter_tuning_method"))
    tuned = tuned or _tuning_configured(config.get("state_grid"))
    params["hyperparam_tuning"] = "1" if tuned else "0"

    params["run_dir"] = found.run_dir
    model_path, external = _model_path(found, kind, run_meta, present)
    put("model_path", model_path)
    put("external_model_path", external)

    _check_values(found, params)
    return params


def _model_type(found: Findings, config: Mapping[str, object]) -> str | None:
    """`model_type` as configured, else from the run name; missing from both is an error."""
    model_type = _scalar(found, config, "model_type", "model_type", PIPELINE_CONFIG)
    if config.get("model_type") is None:
        if "_lgbm_" in found.run_name:
            model_type = "lgbm"
        elif found.run_name.startswith("run_hmm_"):
            model_type = "hmm"
        else:
            found.problem(
                found.where(PIPELINE_CONFIG),
                "model_type",
                "missing, and the run name contains neither '_lgbm_' nor a 'run_hmm_' prefix",
            )
    return model_type


def _target_and_objective(
    found: Findings, config: Mapping[str, object], kind: str, model_type: str | None
) -> tuple[str | None, str | None]:
    """(target, objective): an HMM run's target is always HMM_TARGET, with no objective."""
    cfg = PIPELINE_CONFIG
    target = _scalar(found, config, "target", "target", cfg)
    objective = _scalar(found, config, "objective", "objective", cfg)
    if kind == "hmm":
        if target is not None and target != HMM_TARGET:
            found.warnings.append(f"{cfg}: target {target!r} ignored: HMM runs use {HMM_TARGET!r}")
        return HMM_TARGET, None
    if target is None and model_type is not None:
        found.warnings.append(f"{cfg}: no target, so the run has no 'target' param")
    return target, objective


def _primary_metric(
    found: Findings,
    config: Mapping[str, object],
    kind: str,
    model_type: str | None,
    objective: str | None,
) -> str | None:
    cfg = PIPELINE_CONFIG
    primary = _scalar(found, config, "primary_metric", "primary_metric", cfg)
    if primary is None:
        if kind == "hmm":
            criterion = _scalar(found, config, "selection_criterion", "selection_criterion", cfg)
            primary = criterion or "bic"
        elif kind == "lgbm":
            # LightGBM's own default objective is regression, hence rmse when absent.
            primary = _OBJECTIVE_METRICS.get((objective or "").lower(), "rmse")
        elif model_type is not None:
            found.warnings.append(
                f"{cfg}: no primary_metric, and model_type {model_type!r} has no default"
            )
    return primary


def _dataset(found: Findings, config: Mapping[str, object]) -> str | None:
    cfg = PIPELINE_CONFIG
    dataset = _scalar(found, config, "dataset", "dataset", cfg)
    if config.get("dataset") is None:
        # The schema lays runs out as models/<dataset>/<run>: the parent names the dataset.
        dataset = posixpath.basename(posixpath.dirname(found.run_dir))
        found.warnings.append(
            f"{cfg}: no dataset; dataset_slug taken from the parent directory {dataset!r}"
        )
    return dataset


def _feature_store(found: Findings, store: object) -> dict[str, str]:
    cfg = PIPELINE_CONFIG
    params: dict[str, str] = {}
    if isinstance(store, dict):
        for key in ("features_csv", "targets_csv"):
            value = _scalar(found, store, key, f"feature_store.{key}", cfg)
            if value is not None:
                params[f"feature_store.{key}"] = value
    elif store is not None:
        found.problem(
            found.where(cfg), "feature_store", f"must be an object, not {json_type(store)}"
        )
    return params


def _check_values(found: Findings, params: Mapping[str, str]) -> None:
    """Refuse values MLflow would truncate; warn of path params that are not absolute."""
    cfg = PIPELINE_CONFIG
    for key in sorted(params):
        value = params[key]
        if len(value) > MAX_PARAM_VALUE_LENGTH:
            found.problem(
                found.where(cfg),
                key,
                f"value is {len(value)} characters; MLflow keeps {MAX_PARAM_VALUE_LENGTH}"
                " and would truncate it silently",
            )
        is_path = key.endswith(("_dir", "_path", "_csv", ".path")) or key == "input_data"
        if is_path and value and not posixpath.isabs(value):
            found.warnings.append(f"{cfg}: {key} {value!r} is not an absolute path")


def _extra_feature_files(found: Findings, value: object) -> dict[str, str]:
    cfg = PIPELINE_CONFIG
    if value is None:
        return {}
    if not isinstance(value, list):
        found.problem(
            found.where(cfg), "extra_feature_files", f"must be a list, not {json_type(value)}"
        )
        return {}
    params: dict[str, str] = {}
    for index, item in enumerate(value):
        field = f"extra_feature_files.{index}"
        if isinstance(item, str):  # a bare path, with nothing to select
            params[f"{field}.path"] = item
            continue
        if not isinstance(item, dict):
            found.problem(
                found.where(cfg), field, f"must be an object or a path, not {json_type(item)}"
            )
            continue
        path = _scalar(found, item, "path", f"{field}.path", cfg)
        if path is None:
            found.problem(found.where(cfg), f"{field}.path", "missing")
        else:
            params[f"{field}.path"] = path
        include = _include(found, item, field)
        if include is not None:
            params[f"{field}.include"] = include
    return params


def _include(found: Findings, item: Mapping[str, object], field: str) -> str | None:
    """An extra feature file's `include`: a list is joined with ',' (items holding ',' are
    errors, the joined value would be ambiguous); a scalar is taken as it is."""
    cfg = PIPELINE_CONFIG
    include = item.get("include")
    if not isinstance(include, list):
        return _scalar(found, item, "include", f"{field}.include", cfg)
    texts: list[str] = []
    for position, element in enumerate(include):
        text = _param_text(element)
        if text is None or "," in text:
            what = "contains ','" if text is not None else f"is {json_type(element)}"
            found.problem(
                found.where(cfg),
                f"{field}.include.{position}",
                f"{what}; include items are joined with ',' into one param",
            )
        else:
            texts.append(text)
    return ",".join(texts)


def _model_path(
    found: Findings, kind: str, run_meta: Mapping[str, object], present: set[str]
) -> tuple[str | None, str | None]:
    """(model_path, external_model_path) per SPEC section 3.

    run_metadata.json's `model_path` wins. Written at training time, it may point into
    where the run directory was then: a path inside the recorded `run_dir` is mapped
    into the current directory. Without a recorded `run_dir`, a path with a component
    equal to the run name is mapped too, but only if the mapped file exists here.
    A relative `model_path` is relative to the run directory. Without run metadata the
    schema's model file (model.txt / model.joblib) is looked up at the top level.
    """
    meta = RUN_METADATA
    recorded_dir = _scalar(found, run_meta, "run_dir", "run_dir", meta)
    given = _scalar(found, run_meta, "model_path", "model_path", meta)
    if given is None:
        default = _MODEL_FILES.get(kind)
        if default is None:
            return None, None
        if default in present:
            return posixpath.join(found.run_dir, default), None
        found.warnings.append(f"no {default} in the run directory, so no model_path param")
        return None, None
    if not posixpath.isabs(given):
        candidate = posixpath.normpath(posixpath.join(found.run_dir, given))
    else:
        candidate = posixpath.normpath(given)
        rel = None
        if recorded_dir is not None and posixpath.isabs(recorded_dir):
            rel = relative_inside(candidate, recorded_dir)
        elif recorded_dir is None:
            rel = _after_component(candidate, found.run_name)
            rel = rel if rel in present else None
        if rel is not None:
            candidate = posixpath.join(found.run_dir, rel)
    inside = relative_inside(candidate, found.run_dir)
    if inside is None:
        return candidate, candidate
    if inside not in present:
        found.warnings.append(
            f"{meta}: model_path {inside!r} is not a regular file in the run directory"
        )
    return candidate, None


# ------------------------------------------------------------------------- metrics


def reads_diagnostics(params: Mapping[str, str]) -> bool:
    """Whether `diagnostics.json` counts: for HMM runs only (it holds the HMM metrics)."""
    return params.get("model_type", "").lower() == "hmm"


def derive_metrics(
    found: Findings, raw: Mapping[str, object], diagnostics: Mapping[str, object]
) -> dict[str, float]:
    """The run's metrics, from its parsed `metrics.json` (flat, or per split:
    `{"test": {"rmse": 0.04}}` -> `rmse_test`) and `diagnostics.json` (empty when absent
    or not read), whose HMM metrics count only where `metrics.json` gives none."""
    metrics: dict[str, float] = {}

    def take(name: str, value: object, origin: str) -> None:
        number = _number(value)
        if number is None:
            why = (
                "too large"
                if isinstance(value, int) and not isinstance(value, bool)
                else f"{json_type(value)}, not a number"
            )
            found.warnings.append(f"{origin}: metric skipped ({why})")
            return
        if not _valid_metric_name(name):
            found.warnings.append(f"{origin}: metric skipped (MLflow rejects the name {name!r})")
            return
        if name in metrics and not _same(metrics[name], number):
            found.problem(
                found.where(METRICS),
                name,
                f"given twice with different values ({metrics[name]!r} and {number!r})",
            )
            return
        metrics[name] = number

    for key, value in raw.items():
        if isinstance(value, dict):  # per split: {"test": {"rmse": 0.04}} -> rmse_test
            for metric, inner in value.items():
                take(f"{metric}_{key}", inner, f"{METRICS}: {key}.{metric}")
        else:
            take(key, value, f"{METRICS}: {key}")
    for name in HMM_DIAGNOSTIC_METRICS:
        if name in diagnostics and name not in metrics:
            take(name, diagnostics[name], f"{DIAGNOSTICS}: {name}")
    return metrics


# ------------------------------------------------------------------------------ helpers


def _param_text(value: object) -> str | None:
    """A JSON scalar as MLflow's log_param would store it (`str()`); None otherwise."""
    if isinstance(value, str | int | float):  # bool is an int: True -> "True"
        return str(value)
    return None


def _tuning_configured(value: object) -> bool:
    if value is None or value is False:
        return False
    if isinstance(value, str) and value.strip().lower() in _NO_TUNING:
        return False
    return not (isinstance(value, list | dict) and not value)


def _number(value: object) -> float | None:
    """A JSON number as float (NaN and infinities kept); None for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:  # an integer beyond float range
        return None


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _valid_metric_name(name: str) -> bool:
    # MLflow's checks: allowed characters, length, and a name that is its own normpath.
    normalized = posixpath.normpath(name) if name else "."
    return (
        bool(_METRIC_NAME_RE.match(name))
        and len(name) <= _MAX_METRIC_NAME_LENGTH
        and normalized == name
        and not name.startswith(("..", "/"))
    )


def _after_component(path: str, component: str) -> str | None:
    """The part of `path` after its last component equal to `component`, if any."""
    parts = path.split("/")
    for index in range(len(parts) - 2, -1, -1):
        if parts[index] == component:
            return "/".join(parts[index + 1 :])
    return None
