"""The manifest boundary: YAML files -> validated DesiredState, or file:line errors.

Strict on purpose (SPEC section 2): unknown keys, duplicate keys, anchors, non-string
names, alias names MLflow would reject, case-only differences and duplicate entries
are all errors. Every file is checked and every problem is reported before anything
reaches a server.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, Field, StringConstraints, ValidationError

from regctl.adapters.yamlfile import Document, dotted, load_documents, parse_documents, read_limit
from regctl.core.model import (
    LEDGER_MODEL,
    PROVENANCE_PREFIX,
    DesiredModel,
    DesiredState,
    DesiredVersion,
    frozen_map,
    is_lease_model,
)
from regctl.core.spec import Strict
from regctl.errors import InputError, Location, Problem, type_name

API_VERSION = "regctl/v1"

_ALIAS_RE = re.compile(r"^[\w-]+$")
_RESERVED_ALIAS_RE = re.compile(r"^(latest|v\d+)$", re.IGNORECASE)
_RUN_ID_RE = re.compile(r"^[0-9A-Za-z_-]{1,64}$")

NonEmpty = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Description = Annotated[str, StringConstraints(max_length=5000)]


class VersionSpec(Strict):
    """One entry of `versions:`: a model version identified by its run and artifact path."""

    run: NonEmpty | None = Field(None, description="Run name, resolved inside `experiment`.")
    run_id: NonEmpty | None = Field(None, description="Run id (instead of `run`).")
    run_dir: NonEmpty | None = Field(
        None, description="Training output directory; relative paths are from the repo root."
    )
    artifact_path: str | None = Field(
        None, description="Path inside the run's artifacts; default: the whole artifact root."
    )
    version: Annotated[int, Field(ge=1)] | None = Field(
        None, description="Pin: apply refuses to register this entry under any other number."
    )
    description: Description | None = Field(None, description="Version description.")
    aliases: list[NonEmpty] = Field(default_factory=list, description="Aliases on this version.")
    digest: Annotated[str, StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$")] | None = Field(
        None,
        description="Pin of the version's content digest (`sha256:` + 64 hex): diff and apply "
        "refuse when the registry's record (or the run directory) says otherwise.",
    )


class ManifestSpec(Strict):
    """`kind: RegisteredModel`: the desired state of one registered model."""

    apiVersion: Literal["regctl/v1"]
    kind: Literal["RegisteredModel"]
    name: NonEmpty = Field(description="Registered model name.")
    description: Description | None = Field(None, description="Model description.")
    experiment: NonEmpty | None = Field(None, description="Experiment holding this model's runs.")
    tags: dict[NonEmpty, str] = Field(
        default_factory=dict, description="Registered-model tags; named keys are enforced."
    )
    prune: bool = Field(False, description="Allow `apply --prune` to delete undeclared versions.")
    versions: list[VersionSpec] = Field(default_factory=list)


_TYPE_WORDS = {
    "tag:yaml.org,2002:int": "an integer",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:null": "null",
    "tag:yaml.org,2002:timestamp": "a date",
}


def _message(err: Any, doc: Document, path: tuple[str | int, ...]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"must be {expected}, got {err['input']!r}"
    if kind == "string_type":
        scalar = doc.scalars.get(path)
        if scalar is not None and scalar.tag in _TYPE_WORDS:
            return (
                f"expected a string, but YAML reads {scalar.text!r} as "
                f"{_TYPE_WORDS[scalar.tag]}: quote it"
            )
        return f"expected a string, got {type_name(err['input'])}"
    if kind in ("int_type", "bool_type", "list_type", "dict_type"):
        want = {
            "int_type": "an integer",
            "bool_type": "true or false",
            "list_type": "a list",
            "dict_type": "a mapping",
        }[kind]
        return f"expected {want}, got {type_name(err['input'])}"
    return str(err["msg"]).replace("Value error, ", "")


M = TypeVar("M", bound=BaseModel)


def validate_document(doc: Document, schema: type[M]) -> tuple[M | None, list[Problem]]:
    """Validate one document against a pydantic schema, mapping errors to file:line:col."""
    if not isinstance(doc.value, dict):
        return None, [Problem(doc.location(()), "", "expected a mapping at the top level")]
    try:
        return schema.model_validate(doc.value), []
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            path = _input_path(doc.value, err["loc"])
            key = err["type"] in ("extra_forbidden",)
            loc = doc.location(path, key=key)
            problems.append(Problem(loc, dotted(path), _message(err, doc, path)))
        return None, _dedupe(problems)


def _input_path(value: Any, loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    """pydantic's `loc` as a path in the input: union-branch labels dropped, keys kept.

    A part that names a key or index of the input is always kept, so a user's key
    spelled `none`, `str`, `int` or `a[0]` keeps its name and position.
    """
    path: list[str | int] = []
    for part in loc:
        inside = (isinstance(value, dict) and part in value) or (
            isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value)
        )
        if inside:
            value = value[part]
        elif _is_union_branch(part):
            continue
        else:
            value = None
        path.append(part)
    return tuple(path)


def _is_union_branch(part: Any) -> bool:
    # pydantic puts the union member's name into `loc` ("str", "function-after[...]").
    return isinstance(part, str) and (part in ("str", "int", "none") or "[" in part)


def _dedupe(problems: Iterable[Problem]) -> list[Problem]:
    seen: dict[str, Problem] = {}
    for p in problems:
        seen.setdefault(f"{p.location}|{p.field}", p)
    return sorted(seen.values(), key=lambda p: (p.location.line, p.location.col, p.field))


def alias_problem(alias: str) -> str | None:
    """Why MLflow would reject this alias name, or None."""
    if len(alias) > 255:
        return "alias is longer than 255 characters"
    if not _ALIAS_RE.fullmatch(alias):
        return f"alias {alias!r} may contain only letters, digits, '_' and '-'"
    if _RESERVED_ALIAS_RE.fullmatch(alias):
        return f"alias {alias!r} is reserved by MLflow ('latest' and 'v<digits>')"
    return None


_EMPTY_DESCRIPTION = "empty: write description: '' to clear it, or remove the key"


def _check_model(
    spec: ManifestSpec, doc: Document, repo: Path, exists: Callable[[Path], bool]
) -> list[Problem]:
    checks = _ModelChecks(spec, doc, repo, exists)
    checks.empty_descriptions()
    checks.name_and_tags()
    for i, v in enumerate(spec.versions):
        base: tuple[str | int, ...] = ("versions", i)
        checks.version_run(v, base)
        checks.version_paths(v, base)
        checks.version_unique(v, i, base)
        checks.aliases(v, base)
    return checks.problems


@dataclass
class _ModelChecks:
    """The checks of one manifest that its schema cannot say; problems in check order."""

    spec: ManifestSpec
    doc: Document
    repo: Path
    exists: Callable[[Path], bool]
    problems: list[Problem] = field(default_factory=list)
    seen_alias: dict[str, tuple[str, int]] = field(default_factory=dict)
    seen_run: dict[tuple[str, str], int] = field(default_factory=dict)
    seen_pin: dict[int, int] = field(default_factory=dict)

    def at(self, path: tuple[str | int, ...], message: str, *, key: bool = False) -> None:
        self.problems.append(Problem(self.doc.location(path, key=key), dotted(path), message))

    def empty_descriptions(self) -> None:
        """A `description:` with no value reads as null: say how to write what was meant."""
        spec, doc, at = self.spec, self.doc, self.at
        if isinstance(doc.value, dict) and "description" in doc.value and spec.description is None:
            at(("description",), _EMPTY_DESCRIPTION)
        for i, raw in enumerate(
            doc.value.get("versions") or [] if isinstance(doc.value, dict) else []
        ):
            if isinstance(raw, dict) and "description" in raw and raw["description"] is None:
                at(("versions", i, "description"), _EMPTY_DESCRIPTION)

    def name_and_tags(self) -> None:
        """The model's name and tag keys must not be regctl's own."""
        spec, at = self.spec, self.at
        if is_lease_model(spec.name):
            at(("name",), f"{spec.name!r} is the name of regctl's apply lease, not a model's")
        elif spec.name.casefold() == LEDGER_MODEL:
            at(("name",), f"{spec.name!r} is the name of regctl's ledger of proven runs")
        for key in spec.tags:
            if key.startswith(PROVENANCE_PREFIX):
                at(
                    ("tags", key),
                    f"tag keys starting with {PROVENANCE_PREFIX!r} belong to regctl",
                    key=True,
                )

    def version_run(self, v: VersionSpec, base: tuple[str | int, ...]) -> None:
        """Exactly one of `run` and `run_id`, and each one usable."""
        at = self.at
        if v.run is None and v.run_id is None:
            at(base, "give the version's run: `run` (a run name) or `run_id`")
        if v.run is not None and v.run_id is not None:
            at((*base, "run_id"), "give `run` or `run_id`, not both", key=True)
        if v.run is not None and self.spec.experiment is None:
            at((*base, "run"), "a run name needs the model's `experiment` to resolve in", key=True)
        if v.run_id is not None and not _RUN_ID_RE.fullmatch(v.run_id):
            at((*base, "run_id"), f"{v.run_id!r} is not a run id")

    def version_paths(self, v: VersionSpec, base: tuple[str | int, ...]) -> None:
        """`artifact_path` stays inside the run; `run_dir` exists and is named as the run."""
        at = self.at
        if v.artifact_path is not None and (
            v.artifact_path.startswith("/") or ".." in v.artifact_path.split("/")
        ):
            at((*base, "artifact_path"), "must be a relative path inside the run's artifacts")
        if v.run_dir is not None:
            rd = Path(v.run_dir)
            full = rd if rd.is_absolute() else self.repo / rd
            if not self.exists(full):
                at((*base, "run_dir"), f"directory not found: {v.run_dir}")
            if v.run is not None and rd.name != v.run:
                at(
                    (*base, "run_dir"),
                    f"the directory's name {rd.name!r} must be the run name {v.run!r}",
                )

    def version_unique(self, v: VersionSpec, i: int, base: tuple[str | int, ...]) -> None:
        """One entry per (run, artifact path), one per pinned version number."""
        at, seen_run, seen_pin = self.at, self.seen_run, self.seen_pin
        run_key = (v.run or v.run_id or "", (v.artifact_path or "").strip("/"))
        if run_key[0]:
            if run_key in seen_run:
                at(
                    base,
                    f"{v.run or 'run_id ' + str(v.run_id)} with artifact path "
                    f"{run_key[1] or '(root)'!r} is already declared by "
                    f"versions[{seen_run[run_key]}]",
                )
            else:
                seen_run[run_key] = i
        if v.version is not None:
            if v.version in seen_pin:
                at(
                    (*base, "version"),
                    f"version {v.version} is already pinned by versions[{seen_pin[v.version]}]",
                )
            else:
                seen_pin[v.version] = i

    def aliases(self, v: VersionSpec, base: tuple[str | int, ...]) -> None:
        """Alias names MLflow accepts, each used once in the model (ignoring case)."""
        at, seen_alias = self.at, self.seen_alias
        for j, alias in enumerate(v.aliases):
            path = (*base, "aliases", j)
            why = alias_problem(alias)
            if why:
                at(path, why)
                continue
            folded = alias.casefold()
            if folded in seen_alias:
                first, line = seen_alias[folded]
                how = (
                    "is already used" if first == alias else f"differs only in case from {first!r}"
                )
                at(path, f"alias {alias!r} {how} in this model (line {line})")
            else:
                seen_alias[folded] = (alias, self.doc.location(path).line)


def _to_desired(spec: ManifestSpec, doc: Document) -> DesiredModel:
    versions = []
    for i, v in enumerate(spec.versions):
        versions.append(
            DesiredVersion(
                index=i,
                location=doc.location(("versions", i)),
                run=v.run,
                run_id=v.run_id,
                run_dir=v.run_dir,
                artifact_path=(v.artifact_path or "").strip("/"),
                artifact_path_given=v.artifact_path is not None,
                version=v.version,
                description=v.description,
                aliases=tuple(v.aliases),
                digest=v.digest,
            )
        )
    return DesiredModel(
        name=spec.name,
        location=doc.location(("name",)),
        description=spec.description,
        experiment=spec.experiment,
        tags=frozen_map(spec.tags),
        prune=spec.prune,
        versions=tuple(versions),
    )


def manifest_files(repo: Path) -> list[Path]:
    """The manifest files of a repository (`manifests/`), sorted; see `yaml_files`."""
    return yaml_files(repo / "manifests", repo)


YAML_SUFFIXES = (".yaml", ".yml")
"""What a manifest or policy file is called, compared case-insensitively."""


def yaml_files(folder: Path, repo: Path) -> list[Path]:
    """Every entry of `folder` that the loader reads, sorted; an InputError for the rest.

    Whatever sits in the folder either is read or stops the command, so a model never
    silently drops out of the desired state (and `apply --prune` never deletes it
    because its file was skipped). The rules:

    - A regular file whose name ends in `.yaml` or `.yml`, in any case (`m.YAML`,
      `m.Yml`), is read.
    - Names starting with `.` are ignored (`.gitkeep`, `.gitignore`, `.DS_Store`, editor
      swap files): tools put them there and no one writes a manifest under a hidden
      name. A hidden name with a YAML suffix (`.m.yaml`) is the exception: it looks
      like a manifest, so it is an error rather than a silent skip.
    - A README (`README`, `README.md`, `readme.txt`: the name before the first `.` is
      `readme` in any case) is ignored when it is a regular file: a folder's notes for
      its readers, never a manifest.
    - Anything else is an error naming it, one problem each: a symbolic link (dangling
      or not: git stores only the link, so its target is not what the pull request
      reviewed, and it may point outside the repository), a subdirectory (the folder is
      flat), a FIFO, socket or device (never opened), a file with another suffix
      (`m.yaml~`, `m.json`).
    - Two names that differ only in case (`a.yaml` and `a.YAML`) are an error: on a
      case-insensitive file system (macOS, Windows) one hides the other.

    A missing folder holds nothing. Entries are examined with `lstat`: nothing is
    followed or opened here.
    """
    try:
        if not folder.is_dir():
            return []
        names = sorted(os.listdir(folder))
    except OSError as exc:
        raise InputError(
            [Problem(Location(_shown(folder, repo)), "", f"cannot list: {exc.strerror}")]
        ) from None
    base = _shown(folder, repo)
    problems: list[Problem] = []
    found: list[Path] = []
    folded: dict[str, str] = {}
    for name in names:
        shown = f"{base}/{name}"
        yaml = name.casefold().endswith(YAML_SUFFIXES)
        readme = name.split(".", 1)[0].casefold() == "readme" and not yaml
        if name.startswith(".") and not yaml:
            continue
        if name.casefold() in folded:
            problems.append(
                Problem(
                    Location(shown),
                    "",
                    f"differs only in case from {base}/{folded[name.casefold()]}: on a "
                    "case-insensitive file system one hides the other; rename one",
                )
            )
            continue
        folded[name.casefold()] = name
        path = folder / name
        try:
            mode = path.lstat().st_mode
        except OSError as exc:
            problems.append(Problem(Location(shown), "", f"cannot read: {exc.strerror}"))
            continue
        if readme and stat.S_ISREG(mode):
            continue
        why = _not_read(name, mode, yaml)
        if why:
            problems.append(Problem(Location(shown), "", why))
        else:
            found.append(path)
    if problems:
        raise InputError(problems)
    return found


def _not_read(name: str, mode: int, yaml: bool) -> str | None:
    """Why the loader does not read this entry, or None when it does."""
    if stat.S_ISLNK(mode):
        return (
            "is a symbolic link; regctl reads only regular files here (the link's target "
            "is not what git reviews): replace it with the file"
        )
    if stat.S_ISDIR(mode):
        return "is a directory; regctl reads only the files directly in this folder"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a FIFO, socket or device); remove it"
    if name.startswith("."):
        return "is hidden; regctl does not read hidden files: rename it or remove it"
    if not yaml:
        return (
            "is not a YAML file; regctl reads *.yaml and *.yml files here: "
            "rename it or move it elsewhere"
        )
    return None


def _shown(folder: Path, repo: Path) -> str:
    """A folder as the user knows it (`manifests`), its last part not followed if a link."""
    parent = display_path(folder.parent, repo)
    return folder.name if parent == "." else f"{parent}/{folder.name}"


def display_path(path: Path, repo: Path) -> str:
    """A path as the user knows it: relative to the repository when inside it."""
    try:
        return path.resolve().relative_to(repo.resolve()).as_posix()
    except ValueError:
        return str(path)


def load_manifests(
    repo: Path,
    files: Sequence[Path] | None = None,
    *,
    check_paths: bool = True,
) -> DesiredState:
    """Load and validate every manifest; raise InputError listing every problem found."""
    paths = manifest_files(repo) if files is None else list(files)

    def reader(path: Path, shown: str) -> Callable[[], list[Document]]:
        return lambda: load_documents(path, shown)

    sources = [(display_path(p, repo), reader(p, display_path(p, repo))) for p in paths]
    return _load(sources, repo, check_paths=check_paths)


def load_manifest_texts(texts: Mapping[str, str], repo: Path, *, label: str = "") -> DesiredState:
    """Load manifests given as text (e.g. read from a git ref); run_dir is not checked.

    `label` prefixes the file names in messages (`origin/main:manifests/m.yaml:3:1`).
    """
    sources = [
        (
            f"{label}{name}",
            (lambda t=text, n=f"{label}{name}": parse_documents(read_limit(t, n), n)),
        )
        for name, text in sorted(texts.items())
    ]
    return _load(sources, repo, check_paths=False)


def _load(
    sources: Sequence[tuple[str, Callable[[], list[Document]]]], repo: Path, *, check_paths: bool
) -> DesiredState:
    problems: list[Problem] = []
    models: list[tuple[DesiredModel, Document]] = []
    named: list[tuple[DesiredModel, Document]] = []
    exists: Callable[[Path], bool] = (lambda p: p.is_dir()) if check_paths else (lambda p: True)
    for shown, read in sources:
        try:
            docs = read()
        except InputError as err:
            problems.extend(err.problems)
            continue
        if len(docs) != 1:
            problems.append(
                Problem(
                    Location(shown, 1, 1),
                    "",
                    f"a manifest holds exactly one document, found {len(docs)}",
                )
            )
            continue
        doc = docs[0]
        spec, found = validate_document(doc, ManifestSpec)
        problems.extend(found)
        if spec is None:
            continue
        found = _check_model(spec, doc, repo, exists)
        problems.extend(found)
        desired = _to_desired(spec, doc)
        named.append((desired, doc))  # names are compared even when this file has problems
        if not found:
            models.append((desired, doc))
    problems.extend(_check_across(named))
    if problems:
        order = {shown: i for i, (shown, _) in enumerate(sources)}
        raise InputError(
            sorted(
                problems,
                key=lambda p: (
                    order.get(p.location.file, len(order)),
                    p.location.line,
                    p.location.col,
                ),
            )
        )
    return DesiredState(tuple(sorted((m for m, _ in models), key=lambda m: m.name)))


def _check_across(models: list[tuple[DesiredModel, Document]]) -> list[Problem]:
    problems = []
    seen: dict[str, DesiredModel] = {}
    for model, doc in models:
        folded = model.name.casefold()
        if folded in seen:
            first = seen[folded]
            how = (
                "is already declared"
                if first.name == model.name
                else (f"differs only in case from {first.name!r}")
            )
            problems.append(
                Problem(
                    doc.location(("name",)),
                    "name",
                    f"model {model.name!r} {how} in {first.location}",
                )
            )
        else:
            seen[folded] = model
    return problems


def scope(state: DesiredState, names: Sequence[str]) -> DesiredState:
    """Keep only the named models; unknown names are an error."""
    if not names:
        return state
    known = set(state.names())
    unknown = sorted(set(names) - known)
    if unknown:
        raise InputError(
            [
                Problem(Location("manifests/"), "", f"no manifest declares model {n!r}")
                for n in unknown
            ]
        )
    return DesiredState(tuple(m for m in state.models if m.name in set(names)))
