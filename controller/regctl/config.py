"""Settings: which repository and which MLflow a command works on, and how to connect.

Lives just below `commands/`: every command takes a `Settings`; `open_registry` is the one
place that imports the MLflow adapter (lazily, so `regctl --help` never imports mlflow).
May import: core, adapters (the MLflow adapter only inside `open_registry`), errors.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from regctl.adapters.manifests import display_path
from regctl.core.uris import check_uri

if TYPE_CHECKING:
    from regctl.ports import Registry


@dataclass(frozen=True, slots=True)
class Settings:
    """Global options: where the repository is and which MLflow to talk to."""

    repo: Path
    tracking_uri: str | None = None
    registry_uri: str | None = None


def find_repo(start: Path | None = None) -> Path:
    """The repository root: the nearest folder (upwards) holding `manifests/`, else cwd."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "manifests").is_dir():
            return folder
    return here


def resolve_tracking(settings: Settings) -> tuple[str, str | None]:
    """Tracking URI and, for local stores, the artifact root beside the database.

    Order: --tracking-uri, MLFLOW_TRACKING_URI, then MLflow's own default
    `sqlite:///mlflow.db`, anchored in the repository so it does not depend on cwd.
    """
    given = settings.tracking_uri is not None  # `--tracking-uri ""` is an error, not unset
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    uri = settings.tracking_uri if settings.tracking_uri is not None else uri
    if uri or given:
        check_uri(uri, "--tracking-uri" if given else "MLFLOW_TRACKING_URI")
    else:
        uri = f"sqlite:///{settings.repo / 'mlflow.db'}"
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        if not db.is_absolute():
            db = settings.repo / db
            uri = f"sqlite:///{db}"
        return uri, (db.parent / "mlruns").as_uri()
    return uri, None


DEFAULT_CONCURRENCY = 8
"""Writes in flight at once against a server (one per lane: see Change.lane)."""


def default_concurrency(settings: Settings) -> int:
    """8 writes in flight against an HTTP server; 1 for a local store (SQLite locks)."""
    uri, _ = resolve_tracking(settings)
    return DEFAULT_CONCURRENCY if uri.startswith(("http://", "https://")) else 1


def open_registry(settings: Settings) -> Registry:
    """Connect the MLflow adapter (imports mlflow)."""
    from regctl.adapters.mlflow.registry import MlflowRegistry

    uri, artifact_root = resolve_tracking(settings)
    given = settings.registry_uri is not None
    registry_uri = os.environ.get("MLFLOW_REGISTRY_URI", "")
    registry_uri = settings.registry_uri if settings.registry_uri is not None else registry_uri
    if registry_uri or given:
        check_uri(registry_uri, "--registry-uri" if given else "MLFLOW_REGISTRY_URI")
    return MlflowRegistry(uri, registry_uri or None, artifact_root)


def registry_target(settings: Settings) -> str:
    """The registry a plan is bound to, as shown: local paths relative, no credentials."""
    uri, _ = resolve_tracking(settings)
    if uri.startswith("sqlite:///"):
        return "sqlite:///" + display_path(Path(uri[len("sqlite:///") :]), settings.repo)
    parsed = urllib.parse.urlsplit(uri)
    return urllib.parse.urlunsplit(
        (parsed.scheme, parsed.netloc.rsplit("@", 1)[-1], parsed.path, "", "")
    )
