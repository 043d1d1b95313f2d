"""The MLflow adapter: `MlflowRegistry`, every port over MLflow's stores.

This package (`regctl.adapters.mlflow`) is the only one that imports mlflow. It talks to
MLflow's store layer (`RestStore` for http(s), `SqlAlchemyStore` for the embedded
`sqlite:///` default), which maps one method to one request, so regctl avoids the extra
reads that `MlflowClient` makes before many writes. MLflow's errors and transport
failures are translated once, in `client.py`, into `regctl.errors`, with credentials
scrubbed from every message. Each port is a mixin in its own module: `read.py`
(RegistryReader), `write.py` (RegistryWriter), `tracking.py` (TrackingWriter),
`artifacts.py` (ArtifactReader), `webhooks.py` (the controller's webhook); `client.py`
holds construction, describe and close.
"""

from __future__ import annotations

from regctl.adapters.mlflow.artifacts import ArtifactReads
from regctl.adapters.mlflow.read import RegistryReads
from regctl.adapters.mlflow.tracking import TrackingWrites
from regctl.adapters.mlflow.webhooks import WebhookWrites
from regctl.adapters.mlflow.write import RegistryWrites


class MlflowRegistry(RegistryReads, RegistryWrites, TrackingWrites, ArtifactReads, WebhookWrites):
    """Registry, tracking and artifact access through MLflow's stores."""
