"""regctl.adapters.mlflow."""
