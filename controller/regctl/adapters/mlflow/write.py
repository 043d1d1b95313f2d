"""RegistryWriter over MLflow's registry store: one method, one request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from regctl.adapters.mlflow.client import StoreClient


class RegistryWrites(StoreClient):
    """Registered models, versions, tags and aliases: created, changed, deleted."""

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

        tag = ModelVersionTag(key, value)
        self._call(
            "set version tag",
            lambda: self._registry.set_model_version_tag(name, str(version), tag),
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
