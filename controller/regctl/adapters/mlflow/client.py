"""How the MLflow adapter reaches MLflow: the stores, and MLflow's errors translated.

`StoreClient` opens MLflow's store layer (`RestStore` for http(s), `SqlAlchemyStore` for
the embedded `sqlite:///` default) and sends every request through `_call`/`_pages`, which
translate MLflow's errors and transport failures, once, into `regctl.errors` with
credentials scrubbed from every message. The per-port mixins of `registry.MlflowRegistry`
build on it; the helpers turning MLflow's entities into regctl's values live here too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from regctl.core.model import ObservedVersion, RunRef, frozen_map
from regctl.errors import AlreadyExists, NotFound, RegistryError, Unreachable
from regctl.ports import RunData

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


class StoreClient:
    """MLflow's tracking and registry stores, and the one way requests go through them."""

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

    def _artifact_repo(self, run: RunRef) -> Any:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        uri = run.artifact_uri
        if not uri:
            uri = self._call(
                "get run", lambda: self._tracking.get_run(run.run_id)
            ).info.artifact_uri
        return get_artifact_repository(uri, tracking_uri=self.tracking_uri)


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
