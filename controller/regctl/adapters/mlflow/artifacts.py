"""ArtifactReader over MLflow's artifact repositories: listing and one-file download."""

from __future__ import annotations

from typing import Any

from regctl.adapters.mlflow.client import StoreClient
from regctl.core.model import RunRef
from regctl.ports import ArtifactInfo


class ArtifactReads(StoreClient):
    """A run's stored artifacts, for content proofs, resolve and verify."""

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
