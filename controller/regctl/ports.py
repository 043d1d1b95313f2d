"""The ports through which the core reaches a registry. Planning only ever gets a reader.

The MLflow adapter (`regctl.adapters.mlflow.registry`) implements all three; tests may wrap them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from regctl.core.model import ObservedModel, ObservedVersion, RunRef


@dataclass(frozen=True, slots=True)
class RunData:
    """A logged run's content, for sync's comparison and for policies."""

    ref: RunRef
    params: Mapping[str, str]
    metrics: Mapping[str, float]
    tags: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class ArtifactInfo:
    """One file already in a run's artifacts."""

    path: str
    size: int


class RegistryReader(Protocol):
    """Read-only access to the registry and the runs it points at."""

    def search_models(self, names: Collection[str] | None) -> dict[str, ObservedModel]:
        """Models (with versions and aliases); all of them when `names` is None."""
        ...

    def model_tags(self, name: str) -> Mapping[str, str] | None:
        """One registered model's tags (one request); None when it does not exist."""
        ...

    def search_models_like(self, pattern: str) -> dict[str, ObservedModel]:
        """Models whose name matches a SQL LIKE pattern: tags and description, no versions
        or aliases (one search; the lease reads its generations with it)."""
        ...

    def versions_of_run(self, model: str, run_id: str) -> list[ObservedVersion]:
        """Live versions of `model` registered from `run_id` (find-by-run)."""
        ...

    def experiments(self, names: Collection[str]) -> dict[str, str]:
        """Experiment name -> id, for the named experiments that exist."""
        ...

    def runs_in(self, experiment_ids: Collection[str], names: Collection[str]) -> list[RunRef]:
        """Active runs of these experiments whose names are in `names` (callers keep the
        names each experiment should hold; one search covers many experiments)."""
        ...

    def runs_by_id(self, run_ids: Collection[str]) -> dict[str, RunRef]:
        """Active runs by id; missing ids are absent from the result."""
        ...

    def run_data(self, run_ids: Collection[str]) -> dict[str, RunData]:
        """Params, metrics and tags of the given runs."""
        ...


class RegistryWriter(Protocol):
    """Registry writes. One method, one request."""

    def create_model(self, name: str, description: str | None, tags: Mapping[str, str]) -> None: ...

    def update_model_description(self, name: str, description: str) -> None: ...

    def set_model_tag(self, name: str, key: str, value: str) -> None: ...

    def create_version(
        self,
        name: str,
        source: str,
        run_id: str,
        description: str | None,
        tags: Mapping[str, str],
    ) -> int: ...

    def update_version_description(self, name: str, version: int, description: str) -> None: ...

    def set_version_tag(self, name: str, version: int, key: str, value: str) -> None: ...

    def set_alias(self, name: str, alias: str, version: int) -> None: ...

    def delete_alias(self, name: str, alias: str) -> None: ...

    def delete_version(self, name: str, version: int) -> None: ...

    def delete_model(self, name: str) -> None: ...


class TrackingWriter(Protocol):
    """Tracking writes for sync: experiments, runs, params/metrics, artifacts."""

    def create_experiment(self, name: str) -> str: ...

    def create_run(self, experiment_id: str, run_name: str, start_time_ms: int) -> RunRef: ...

    def log_batch(
        self, run_id: str, params: Mapping[str, str], metrics: Mapping[str, float], step_ms: int
    ) -> None: ...

    def upload_artifact(self, run: RunRef, local_path: str, rel_path: str) -> None: ...

    def finish_run(self, run_id: str, status: str, end_time_ms: int) -> None: ...


class ArtifactReader(Protocol):
    """A run's stored artifacts: listing and single-file download (for content proofs,
    resolve and verify)."""

    def list_artifact_tree(self, run: RunRef, path: str) -> list[ArtifactInfo]:
        """Every file under `path` ("" for the root), sorted by path; size -1 if unknown."""
        ...

    def download_artifact_file(self, run: RunRef, path: str, dest: str) -> None:
        """Download the artifact file `path` of `run` to exactly `dest`."""
        ...


class Registry(RegistryReader, RegistryWriter, TrackingWriter, ArtifactReader, Protocol):
    """Everything an adapter offers; use cases hand out the narrow ports."""

    def describe(self) -> str:
        """The tracking URI without credentials, for messages."""
        ...

    def close(self) -> None: ...


def chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    """Split a sequence into slices of at most `size` items."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def runs_by_name(
    reader: RegistryReader,
    experiments: Mapping[str, str],
    wanted: Mapping[str, Collection[str]],
) -> dict[tuple[str, str], tuple[RunRef, ...]]:
    """(experiment name, run name) -> the active runs of that name, for every experiment in
    `wanted` that exists; one run search covers all of them."""
    ids = {experiments[e]: e for e in wanted if e in experiments}
    names: set[str] = set()
    for exp in ids.values():
        names.update(wanted[exp])
    found: dict[tuple[str, str], list[RunRef]] = {}
    for ref in reader.runs_in(sorted(ids), names) if ids else []:
        owner = ids.get(ref.experiment_id)
        if owner is not None and ref.name in wanted[owner]:
            found.setdefault((owner, ref.name), []).append(ref)
    return {key: tuple(sorted(refs, key=lambda r: r.run_id)) for key, refs in found.items()}


@runtime_checkable
class WebhookRegistrar(Protocol):
    """A registry that can deliver its events to the controller (MLflow 3.3 and later)."""

    def ensure_webhook(
        self, name: str, url: str, events: Sequence[str], secret: str, description: str
    ) -> str: ...
