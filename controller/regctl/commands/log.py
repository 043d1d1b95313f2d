"""`regctl log`: the promotion history of a model, from the git history of its manifest."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from regctl.adapters import git as gitinfo
from regctl.config import (
    Settings,
)
from regctl.core.history import promotions
from regctl.errors import (
    InputError,
)
from regctl.render.history import render_log

if TYPE_CHECKING:
    pass


def log(settings: Settings, model: str, alias: str | None, fmt: str) -> str:
    """Promotion history of a model from the git history of its manifest."""
    path = _manifest_of(settings.repo, model)
    history = gitinfo.file_history(settings.repo, path)
    return render_log(model, promotions(model, history, alias), fmt, alias=alias)


def _manifest_of(repo: Path, model: str) -> str:
    """The repo-relative manifest path that declares `model` (by name, then file name)."""
    from regctl.adapters.manifests import display_path, manifest_files
    from regctl.adapters.yamlfile import load_documents

    for path in manifest_files(repo):
        try:
            docs = load_documents(path, path.name)
        except InputError:
            continue
        if docs and isinstance(docs[0].value, dict) and docs[0].value.get("name") == model:
            return display_path(path, repo)
    return f"manifests/{model}.yaml"
