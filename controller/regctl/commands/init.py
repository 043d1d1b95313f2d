"""`regctl init [DIR] [--import] [--action OWNER/REPO@REF] [--force]`: a team's repository.

Writes the files of `regctl.scaffold` into DIR: `manifests/` (its README), the
metadata-schema `policies/`, the JSON Schema that the `$schema` comments point at,
the three workflows using the regctl action, a `.gitignore` and a README. Every path is
checked before anything is written: when one exists already, init refuses (exit 1,
listing them all) and changes nothing, unless `force`. With `import_models` the
manifests come from the live registry (`regctl import` into DIR's `manifests/`), after
the scaffold is written.

The action reference is written into YAML, so it is checked first: `OWNER/REPO@REF`
(optionally `OWNER/REPO/PATH@REF`) or a local `./PATH`, with no spaces, quotes or other
characters that could end the value. The default is regctl's own repository at the tag
of the installed version; pin it to a commit SHA for a supply chain you review.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from regctl import __version__
from regctl.commands.schema import json_schema
from regctl.commands.schema import render as render_schema
from regctl.errors import ExitCode, RegctlError

if TYPE_CHECKING:
    from regctl.commands.printed import Printed
    from regctl.config import Settings

__all__ = ["ACTION_REPOSITORY", "InitReport", "default_action", "init", "scaffold_files"]

ACTION_REPOSITORY = "regctl/regctl"
"""Where regctl's action lives on GitHub (`uses: regctl/regctl@vX.Y.Z`); a fork or a
mirror is given with `--action`."""

WORKFLOWS = ("plan", "apply", "drift")
POLICIES = ("hmm", "lgbm", "registry")
PLACEHOLDER = "@@ACTION@@"
_PART = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_ACTION = re.compile(
    rf"^(?:{_PART}/{_PART}(?:/[A-Za-z0-9._/-]+)?@[A-Za-z0-9][A-Za-z0-9._/-]*"
    r"|\./(?:[A-Za-z0-9._-]+/?)*)$"
)


def default_action() -> str:
    """regctl's own action at the tag of the installed version."""
    return f"{ACTION_REPOSITORY}@v{__version__}"


def check_action(action: str) -> str:
    """The action reference, or a one-line error saying what shape it must have."""
    if not _ACTION.match(action) or "/../" in f"/{action}/" or "//" in action:
        raise RegctlError(
            f"--action {action!r}: expected OWNER/REPO@REF (for example "
            f"{default_action()}, or a commit SHA as REF) or a local ./PATH"
        )
    return action


def _data(*parts: str) -> str:
    return resources.files("regctl.scaffold").joinpath(*parts).read_text(encoding="utf-8")


def workflow(name: str, action: str) -> str:
    """One scaffolded workflow with the action reference filled in."""
    return _data("workflows", f"{name}.yml").replace(PLACEHOLDER, check_action(action))


def scaffold_files(action: str) -> dict[str, str]:
    """Every file init writes, by its path relative to DIR, in writing order."""
    files = {
        "manifests/README.md": _data("manifests-README.md.txt"),
        **{f"policies/{p}.yaml": _data("policies", f"{p}.yaml") for p in POLICIES},
        "schema/regctl.schema.json": render_schema(json_schema()),
        **{f".github/workflows/{w}.yml": workflow(w, action) for w in WORKFLOWS},
        ".gitignore": _data("gitignore.txt"),
        "README.md": _data("README.md.txt"),
    }
    return files


@dataclass
class InitReport:
    """What init wrote (or found in the way), and what to do next."""

    root: Path
    written: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    imported: Printed | None = None

    @property
    def exit_code(self) -> int:
        if self.existing and not self.written:
            return ExitCode.ERROR
        if self.imported is not None and self.imported.exit_code:
            return self.imported.exit_code
        return ExitCode.OK


def _in_the_way(root: Path, files: dict[str, str]) -> list[str]:
    """The paths init would write that exist already (a file, a folder or a link)."""
    return sorted(rel for rel in files if (root / rel).is_symlink() or (root / rel).exists())


def _unsafe(root: Path, files: dict[str, str]) -> list[str]:
    """What even `--force` must not write through: a link or a non-folder among the
    parents of a path (a linked `policies/` would send the files elsewhere), or a link or
    folder where a file goes."""
    found = set()
    for rel in files:
        parent = root
        for part in Path(rel).parts[:-1]:
            parent = parent / part
            if parent.is_symlink() or (parent.exists() and not parent.is_dir()):
                found.add(f"{parent.relative_to(root).as_posix()}: is a link or not a folder")
                break
        leaf = root / rel
        if leaf.is_symlink() or leaf.is_dir():
            found.add(f"{rel}: is a link or a folder")
    return sorted(found)


def init(
    root: Path,
    *,
    action: str | None = None,
    force: bool = False,
    import_from: Settings | None = None,
) -> InitReport:
    """Scaffold a team's repository in `root` (created when absent).

    Nothing is written when a path exists and `force` is false. With `force`, the
    scaffold's files are overwritten and every other file is left alone. `import_from`
    (the settings of the registry to read) fills `manifests/` after the scaffold.
    """
    files = scaffold_files(check_action(action or default_action()))
    report = InitReport(root)
    if root.exists() and not root.is_dir():
        raise RegctlError(f"{root}: exists and is not a folder")
    if root.is_symlink():
        raise RegctlError(f"{root}: is a link; give the folder itself")
    report.existing = _in_the_way(root, files)
    if report.existing and not force:
        return report
    unsafe = _unsafe(root, files)
    if unsafe:  # checked before any write: nothing is half done
        raise RegctlError(f"{root}: nothing was written: {'; '.join(unsafe)}; remove it first")
    for rel, text in files.items():
        path = root / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise RegctlError(f"{path}: cannot write: {exc.strerror or exc}") from None
        report.written.append(rel)
    if import_from is not None:
        from regctl.commands.import_models import import_command

        report.imported = import_command(import_from, (), root / "manifests", adopt=True)
    return report


def render_init(report: InitReport, action: str) -> str:
    """The report: written files and the next steps, or the files in the way."""
    if report.existing and not report.written:
        lines = [
            f"regctl init: {len(report.existing)} file(s) exist already in {report.root}; "
            "nothing was written (--force overwrites the scaffold's files):",
            *(f"  {rel}" for rel in report.existing),
        ]
        return "\n".join(lines) + "\n"
    lines = [f"Scaffolded {report.root} ({len(report.written)} files, action {action}):"]
    lines += [f"  {rel}" for rel in report.written]
    if report.imported is not None:
        lines += ["", report.imported.text.rstrip("\n")]
    lines += [
        "",
        "Next steps:",
        "  1. git init (if this is not a repository yet), commit, push to GitHub.",
        "  2. Secrets: repository secrets MLFLOW_PLAN_TRACKING_URI and a READ-ONLY",
        "     MLFLOW_PLAN_TRACKING_TOKEN (or _USERNAME and _PASSWORD) for plan and drift.",
        "  3. The apply environment: Settings -> Environments -> mlflow-registry, deployment",
        "     branch main only, with the WRITE credential as its secrets MLFLOW_TRACKING_URI",
        "     and MLFLOW_TRACKING_TOKEN (never as repository secrets).",
        "  4. Branch protection on main: pull requests with review, and the checks",
        "     'validate and check (offline)' and 'plan against the registry'.",
        f"  5. Pin the action ({action}) to a commit SHA once you have reviewed it.",
        "  Then: regctl validate, and regctl import to bring existing models in.",
    ]
    return "\n".join(lines) + "\n"
