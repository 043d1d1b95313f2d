"""regctl: a Git-ops controller for the MLflow Model Registry.

Importing this package is cheap: mlflow is imported only by `regctl.adapters.mlflow`,
when a command first needs a registry.
"""

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Lazy public API for inference code: `regctl.resolve("name@Production")`, `Resolved`.

    Both live in `regctl.commands.inference`; importing it does not import mlflow either (calling
    `resolve` does).
    """
    if name in ("resolve", "Resolved"):
        from regctl.commands import inference

        return getattr(inference, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
