"""regctl: a Git-ops controller for the MLflow Model Registry.

Importing this package is cheap: mlflow is imported only by `regctl.adapters.mlflow`,
when a command first needs a registry.
"""

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Lazy public API for inference code: `regctl.resolve("name@Production")`, `Resolved`,
    `regctl.verify(dir)`.

    `resolve` lives in `regctl.commands.resolve`, `Resolved` in `regctl.engine.resolved`;
    importing them does not import mlflow either (calling `resolve` does).
    """
    if name == "resolve":
        from regctl.commands.resolve import resolve

        return resolve
    if name == "verify":
        from regctl.commands.verify import verify

        return verify
    if name == "Resolved":
        from regctl.engine.resolved import Resolved

        return Resolved
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
