"""The MLflow adapter: the only module that imports mlflow.

It talks to MLflow's store layer (`RestStore` for http(s), `SqlAlchemyStore` for the
embedded `sqlite:///` default), which maps one method to one request, so regctl avoids
the extra reads that `MlflowClient` makes before many writes. MLflow's errors and
transport failures are translated here, once, into `regctl.errors`, with credentials
scrubbed from every message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import logging
import os
import re
import time
import urllib.parse
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from regctl.core.model import ObservedModel, ObservedVersion, RunRef, frozen_map
from regctl.errors import AlreadyExists, NotFound, RegistryError, Unreachable
from regctl.ports import ArtifactInfo, RunData, chunks

T = TypeVar("T")

FAIL_FAST_DEFAULTS = {
    # MLflow's own defaults retry 7 times with a factor-2 backoff and a 120 s timeout, so an
    # unreachable server takes minutes to fail. regctl keeps retrying transient errors but
    # gives up within seconds; a user who sets these variables gets exactly what they set.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    # a tool acting for its user does not report usage to third parties by default
    "MLFLOW_DISABLE_TELEMETRY": "true",
}

MODEL_PAGE = 1000
VERSION_PAGE = 200_000
RUN_PAGE = 50_000
EXPERIMENT_PAGE = 50_000
EXPERIMENTS_PER_SEARCH = 100
NAMES_PER_FILTER = 50
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000


def scrub(text: str) -> str:
    """Remove credentials (user:password@ in URLs, bearer tokens) from a message."""
    text = re.sub(r"(?<=://)[^/@\s]+@", "", text)
    text = re.sub(
        r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(bearer|basic)\s+[^\s'\"]+", r"\1***", text
    )
    for var in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD"):
        secret = os.environ.get(var)
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def public_uri(uri: str) -> str:
    """A tracking URI fit to show: no credentials, no query string."""
    if "://" in uri and not urllib.parse.urlsplit(uri).netloc:
        return uri.split("?", 1)[0]  # sqlite:////abs/path: no host, nothing to hide
    parsed = urllib.parse.urlsplit(uri)
    netloc = parsed.netloc.rsplit("@", 1)[-1]
    return urllib.parse.urlunsplit((parsed.scheme, netloc, parsed.path, "", ""))


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class MlflowRegistry:
    """Registry, tracking and artifact access through MLflow's stores."""

    def __init__(
        self, tracking_uri: str, registry_uri: str | None = None, artifact_root: str | None = None
    ) -> None:
        for key, value in FAIL_FAST_DEFAULTS.items():
            os.environ.setdefault(key, value)
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri or tracking_uri
        self.remote = self.registry_uri.startswith(("http://", "https://"))
        """Requests go over HTTP: independent reads may be sent concurrently."""
        self._shown = public_uri(tracking_uri)
        self._artifact_root = artifact_root
        self._run_cache: dict[str, RunData] = {}
        self._tracking: Any = None
        self._registry: Any = None
        with self._translate("connect"):
            from mlflow.tracking._model_registry.utils import _get_store as registry_store
            from mlflow.tracking._tracking_service.utils import _get_store as tracking_store

            # MLflow logs database migrations and the like at INFO on stderr (configured at
            # import); regctl's output is its own. Warnings still show.
            for name in ("mlflow", "alembic"):
                logging.getLogger(name).setLevel(logging.WARNING)
            self._tracking = tracking_store(tracking_uri, artifact_root)
            self._registry = registry_store(self.registry_uri, tracking_uri)

    # -- plumbing -------------------------------------------------------------------

    def describe(self) -> str:
        return self._shown

    def close(self) -> None:
        for store in (self._tracking, self._registry):
            engine = getattr(store, "engine", None)
            if engine is not None:
                engine.dispose()

    @contextlib.contextmanager
    def _translate(self, request: str) -> Iterator[None]:
        try:
            yield
        except (RegistryError, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            raise _translate(exc, request, self._shown) from None

    def _call(self, request: str, fn: Callable[[], T]) -> T:
        with self._translate(request):
            return fn()

    def _pages(self, request: str, fetch: Callable[[str | None], Any]) -> Iterator[Any]:
        token: str | None = None
        seen: set[str] = set()
        while True:
            page = self._call(request, lambda t=token: fetch(t))  # type: ignore[misc]
            yield from page
            token = getattr(page, "token", None)
            if not token:
                return
            if token in seen:
                raise RegistryError(
                    f"{request}: the server returned page token {token[:20]!r} twice; "
                    "stopping instead of looping",
                    request=request,
                )
            seen.add(token)

    # -- reading --------------------------------------------------------------------

    def _name_filters(self, names: Collection[str] | None) -> list[str | None]:
        if names is None or any("'" in n for n in names):
            return [None]
        ordered = sorted(set(names))
        if not ordered:
            return []
        return [
            "name IN (" + ", ".join(_quote(n) for n in part) + ")"
            for part in chunks(ordered, NAMES_PER_FILTER)
        ]

    def search_models(self, names: Collection[str] | None) -> dict[str, ObservedModel]:
        filters = self._name_filters(names)

        # each page is turned into regctl's small values as it arrives, so MLflow's
        # entities of a page are freed before the next one (peak memory at 10,000 models)
        def read_models() -> dict[str, ObservedModel]:
            raw: dict[str, ObservedModel] = {}
            for flt in filters:
                for rm in self._pages(
                    "search registered models",
                    lambda tok, f=flt: self._registry.search_registered_models(  # type: ignore[misc]
                        filter_string=f, max_results=MODEL_PAGE, page_token=tok
                    ),
                ):
                    raw[rm.name] = ObservedModel(
                        name=rm.name,
                        description=rm.description or "",
                        tags=frozen_map({k: str(v) for k, v in (rm.tags or {}).items()}),
                        aliases={str(a): int(v) for a, v in sorted((rm.aliases or {}).items())},
                        versions={},
                    )
            return raw

        def read_versions() -> dict[str, list[ObservedVersion]]:
            raw: dict[str, list[ObservedVersion]] = {}
            for flt in filters:
                for mv in self._pages(
                    "search model versions",
                    lambda tok, f=flt: self._registry.search_model_versions(  # type: ignore[misc]
                        filter_string=f, max_results=VERSION_PAGE, page_token=tok
                    ),
                ):
                    raw.setdefault(mv.name, []).append(_version(mv))
            return raw

        # Models and versions are independent searches: against a server they are sent
        # together (the slower one sets the time, not their sum).
        if self.remote:
            with ThreadPoolExecutor(max_workers=1) as pool:
                pending = pool.submit(read_versions)
                raw_models = read_models()
                raw_versions = pending.result()
        else:
            raw_models, raw_versions = read_models(), read_versions()
        wanted = None if names is None else set(names)
        out: dict[str, ObservedModel] = {}
        for name, om in raw_models.items():
            if wanted is not None and name not in wanted:
                continue
            versions = {ov.version: ov for ov in raw_versions.get(name, [])}
            out[name] = dataclasses.replace(om, versions=dict(sorted(versions.items())))
        return dict(sorted(out.items()))

    def model_tags(self, name: str) -> Mapping[str, str] | None:
        try:
            rm = self._call(
                "get registered model", lambda: self._registry.get_registered_model(name)
            )
        except NotFound:
            return None
        return frozen_map({k: str(v) for k, v in (rm.tags or {}).items()})

    def search_models_like(self, pattern: str) -> dict[str, ObservedModel]:
        flt = f"name LIKE {_quote(pattern)}"
        out: dict[str, ObservedModel] = {}
        for rm in self._pages(
            "search registered models",
            lambda tok: self._registry.search_registered_models(
                filter_string=flt, max_results=MODEL_PAGE, page_token=tok
            ),
        ):
            out[rm.name] = ObservedModel(
                name=rm.name,
                description=rm.description or "",
                tags=frozen_map({k: str(v) for k, v in (rm.tags or {}).items()}),
                aliases={},
                versions={},
            )
        return dict(sorted(out.items()))

    def versions_of_run(self, model: str, run_id: str) -> list[ObservedVersion]:
        flt = f"name = {_quote(model)} AND run_id = {_quote(run_id)}"
        found = self._pages(
            "find versions by run",
            lambda tok: self._registry.search_model_versions(
                filter_string=flt, max_results=VERSION_PAGE, page_token=tok
            ),
        )
        return sorted((_version(mv) for mv in found), key=lambda v: v.version)

    def experiments(self, names: Collection[str]) -> dict[str, str]:
        from mlflow.entities import ViewType

        wanted = set(names)
        if not wanted:
            return {}
        out = {}
        for exp in self._pages(
            "search experiments",
            lambda tok: self._tracking.search_experiments(
                view_type=ViewType.ACTIVE_ONLY, max_results=EXPERIMENT_PAGE, page_token=tok
            ),
        ):
            if exp.name in wanted:
                out[exp.name] = str(exp.experiment_id)
        return out

    def runs_in(self, experiment_ids: Collection[str], names: Collection[str]) -> list[RunRef]:
        from mlflow.entities import ViewType

        wanted = set(names)
        out = []
        # one paginated search over up to EXPERIMENTS_PER_SEARCH experiments, not one each
        for exp_ids in chunks(sorted(set(experiment_ids)), EXPERIMENTS_PER_SEARCH):
            for run in self._pages(
                "search runs",
                lambda tok, e=exp_ids: self._tracking.search_runs(  # type: ignore[misc]
                    list(e), None, ViewType.ACTIVE_ONLY, RUN_PAGE, None, tok
                ),
            ):
                if run.info.run_name in wanted:
                    data = _run_data(run)
                    self._run_cache[data.ref.run_id] = data
                    out.append(data.ref)
        return sorted(out, key=lambda r: (r.experiment_id, r.name, r.run_id))

    def runs_by_id(self, run_ids: Collection[str]) -> dict[str, RunRef]:
        return {rid: d.ref for rid, d in self.run_data(run_ids).items()}

    def run_data(self, run_ids: Collection[str]) -> dict[str, RunData]:
        missing = sorted(set(run_ids) - set(self._run_cache))
        if len(missing) > 1:
            # batched: one experiment search, one run search per 100 ids (fills the cache)
            self.run_origins(missing)
            return {
                rid: self._run_cache[rid] for rid in sorted(set(run_ids)) if rid in self._run_cache
            }
        out = {}
        for rid in sorted(set(run_ids)):
            if rid not in self._run_cache:
                try:
                    run = self._call("get run", lambda r=rid: self._tracking.get_run(r))  # type: ignore[misc]
                except NotFound:
                    continue
                if getattr(run.info, "lifecycle_stage", "active") != "active":
                    continue
                self._run_cache[rid] = _run_data(run)
            out[rid] = self._run_cache[rid]
        return out

    # -- registry writes ------------------------------------------------------------

    def create_model(self, name: str, description: str | None, tags: Mapping[str, str]) -> None:
        from mlflow.entities.model_registry import RegisteredModelTag

        self._call(
            "create registered model",
            lambda: self._registry.create_registered_model(
                name,
                tags=[RegisteredModelTag(k, v) for k, v in tags.items()],
                description=description,
            ),
        )

    def update_model_description(self, name: str, description: str) -> None:
        self._call(
            "update registered model",
            lambda: self._registry.update_registered_model(name, description),
        )

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        from mlflow.entities.model_registry import RegisteredModelTag

        self._call(
            "set registered model tag",
            lambda: self._registry.set_registered_model_tag(name, RegisteredModelTag(key, value)),
        )

    def delete_model_tag(self, name: str, key: str) -> None:
        self._call(
            "delete registered model tag",
            lambda: self._registry.delete_registered_model_tag(name, key),
        )

    def create_version(
        self, name: str, source: str, run_id: str, description: str | None, tags: Mapping[str, str]
    ) -> int:
        """Register a version with exactly one request: never retried here.

        MLflow's client retries POSTs on 5xx and connection errors, so a create that
        committed but lost its response would be repeated and leave two versions. Apply
        looks the version up by run after any failure instead (find-by-run).
        """
        from mlflow.entities.model_registry import ModelVersionTag

        get_creds = getattr(self._registry, "get_host_creds", None)
        if get_creds is None:  # a local store: no transport, nothing to retry
            mv = self._call(
                "create model version",
                lambda: self._registry.create_model_version(
                    name,
                    source,
                    run_id=run_id,
                    tags=[ModelVersionTag(k, v) for k, v in tags.items()],
                    description=description,
                ),
            )
            return int(mv.version)
        from mlflow.utils.rest_utils import http_request, verify_rest_response

        endpoint = "/api/2.0/mlflow/model-versions/create"
        body: dict[str, Any] = {
            "name": name,
            "source": source,
            "run_id": run_id,
            "tags": [{"key": k, "value": v} for k, v in tags.items()],
        }
        if description is not None:
            body["description"] = description

        def once() -> int:
            resp = http_request(get_creds(), endpoint, "POST", max_retries=0, json=body)
            resp = verify_rest_response(resp, endpoint)
            return int(resp.json()["model_version"]["version"])

        return self._call("create model version", once)

    def update_version_description(self, name: str, version: int, description: str) -> None:
        self._call(
            "update model version",
            lambda: self._registry.update_model_version(name, str(version), description),
        )

    def set_version_tag(self, name: str, version: int, key: str, value: str) -> None:
        from mlflow.entities.model_registry import ModelVersionTag

        self._call(
            "set model version tag",
            lambda: self._registry.set_model_version_tag(
                name, str(version), ModelVersionTag(key, value)
            ),
        )

    def set_alias(self, name: str, alias: str, version: int) -> None:
        self._call(
            "set alias",
            lambda: self._registry.set_registered_model_alias(name, alias, str(version)),
        )

    def delete_alias(self, name: str, alias: str) -> None:
        self._call(
            "delete alias", lambda: self._registry.delete_registered_model_alias(name, alias)
        )

    def delete_version(self, name: str, version: int) -> None:
        self._call(
            "delete model version", lambda: self._registry.delete_model_version(name, str(version))
        )

    def delete_model(self, name: str) -> None:
        self._call("delete registered model", lambda: self._registry.delete_registered_model(name))

    # -- tracking writes (sync) -----------------------------------------------------

    def create_experiment(self, name: str) -> str:
        return str(self._call("create experiment", lambda: self._tracking.create_experiment(name)))

    def create_run(self, experiment_id: str, run_name: str, start_time_ms: int) -> RunRef:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "regctl"
        run = self._call(
            "create run",
            lambda: self._tracking.create_run(
                experiment_id=experiment_id,
                user_id=user,
                start_time=start_time_ms,
                tags=[],
                run_name=run_name,
            ),
        )
        return _run_ref(run)

    def log_batch(
        self, run_id: str, params: Mapping[str, str], metrics: Mapping[str, float], step_ms: int
    ) -> None:
        from mlflow.entities import Metric, Param

        p_items = sorted(params.items())
        m_items = sorted(metrics.items())
        while p_items or m_items:
            p_part, p_items = p_items[:MAX_PARAMS_PER_BATCH], p_items[MAX_PARAMS_PER_BATCH:]
            room = MAX_METRICS_PER_BATCH - len(p_part)
            m_part, m_items = m_items[:room], m_items[room:]
            self._call(
                "log batch",
                lambda pp=p_part, mm=m_part: self._tracking.log_batch(  # type: ignore[misc]
                    run_id,
                    metrics=[Metric(k, float(v), step_ms, 0) for k, v in mm],
                    params=[Param(k, v) for k, v in pp],
                    tags=[],
                ),
            )

    def _artifact_repo(self, run: RunRef) -> Any:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        uri = run.artifact_uri
        if not uri:
            uri = self._call(
                "get run", lambda: self._tracking.get_run(run.run_id)
            ).info.artifact_uri
        return get_artifact_repository(uri, tracking_uri=self.tracking_uri)

    def list_artifacts(self, run: RunRef) -> list[ArtifactInfo]:
        repo = self._artifact_repo(run)
        out: list[ArtifactInfo] = []
        pending: list[str | None] = [None]
        while pending:
            path = pending.pop()
            for info in self._call("list artifacts", lambda p=path: repo.list_artifacts(p)):  # type: ignore[misc]
                if info.is_dir:
                    pending.append(info.path)
                else:
                    out.append(ArtifactInfo(info.path, int(info.file_size or 0)))
        return sorted(out, key=lambda a: a.path)

    def upload_artifact(self, run: RunRef, local_path: str, rel_path: str) -> None:
        repo = self._artifact_repo(run)
        folder = os.path.dirname(rel_path) or None
        if Path(local_path).name != os.path.basename(rel_path):
            raise RegistryError(f"upload: {local_path} does not end in {rel_path}")
        self._call("upload artifact", lambda: repo.log_artifact(local_path, folder))

    def finish_run(self, run_id: str, status: str, end_time_ms: int) -> None:
        from mlflow.entities import RunStatus

        self._call(
            "update run",
            lambda: self._tracking.update_run_info(
                run_id, RunStatus.from_string(status), end_time_ms, None
            ),
        )

    # -- inference (resolve) --------------------------------------------------------

    def get_model(self, name: str) -> ObservedModel:
        """One registered model with its description, tags and aliases: one request.

        `versions` is left empty (MLflow returns only the latest version per stage here);
        ask `get_version` for the one that matters.
        """
        rm = self._call("get registered model", lambda: self._registry.get_registered_model(name))
        return ObservedModel(
            name=str(rm.name),
            description=rm.description or "",
            tags=frozen_map({k: str(v) for k, v in (rm.tags or {}).items()}),
            aliases={str(a): int(v) for a, v in sorted((rm.aliases or {}).items())},
            versions={},
        )

    def get_version(self, name: str, version: int) -> ObservedVersion:
        """One model version (NotFound when the model or the version does not exist)."""
        mv = self._call(
            "get model version", lambda: self._registry.get_model_version(name, str(version))
        )
        return _version(mv)

    def run_info(self, run_id: str) -> tuple[RunData, str, str]:
        """A run's params, metrics and tags, its experiment's name and its lifecycle stage.

        MLflow still serves a deleted run (stage `deleted`) until garbage collection, so
        the stage is returned for the caller to judge; a collected run is NotFound.
        """
        run = self._call("get run", lambda: self._tracking.get_run(run_id))
        data = _run_data(run)
        experiment = self._call(
            "get experiment", lambda: self._tracking.get_experiment(data.ref.experiment_id)
        )
        stage = str(getattr(run.info, "lifecycle_stage", "active") or "active")
        return data, str(experiment.name), stage

    def list_artifact_tree(self, run: RunRef, path: str) -> list[ArtifactInfo]:
        """Every file under `path` ("" for the root) of a run's artifacts, sorted by path.

        Paths are relative to the run's artifact root, as MLflow lists them; a size MLflow
        does not list is -1. When `path` names one file, the result is that file alone;
        when it names nothing, the result is empty.
        """
        repo = self._artifact_repo(run)

        def info(entry: Any) -> ArtifactInfo:
            size = entry.file_size
            return ArtifactInfo(str(entry.path), -1 if size is None else int(size))

        out: list[ArtifactInfo] = []
        pending: list[str] = [path]
        seen: set[str] = set()
        while pending:
            current = pending.pop()
            if current in seen:  # a listing that contains itself must not loop forever
                continue
            seen.add(current)
            for entry in self._call(
                "list artifacts",
                lambda p=current: repo.list_artifacts(p or None),  # type: ignore[misc]
            ):
                if entry.is_dir:
                    pending.append(str(entry.path))
                else:
                    out.append(info(entry))
        if not out and path:
            # MLflow lists a single file as an empty folder: find it in its parent instead
            parent = path.rpartition("/")[0]
            siblings = self._call("list artifacts", lambda: repo.list_artifacts(parent or None))
            out = [info(e) for e in siblings if not e.is_dir and str(e.path) == path]
        return sorted(out, key=lambda a: a.path)

    def download_artifact_file(self, run: RunRef, path: str, dest: str) -> None:
        """Download the artifact file `path` of a run to exactly `dest` (its folder exists).

        One request per file through the artifact repository's `_download_file`, the
        per-file step of MLflow's own `download_artifacts`: that public call would list
        the path again first and pick the local name itself, while resolve needs the
        file at a place it chooses and a check of every file before the next one.
        """
        repo = self._artifact_repo(run)
        self._call("download artifact", lambda: repo._download_file(path, dest))

    # -- import (onboarding) --------------------------------------------------------

    def run_origins(self, run_ids: Collection[str]) -> dict[str, tuple[RunRef, str]]:
        """Active runs by id, each with its experiment's name, for `regctl import`.

        One experiment search, then one run search per 100 ids (`run_id IN (...)` over
        every active experiment) instead of a `get_run` per version; missing and deleted
        runs are absent from the result.
        """
        from mlflow.entities import ViewType

        wanted = sorted(set(run_ids))
        if not wanted:
            return {}
        experiments: dict[str, str] = {}
        for exp in self._pages(
            "search experiments",
            lambda tok: self._tracking.search_experiments(
                view_type=ViewType.ACTIVE_ONLY, max_results=EXPERIMENT_PAGE, page_token=tok
            ),
        ):
            experiments[str(exp.experiment_id)] = str(exp.name)
        out: dict[str, tuple[RunRef, str]] = {}
        for ids in chunks(wanted, 100):
            flt = "attributes.run_id IN (" + ", ".join(_quote(r) for r in ids) + ")"
            for exp_ids in chunks(sorted(experiments), 500):
                for run in self._pages(
                    "search runs",
                    lambda tok, e=exp_ids, f=flt: self._tracking.search_runs(  # type: ignore[misc]
                        list(e), f, ViewType.ACTIVE_ONLY, RUN_PAGE, None, tok
                    ),
                ):
                    data = _run_data(run)
                    self._run_cache[data.ref.run_id] = data
                    out[data.ref.run_id] = (data.ref, experiments[data.ref.experiment_id])
        return dict(sorted(out.items()))


def _translate(exc: BaseException, request: str, where: str) -> RegistryError:
    message = scrub(str(exc))
    code = str(getattr(exc, "error_code", "") or "")
    status = 0
    getter = getattr(exc, "get_http_status_code", None)
    if callable(getter):
        try:
            status = int(getter())
        except (TypeError, ValueError):
            status = 0
    lowered = message.lower()
    transport = any(
        s in lowered
        for s in (
            "max retries exceeded",
            "connection refused",
            "failed to establish",
            "read timed out",
            "connecttimeout",
            "connection aborted",
            "name or service",
        )
    )
    if transport:
        reason = (
            "connection refused"
            if "refused" in lowered
            else (
                "timed out"
                if "timed out" in lowered or "timeout" in lowered
                else "no usable response"
            )
        )
        statuses = re.search(r"too many (\d{3}) error responses", lowered)
        if statuses:
            reason = f"the server kept answering HTTP {statuses.group(1)} after retries"
        elif "too many" in lowered and "error responses" in lowered:
            reason = "the server kept answering with errors after retries"
        return Unreachable(
            f"cannot reach MLflow at {where}: {reason} ({request})", request=request, transient=True
        )
    if code == "RESOURCE_DOES_NOT_EXIST":
        return NotFound(f"{request}: {_short(message)}", code=code, status=404, request=request)
    if code == "RESOURCE_ALREADY_EXISTS":
        return AlreadyExists(
            f"{request}: {_short(message)}", code=code, status=400, request=request
        )
    if code or status:
        return RegistryError(
            f"{request} failed: {_short(message)}", code=code, status=status, request=request
        )
    return RegistryError(
        f"{request} failed: {type(exc).__name__}: {_short(message)}", request=request
    )


def _short(message: str) -> str:
    first = message.strip().splitlines()[0] if message.strip() else ""
    return first[:500]


def _version(mv: Any) -> ObservedVersion:
    return ObservedVersion(
        version=int(mv.version),
        run_id=mv.run_id or "",
        source=mv.source or "",
        description=mv.description or "",
        tags=frozen_map({k: str(v) for k, v in (mv.tags or {}).items()}),
        status=str(mv.status or "READY"),
        stage=str(mv.current_stage or "None"),
    )


def _run_ref(run: Any) -> RunRef:
    info = run.info
    return RunRef(
        run_id=info.run_id,
        name=info.run_name or "",
        experiment_id=str(info.experiment_id),
        status=str(info.status),
        artifact_uri=info.artifact_uri or "",
    )


def _run_data(run: Any) -> RunData:
    data = run.data
    return RunData(
        ref=_run_ref(run),
        params=frozen_map(dict(data.params or {})),
        metrics=dict(sorted((k, float(v)) for k, v in (data.metrics or {}).items())),
        tags=frozen_map(dict(data.tags or {})),
    )


def now_ms() -> int:
    return int(time.time() * 1000)
