"""Run directory -> RunRecord: params, metrics and files, per the metadata schema.

This is the reader behind `regctl sync` and behind policy checks of runs that are not
logged yet (SPEC section 3). It is pure and server-free: it reads files, never imports
mlflow and never touches the network.

It never follows a symbolic link and never opens anything but a regular file: the walk
opens each directory with `O_NOFOLLOW | O_DIRECTORY` relative to its parent's descriptor
and lists it with `os.scandir(fd)`, so a link swapped in mid-walk cannot lead outside the
run directory. That makes the module POSIX-only (Linux and macOS), which is where
training output and CI live; paths are handled with `posixpath` on purpose, because
`run_metadata.json` records paths of a POSIX training box, not of this machine.

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
- `run_metadata.json` and `diagnostics.json` are optional but, when present, must be
  regular files holding JSON objects, like the two required files.
- `diagnostics.json` is read for HMM runs only (its metric names are the schema's HMM
  metrics); `metrics.json` wins where both give a value.
- A metric given twice (flat and per split) with different values is an error; a metric
  name MLflow would reject is skipped with a warning, like a non-numeric value.
- Duplicate keys in a JSON file are an error: params are write-once and a duplicate key
  makes the value depend on the parser.
- Names that cannot travel as artifact paths are skipped and reported: newlines and other
  control characters, backslashes (a separator on Windows), bytes that are not UTF-8.
  `Skipped.rel_path` is escaped for display, so it may differ from the bytes on disk.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import posixpath
import re
import stat
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import BinaryIO, Final

from regctl.errors import InputError, Location, Problem

__all__ = [
    "MAX_PARAM_VALUE_LENGTH",
    "PATH_PARAMS",
    "RunFile",
    "RunRecord",
    "Skipped",
    "open_run_file",
    "read_run_dir",
    "relative_inside",
    "run_name_problem",
    "tree_digest",
]

PIPELINE_CONFIG: Final = "pipeline_config.json"
METRICS: Final = "metrics.json"
RUN_METADATA: Final = "run_metadata.json"
DIAGNOSTICS: Final = "diagnostics.json"

PATH_PARAMS: frozenset[str] = frozenset(
    {"run_dir", "model_path", "output_dir", "external_model_path"}
)
"""Params whose values depend on where the run directory sits on this machine."""

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

_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO that slipped past the lstat check must not wait for a writer.
_FILE_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

_HASH_CHUNK: Final = 1 << 20

_LGBM_NAME_RE: Final = re.compile(r"^run_(\d{8})_(\d{6})_lgbm_(.+)$")
_HMM_NAME_RE: Final = re.compile(r"^run_hmm_(\d{8})_(\d{6})$")


@dataclass(frozen=True, slots=True)
class RunFile:
    """A regular file in a run directory: POSIX path relative to the run dir, size, and the
    sha256 (hex) of its bytes as read (the content that sync uploads and regctl proves)."""

    rel_path: str
    size: int
    sha256: str


TREE_DIGEST_VERSION: Final = "regctl-tree-v1"


def tree_digest(files: Iterable[tuple[str, int, str]]) -> str:
    """The content digest of a file tree: `sha256:` + sha256 over one line per file,
    `<sha256> <size> <path>`, sorted by path, after a version line.

    Paths never hold a newline (the walk skips such names), so the lines are unambiguous.
    The same function digests a run directory, a run's artifacts and (issue 16) a version's
    files, so a digest computed on either side compares with the other.
    """
    h = hashlib.sha256(TREE_DIGEST_VERSION.encode() + b"\n")
    for path, size, sha in sorted(files):
        h.update(f"{sha} {size} {path}\n".encode("utf-8", "surrogateescape"))
    return "sha256:" + h.hexdigest()


@dataclass(frozen=True, slots=True)
class Skipped:
    """An entry that is not logged (link, FIFO, socket, device, unusable name) and why."""

    rel_path: str
    reason: str


@dataclass(frozen=True, slots=True)
class RunRecord:
    """Everything sync logs for one run directory, derived per the metadata schema.

    `params` and `metrics` are read-only mappings sorted by key; `files` holds regular
    files only, sorted by `rel_path`; `skipped` lists what was not followed, sorted;
    `warnings` are findings that do not stop a sync (e.g. a run name that breaks the
    schema's naming, a non-numeric metric).
    """

    run_name: str
    run_dir: str
    params: Mapping[str, str]
    metrics: Mapping[str, float]
    files: tuple[RunFile, ...]
    skipped: tuple[Skipped, ...]
    warnings: tuple[str, ...]

    @property
    def digest(self) -> str:
        """The content digest of every file (see `tree_digest`)."""
        return tree_digest((f.rel_path, f.size, f.sha256) for f in self.files)


class _Refused(Exception):
    """An entry that is not opened: the reason reads after its name."""


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


# --------------------------------------------------------------------------- public API


def read_run_dir(path: str | os.PathLike[str], *, display: str | None = None) -> RunRecord:
    """Read one run directory into a RunRecord, without following any symbolic link.

    `display` is the path as the user wrote it (e.g. a manifest's `run_dir`) and is used
    in error locations; it defaults to `path`. Raises InputError, carrying every problem
    found, when the directory is missing, not a directory or itself a symbolic link, or
    when `pipeline_config.json` or `metrics.json` is missing, not a regular file, not
    valid JSON (with line and column) or not a JSON object, or when a param is invalid.
    """
    given = os.fspath(path)
    shown = display if display is not None else given
    # abspath + normpath first: lstat("link/") would follow the link because of the slash.
    absolute = posixpath.normpath(posixpath.abspath(given))
    try:
        st = os.lstat(absolute)
    except FileNotFoundError:
        raise _error(Location(shown), "run directory does not exist") from None
    except OSError as exc:
        raise _error(Location(shown), f"cannot read run directory: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise _error(Location(shown), "run directory is a symbolic link (not followed)")
    if not stat.S_ISDIR(st.st_mode):
        raise _error(Location(shown), f"run directory is a {_kind(st.st_mode)}, not a directory")
    run_dir = posixpath.realpath(absolute)
    run_name = posixpath.basename(run_dir)
    name_problem = _name_problem(run_name)
    if name_problem is not None:
        raise _error(Location(shown), f"run directory {name_problem}")
    try:
        root_fd = os.open(run_dir, _DIR_FLAGS)
    except OSError as exc:
        raise _error(Location(shown), f"cannot read run directory: {exc.strerror}") from None
    try:
        return _Reader(root_fd, run_dir, run_name, shown).read()
    finally:
        os.close(root_fd)


def run_name_problem(run_name: str, params: Mapping[str, str]) -> str | None:
    """Say how `run_name` breaks the schema's naming for its `model_type`, or None.

    LGBM: `run_YYYYMMDD_HHMMSS_lgbm_{target}_{objective}` with target and objective from
    `params` (when either is missing only the fixed part is checked); HMM:
    `run_hmm_YYYYMMDD_HHMMSS`. The date and time must be real. Other model types have no
    naming rule in the schema, so they get None.
    """
    kind = params.get("model_type", "").lower()
    if kind == "lgbm":
        target, objective = params.get("target"), params.get("objective")
        suffix = f"{target}_{objective}" if target and objective else None
        shape = "run_YYYYMMDD_HHMMSS_lgbm_{target}_{objective}"
        expected = f" (expected suffix _lgbm_{suffix})" if suffix else ""
        match = _LGBM_NAME_RE.match(run_name)
        if match is None or (suffix is not None and match.group(3) != suffix):
            return f"run name {run_name!r} does not follow the LGBM naming {shape}{expected}"
    elif kind == "hmm":
        shape = "run_hmm_YYYYMMDD_HHMMSS"
        match = _HMM_NAME_RE.match(run_name)
        if match is None:
            return f"run name {run_name!r} does not follow the HMM naming {shape}"
    else:
        return None
    date, time = match.group(1), match.group(2)
    try:
        datetime.strptime(date + time, "%Y%m%d%H%M%S")
    except ValueError:
        return f"run name {run_name!r}: {date}_{time} is not a real date and time ({shape})"
    return None


def open_run_file(record: RunRecord, rel_path: str) -> BinaryIO:
    """Open a regular file of the run directory for reading, in binary mode.

    No component is followed if it is a symbolic link; each one is opened relative to
    its parent's descriptor. Refuses (InputError) paths that leave the run directory
    (absolute, `..`, empty components) and anything that is not a regular file. A FIFO
    is never waited on: the file is opened non-blocking and checked with fstat.
    """
    where = Location(f"{record.run_dir}/{rel_path}")  # not join: rel_path may be absolute
    parts = rel_path.split("/")
    if (
        not rel_path
        or "\x00" in rel_path
        or posixpath.isabs(rel_path)
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise _error(where, "not a relative path inside the run directory")
    try:
        with _open_dir_path(record.run_dir, parts[:-1]) as dir_fd:
            fd = _open_regular_at(dir_fd, parts[-1])
    except _Refused as exc:
        raise _error(where, str(exc)) from None
    except OSError as exc:
        raise _error(where, f"cannot open: {exc.strerror}") from None
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


# ----------------------------------------------------------------------------- reading


class _Reader:
    """One read of one run directory: collects problems and warnings as it goes."""

    def __init__(self, root_fd: int, run_dir: str, run_name: str, shown: str) -> None:
        self.root_fd = root_fd
        self.run_dir = run_dir
        self.run_name = run_name
        self.shown = shown
        self.problems: list[Problem] = []
        self.warnings: list[str] = []

    def where(self, name: str, line: int = 0, col: int = 0) -> Location:
        return Location(posixpath.join(self.shown, name), line, col)

    def problem(self, location: Location, field: str, message: str) -> None:
        self.problems.append(Problem(location, field, message))

    def read(self) -> RunRecord:
        files: list[RunFile] = []
        skipped: list[Skipped] = []
        self.walk(self.root_fd, "", files, skipped)
        config = self.read_json(PIPELINE_CONFIG, required=True)
        raw_metrics = self.read_json(METRICS, required=True)
        run_meta = self.read_json(RUN_METADATA, required=False)
        present = {f.rel_path for f in files}
        params: dict[str, str] = {}
        if config is not None:
            params = self.derive_params(config, run_meta or {}, present)
        metrics: dict[str, float] = {}
        if raw_metrics is not None:
            diagnostics = None
            if params.get("model_type", "").lower() == "hmm":
                diagnostics = self.read_json(DIAGNOSTICS, required=False)
            metrics = self.derive_metrics(raw_metrics, diagnostics or {})
        if self.problems:
            raise InputError(self.problems)
        if naming := run_name_problem(self.run_name, params):
            self.warnings.append(naming)
        return RunRecord(
            run_name=self.run_name,
            run_dir=self.run_dir,
            params=MappingProxyType(dict(sorted(params.items()))),
            metrics=MappingProxyType(dict(sorted(metrics.items()))),
            files=tuple(sorted(files, key=lambda f: f.rel_path)),
            skipped=tuple(sorted(skipped, key=lambda s: (s.rel_path, s.reason))),
            warnings=tuple(self.warnings),
        )

    def walk(self, dir_fd: int, prefix: str, files: list[RunFile], skipped: list[Skipped]) -> None:
        with os.scandir(dir_fd) as entries:
            ordered = sorted(entries, key=lambda e: e.name)
        for entry in ordered:
            rel = prefix + entry.name
            reason = _name_problem(entry.name)
            if reason is not None:
                skipped.append(Skipped(_printable(rel), reason))
                continue
            try:
                # follow_symlinks=False: fstatat(AT_SYMLINK_NOFOLLOW), the link itself.
                info = entry.stat(follow_symlinks=False)
            except OSError as exc:
                self.problem(self.where(rel), "", f"cannot read: {exc.strerror}")
                continue
            mode = info.st_mode
            if stat.S_ISREG(mode):
                hashed = self.hash_file(dir_fd, entry.name, rel)
                if hashed is not None:
                    files.append(RunFile(rel, *hashed))
            elif stat.S_ISDIR(mode):
                try:
                    sub_fd = os.open(entry.name, _DIR_FLAGS, dir_fd=dir_fd)
                except OSError as exc:
                    self.problem(self.where(rel), "", f"cannot read directory: {exc.strerror}")
                    continue
                try:
                    self.walk(sub_fd, rel + "/", files, skipped)
                finally:
                    os.close(sub_fd)
            elif stat.S_ISLNK(mode):
                skipped.append(Skipped(rel, "symbolic link (not followed)"))
            else:
                skipped.append(Skipped(rel, _kind(mode)))

    def hash_file(self, dir_fd: int, name: str, rel: str) -> tuple[int, str] | None:
        """(size, sha256) of the bytes read now, through a descriptor opened without
        following links; the size is that of the bytes hashed, not of an earlier stat."""
        try:
            fd = _open_regular_at(dir_fd, name)
        except _Refused as exc:
            self.problem(self.where(rel), "", f"{exc}; it changed while being read")
            return None
        except OSError as exc:
            self.problem(self.where(rel), "", f"cannot read: {exc.strerror}")
            return None
        h = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "rb", buffering=0) as handle:
            while chunk := handle.read(_HASH_CHUNK):
                h.update(chunk)
                size += len(chunk)
        return size, h.hexdigest()

    def read_json(self, name: str, *, required: bool) -> dict[str, object] | None:
        """Parse a top-level JSON object file, or record why not; None if absent/broken."""
        try:
            fd = _open_regular_at(self.root_fd, name)
        except FileNotFoundError:
            if required:
                self.problem(self.where(name), "", "missing (required in a run directory)")
            return None
        except _Refused as exc:
            self.problem(self.where(name), "", f"{exc} (must be a regular file)")
            return None
        except OSError as exc:
            self.problem(self.where(name), "", f"cannot read: {exc.strerror}")
            return None
        with os.fdopen(fd, "rb") as handle:
            data = handle.read()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
            self.problem(self.where(name, line, col), "", "not valid UTF-8")
            return None
        try:
            value: object = json.loads(text, object_pairs_hook=_no_duplicate_keys)
        except json.JSONDecodeError as exc:
            self.problem(self.where(name, exc.lineno, exc.colno), "", f"invalid JSON: {exc.msg}")
            return None
        except _DuplicateKey as exc:
            self.problem(self.where(name), exc.key, "duplicate key")
            return None
        except RecursionError:
            self.problem(self.where(name), "", "invalid JSON: nested too deeply")
            return None
        except ValueError:  # json's int() past 4,300 digits
            self.problem(self.where(name), "", "invalid JSON: a number with too many digits")
            return None
        if not isinstance(value, dict):
            self.problem(self.where(name), "", f"must be a JSON object, not {_json_type(value)}")
            return None
        return value

    # -------------------------------------------------------------------------- params

    def scalar(self, source: Mapping[str, object], key: str, field: str, file: str) -> str | None:
        """A config value as a param string (MLflow's `str()`); None when absent or null."""
        value = source.get(key)
        if value is None:
            return None
        text = _param_text(value)
        if text is None:
            self.problem(
                self.where(file), field, f"must be a string or a number, not {_json_type(value)}"
            )
        return text

    def derive_params(
        self, config: Mapping[str, object], run_meta: Mapping[str, object], present: set[str]
    ) -> dict[str, str]:
        cfg = PIPELINE_CONFIG
        params: dict[str, str] = {}

        def put(key: str, value: str | None) -> None:
            if value is not None:
                params[key] = value

        model_type = self.scalar(config, "model_type", "model_type", cfg)
        if config.get("model_type") is None:
            if "_lgbm_" in self.run_name:
                model_type = "lgbm"
            elif self.run_name.startswith("run_hmm_"):
                model_type = "hmm"
            else:
                self.problem(
                    self.where(cfg),
                    "model_type",
                    "missing, and the run name contains neither '_lgbm_' nor a 'run_hmm_' prefix",
                )
        put("model_type", model_type)
        kind = (model_type or "").lower()

        target = self.scalar(config, "target", "target", cfg)
        objective = self.scalar(config, "objective", "objective", cfg)
        if kind == "hmm":
            if target is not None and target != HMM_TARGET:
                self.warnings.append(
                    f"{cfg}: target {target!r} ignored: HMM runs use {HMM_TARGET!r}"
                )
            put("target", HMM_TARGET)
        else:
            if target is None and model_type is not None:
                self.warnings.append(f"{cfg}: no target, so the run has no 'target' param")
            put("target", target)
            put("objective", objective)

        primary = self.scalar(config, "primary_metric", "primary_metric", cfg)
        if primary is None:
            if kind == "hmm":
                criterion = self.scalar(config, "selection_criterion", "selection_criterion", cfg)
                primary = criterion or "bic"
            elif kind == "lgbm":
                # LightGBM's own default objective is regression, hence rmse when absent.
                primary = _OBJECTIVE_METRICS.get((objective or "").lower(), "rmse")
            elif model_type is not None:
                self.warnings.append(
                    f"{cfg}: no primary_metric, and model_type {model_type!r} has no default"
                )
        put("primary_metric", primary)

        dataset = self.scalar(config, "dataset", "dataset", cfg)
        if config.get("dataset") is None:
            # The schema lays runs out as models/<dataset>/<run>: the parent names the dataset.
            dataset = posixpath.basename(posixpath.dirname(self.run_dir))
            self.warnings.append(
                f"{cfg}: no dataset; dataset_slug taken from the parent directory {dataset!r}"
            )
        if dataset is not None:
            put("dataset_slug", dataset.replace(" ", "_").replace(",", "_"))

        put("prepared_data_dir", self.scalar(config, "prepared_data_dir", "prepared_data_dir", cfg))
        put("input_data", self.scalar(config, "input_data", "input_data", cfg))
        output_dir = self.scalar(config, "output_dir", "output_dir", cfg)
        put("output_dir", output_dir or posixpath.dirname(self.run_dir))

        store = config.get("feature_store")
        if isinstance(store, dict):
            for key in ("features_csv", "targets_csv"):
                put(f"feature_store.{key}", self.scalar(store, key, f"feature_store.{key}", cfg))
        elif store is not None:
            self.problem(
                self.where(cfg), "feature_store", f"must be an object, not {_json_type(store)}"
            )

        params.update(self.extra_feature_files(config.get("extra_feature_files")))

        put(
            "feature_list_id",
            self.scalar(config, "feature_list_id", "feature_list_id", cfg) or "NA",
        )
        tuned = _tuning_configured(config.get("hyperparameter_tuning_method"))
        tuned = tuned or _tuning_configured(config.get("state_grid"))
        params["hyperparam_tuning"] = "1" if tuned else "0"

        params["run_dir"] = self.run_dir
        model_path, external = self.model_path(kind, run_meta, present)
        put("model_path", model_path)
        put("external_model_path", external)

        for key in sorted(params):
            value = params[key]
            if len(value) > MAX_PARAM_VALUE_LENGTH:
                self.problem(
                    self.where(cfg),
                    key,
                    f"value is {len(value)} characters; MLflow keeps {MAX_PARAM_VALUE_LENGTH}"
                    " and would truncate it silently",
                )
            is_path = key.endswith(("_dir", "_path", "_csv", ".path")) or key == "input_data"
            if is_path and value and not posixpath.isabs(value):
                self.warnings.append(f"{cfg}: {key} {value!r} is not an absolute path")
        return params

    def extra_feature_files(self, value: object) -> dict[str, str]:
        cfg = PIPELINE_CONFIG
        if value is None:
            return {}
        if not isinstance(value, list):
            self.problem(
                self.where(cfg), "extra_feature_files", f"must be a list, not {_json_type(value)}"
            )
            return {}
        params: dict[str, str] = {}
        for index, item in enumerate(value):
            field = f"extra_feature_files.{index}"
            if isinstance(item, str):  # a bare path, with nothing to select
                params[f"{field}.path"] = item
                continue
            if not isinstance(item, dict):
                self.problem(
                    self.where(cfg), field, f"must be an object or a path, not {_json_type(item)}"
                )
                continue
            path = self.scalar(item, "path", f"{field}.path", cfg)
            if path is None:
                self.problem(self.where(cfg), f"{field}.path", "missing")
            else:
                params[f"{field}.path"] = path
            include = item.get("include")
            if isinstance(include, list):
                texts: list[str] = []
                for position, element in enumerate(include):
                    text = _param_text(element)
                    if text is None or "," in text:
                        what = "contains ','" if text is not None else f"is {_json_type(element)}"
                        self.problem(
                            self.where(cfg),
                            f"{field}.include.{position}",
                            f"{what}; include items are joined with ',' into one param",
                        )
                    else:
                        texts.append(text)
                params[f"{field}.include"] = ",".join(texts)
            elif include is not None:
                text = self.scalar(item, "include", f"{field}.include", cfg)
                if text is not None:
                    params[f"{field}.include"] = text
        return params

    def model_path(
        self, kind: str, run_meta: Mapping[str, object], present: set[str]
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
        recorded_dir = self.scalar(run_meta, "run_dir", "run_dir", meta)
        given = self.scalar(run_meta, "model_path", "model_path", meta)
        if given is None:
            default = _MODEL_FILES.get(kind)
            if default is None:
                return None, None
            if default in present:
                return posixpath.join(self.run_dir, default), None
            self.warnings.append(f"no {default} in the run directory, so no model_path param")
            return None, None
        if not posixpath.isabs(given):
            candidate = posixpath.normpath(posixpath.join(self.run_dir, given))
        else:
            candidate = posixpath.normpath(given)
            rel = None
            if recorded_dir is not None and posixpath.isabs(recorded_dir):
                rel = relative_inside(candidate, recorded_dir)
            elif recorded_dir is None:
                rel = _after_component(candidate, self.run_name)
                rel = rel if rel in present else None
            if rel is not None:
                candidate = posixpath.join(self.run_dir, rel)
        inside = relative_inside(candidate, self.run_dir)
        if inside is None:
            return candidate, candidate
        if inside not in present:
            self.warnings.append(
                f"{meta}: model_path {inside!r} is not a regular file in the run directory"
            )
        return candidate, None

    # ------------------------------------------------------------------------- metrics

    def derive_metrics(
        self, raw: Mapping[str, object], diagnostics: Mapping[str, object]
    ) -> dict[str, float]:
        metrics: dict[str, float] = {}

        def take(name: str, value: object, origin: str) -> None:
            number = _number(value)
            if number is None:
                why = (
                    "too large"
                    if isinstance(value, int) and not isinstance(value, bool)
                    else f"{_json_type(value)}, not a number"
                )
                self.warnings.append(f"{origin}: metric skipped ({why})")
                return
            if not _valid_metric_name(name):
                self.warnings.append(f"{origin}: metric skipped (MLflow rejects the name {name!r})")
                return
            if name in metrics and not _same(metrics[name], number):
                self.problem(
                    self.where(METRICS),
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


def _error(location: Location, message: str, field: str = "") -> InputError:
    return InputError([Problem(location, field, message)])


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "regular file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "unsupported file type"


def _open_regular_at(dir_fd: int, name: str) -> int:
    """Open `name` in `dir_fd` read-only if it is a regular file; else raise _Refused.

    The lstat first keeps FIFOs and devices from ever being opened; O_NOFOLLOW,
    O_NONBLOCK and the fstat after close the window in which the entry could be swapped.
    """
    mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    if stat.S_ISLNK(mode):
        raise _Refused("is a symbolic link (not followed)")
    if not stat.S_ISREG(mode):
        raise _Refused(f"is a {_kind(mode)}, not a regular file")
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # became a link after the lstat
            raise _Refused("is a symbolic link (not followed)") from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _Refused(f"is a {_kind(mode)}, not a regular file")
    return fd


@contextmanager
def _open_dir_path(root: str, parts: list[str]) -> Iterator[int]:
    """Yield a descriptor of root/parts..., refusing any component that is not a real dir."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        for part in parts:
            mode = os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode
            if not stat.S_ISDIR(mode):
                raise _Refused(f"component {part!r} is a {_kind(mode)}, not a directory")
            next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        yield fd
    finally:
        os.close(fd)


def _name_problem(name: str) -> str | None:
    """Why a file name cannot be an artifact path, or None."""
    if "\n" in name or "\r" in name:
        return "name contains a newline"
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in name):
        return "name contains a control character"
    if "\\" in name:
        return "name contains a backslash (a path separator on Windows)"
    try:
        name.encode("utf-8")  # os.fsdecode turned undecodable bytes into lone surrogates
    except UnicodeEncodeError:
        return "name is not valid UTF-8"
    return None


def _printable(text: str) -> str:
    """Escape control characters and undecodable bytes, for one-line reports."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(
        char.encode("unicode_escape").decode("ascii")
        if ord(char) < 0x20 or ord(char) == 0x7F
        else char
        for char in text
    )


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


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


def relative_inside(path: str, root: str) -> str | None:
    """`path` relative to `root` when strictly inside it (both normalised), else None.

    Shared with `regctl.engine.download`, which maps `model_path` into a version's artifacts."""
    path, root = posixpath.normpath(path), posixpath.normpath(root)
    prefix = root if root.endswith("/") else root + "/"
    if path.startswith(prefix) and len(path) > len(prefix):
        return path[len(prefix) :]
    return None


def _after_component(path: str, component: str) -> str | None:
    """The part of `path` after its last component equal to `component`, if any."""
    parts = path.split("/")
    for index in range(len(parts) - 2, -1, -1):
        if parts[index] == component:
            return "/".join(parts[index + 1 :])
    return None
