"""regctl.adapters.mlflow: the MLflow adapter, one module per port it serves.

`client` (connection, error translation, shared conversions), `read` (RegistryReader),
`write` (RegistryWriter), `tracking` (TrackingWriter), `artifacts` (ArtifactReader);
`registry.MlflowRegistry` composes them. Only this package imports mlflow, and only
`regctl.config.open_registry` imports it, when a command first needs a registry.
"""
