"""regctl: a Git-ops controller for the MLflow Model Registry.

Importing this package is cheap: mlflow is imported only by `regctl.mlflow_store`,
when a command first needs a registry.
"""

__version__ = "0.1.0"
