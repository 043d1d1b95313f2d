"""Proof that a logged run is the run of a run directory: by its content, never its name.

Anyone who can log runs can log one under the name of a run directory that sync has not
logged yet. A run therefore counts as the run of directory D only when regctl proves it
from content (SPEC section 6):

- its params equal D's derived params (path params, which depend on where the directory
  sits on a machine, may differ: reported as warnings, as sync always did);
- its metrics equal D's (NaN equals NaN; MLflow stores +-Infinity as +-1.7976931348623157e308,
  which counts as the same infinity);
- its artifact files equal D's files: the same paths, sizes and sha256 digests.

A run that an interrupted sync left RUNNING or FAILED is checked the same way, except that
what is missing may be logged later (a consistent prefix): whatever it already holds must
equal D's. Runs get no tags; the proof is content, not a marker anyone can copy.

Proving means downloading and hashing the run's files. A run proven once is recorded on the
ledger model (`regctl.model.LEDGER_MODEL`: tag `regctl.proven.<run id>` = the tree digest), by
sync (which holds the lease), so that the second sync and every later diff of an unchanged
registry download nothing. But anyone who may tag registered models can write a ledger
entry, and the directory's digest is public, so an entry is trusted only where nothing
new is at stake: a run that a plan registers a version from or points an alias at is
hashed again (`prove(..., trust_ledger=False)`, once per command). A forged entry can
then make a diff skip the download of a run whose versions already hold what the
manifests say, never put a run's files behind an alias. Restrict who may edit the ledger
model anyway (docs/remote.md).

Which file is the model is not a path param to tolerate: `model_path` relative to `run_dir`
(what `regctl resolve` names for inference) and the presence of `external_model_path` must
be the directory's; their absolute values may differ between machines.

`compare` is pure; `prove` reads through the ports only.
"""

from __future__ import annotations

import hashlib
import math
import os
import posixpath
import sys
import tempfile
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Final, Protocol

from regctl.core.model import LEDGER_MODEL, LEDGER_TAG_PREFIX, RunRef
from regctl.core.runs import PATH_PARAMS, RunRecord, relative_inside
from regctl.errors import AlreadyExists
from regctl.ports import ArtifactInfo, ArtifactReader, RegistryReader, RunData

MAX_SHOWN: Final = 4
"""Differences named in one message; the rest are counted."""

_MLFLOW_INF: Final = sys.float_info.max
"""What MLflow's SQL stores keep for +-Infinity (measured on 3.17: -inf -> -1.797e308)."""


class ProofReader(RegistryReader, ArtifactReader, Protocol):
    """Run data plus artifact listing and download."""


@dataclass(frozen=True, slots=True)
class Proof:
    """The verdict on one (experiment, run name) that a run directory claims.

    `proven` says the run's content equals the directory's (for an unfinished run: is a
    consistent part of it). `differences` say what differs when it is not proven;
    `recorded` says the ledger already vouches for this run with the directory's digest;
    `present` lists the artifact files the run holds (path -> size) when they were
    listed (sync resumes an unfinished run by uploading the rest); `downloaded` says the
    proof hashed the run's files itself.
    """

    experiment: str
    run_name: str
    run_id: str
    finished: bool
    digest: str
    proven: bool
    differences: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    recorded: bool = False
    present: Mapping[str, int] | None = None
    downloaded: bool = False
    """The files were downloaded and hashed now (not vouched for by the ledger)."""

    def message(self, run_dir: str) -> str:
        """One line: which run, which directory, what differs."""
        shown = list(self.differences[:MAX_SHOWN])
        more = len(self.differences) - len(shown)
        if more > 0:
            shown.append(f"and {more} more difference{'s' if more > 1 else ''}")
        return (
            f"run {self.run_id} named {self.run_name!r} in experiment {self.experiment!r} "
            f"is not the run of {run_dir}: " + "; ".join(shown) + " (a logged run is never "
            "changed: restore the directory, or remove that run if it is not this directory's)"
        )


def same_metric(a: float, b: float) -> bool:
    """Equal metric values as MLflow keeps them (NaN == NaN, Infinity == 1.797e308)."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if abs(a) >= _MLFLOW_INF or abs(b) >= _MLFLOW_INF:
        return abs(a) >= _MLFLOW_INF and abs(b) >= _MLFLOW_INF and (a > 0) == (b > 0)
    return a == b


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def compare(
    record: RunRecord,
    logged: RunData,
    artifacts: Mapping[str, tuple[int, str | None]] | None,
    *,
    finished: bool,
) -> tuple[list[str], list[str]]:
    """(differences, warnings) between a run directory and a logged run.

    `artifacts` maps the run's file paths to (size, sha256 or None when not hashed); None
    skips the file comparison (params and metrics only). A finished run must hold exactly
    the directory's params, metrics and files; an unfinished one only a consistent part.
    """
    mine, theirs = record.params, logged.params
    differences = _model_file_differences(mine, theirs, finished=finished)
    param_differences, warnings = _param_differences(mine, theirs, finished=finished)
    differences.extend(param_differences)
    differences.extend(_metric_differences(record.metrics, logged.metrics, finished=finished))
    if artifacts is not None:
        differences.extend(_file_differences(record, artifacts, finished=finished))
    return differences, warnings


def _param_differences(
    mine: Mapping[str, str], theirs: Mapping[str, str], *, finished: bool
) -> tuple[list[str], list[str]]:
    """(differences, warnings) between the directory's params and the run's."""
    differences: list[str] = []
    warnings: list[str] = []
    for key in sorted(set(mine) | set(theirs)):
        old, new = theirs.get(key), mine.get(key)
        if old == new:
            continue
        if key in PATH_PARAMS:
            if old is not None and new is not None:
                warnings.append(
                    f"param {key!r}: logged {old!r}, directory has {new!r} (path params "
                    "differ between machines)"
                )
            continue
        if old is None:
            if finished:
                differences.append(f"param {key!r} is missing from the run")
        elif new is None:
            differences.append(f"param {key!r} = {_short(old)} is not the directory's")
        else:
            differences.append(f"param {key!r}: run has {_short(old)}, directory has {_short(new)}")
    return differences, warnings


def _metric_differences(
    mine: Mapping[str, float], theirs: Mapping[str, float], *, finished: bool
) -> list[str]:
    """How the run's metrics differ from the directory's (see `same_metric`)."""
    differences: list[str] = []
    for key in sorted(set(mine) | set(theirs)):
        a, b = theirs.get(key), mine.get(key)
        if a is None:
            if finished:
                differences.append(f"metric {key!r} is missing from the run")
        elif b is None:
            differences.append(f"metric {key!r} = {a!r} is not the directory's")
        elif not same_metric(a, b):
            differences.append(f"metric {key!r}: run has {a!r}, directory has {b!r}")
    return differences


def _file_differences(
    record: RunRecord, artifacts: Mapping[str, tuple[int, str | None]], *, finished: bool
) -> list[str]:
    """How the run's artifact files differ from the directory's: paths, sizes, digests."""
    differences: list[str] = []
    files = {f.rel_path: f for f in record.files}
    for path in sorted(set(files) | set(artifacts)):
        f = files.get(path)
        if path not in artifacts:
            if finished and f is not None:
                differences.append(f"file {_short(path)} is missing from the run")
            continue
        size, sha = artifacts[path]
        if f is None:
            differences.append(f"file {_short(path)} is in the run, not in the directory")
        elif size >= 0 and size != f.size:
            differences.append(
                f"file {_short(path)}: {size} bytes in the run, {f.size} in the directory"
            )
        elif sha is not None and sha != f.sha256:
            differences.append(
                f"file {_short(path)}: sha256 {sha[:12]}... in the run, "
                f"{f.sha256[:12]}... in the directory"
            )
    return differences


def _model_file(params: Mapping[str, str]) -> str | None:
    """Where `model_path` points relative to `run_dir` (what inference downloads as the
    model), "outside" for a model kept outside the run directory, None when absent."""
    given, run_dir = params.get("model_path"), params.get("run_dir")
    if given is None:
        return None
    if not posixpath.isabs(given):
        return relative_inside(posixpath.join("/r", given), "/r") or "outside"
    return (relative_inside(given, run_dir) if run_dir else None) or "outside"


def _model_file_differences(
    mine: Mapping[str, str], theirs: Mapping[str, str], *, finished: bool
) -> list[str]:
    """Path params differ between machines, but which file is the model does not: it is
    what `regctl resolve` names for inference, so it must be the directory's."""
    out = []
    if finished or "model_path" in theirs:
        a, b = _model_file(theirs), _model_file(mine)
        if a != b:
            out.append(
                f"the model file (model_path relative to run_dir) is {a or 'absent'!r} in the "
                f"run, {b or 'absent'!r} in the directory"
            )
    if (finished or "external_model_path" in theirs) and (
        ("external_model_path" in theirs) != ("external_model_path" in mine)
    ):
        out.append("external_model_path is set on one side only")
    return out


def _hash_download(reader: ArtifactReader, run: RunRef, path: str, folder: str) -> tuple[int, str]:
    dest = os.path.join(folder, hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest())
    reader.download_artifact_file(run, path, dest)
    h = hashlib.sha256()
    size = 0
    try:
        with open(dest, "rb") as handle:
            while chunk := handle.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
    finally:
        os.unlink(dest)
    return size, h.hexdigest()


def prove_one(
    experiment: str,
    record: RunRecord,
    data: RunData,
    reader: ArtifactReader,
    ledger: Mapping[str, str],
    *,
    known: Mapping[str, str] | None = None,
    workers: int = 1,
    trust_ledger: bool = True,
) -> Proof:
    """Prove (or refute) that the logged run `data` is the run of `record`.

    `ledger` is what the registry records; `known` holds digests this process hashed
    already (apply proves, plans again under the lease and syncs: one download, not
    three). With `trust_ledger` False the files are hashed even when the ledger vouches.
    """
    ref = data.ref
    finished = ref.status == "FINISHED"
    digest = record.digest
    base = Proof(experiment, record.run_name, ref.run_id, finished, digest, proven=False)
    differences, warnings = compare(record, data, None, finished=finished)
    if differences:
        return replace(base, differences=tuple(differences), warnings=tuple(warnings))
    recorded = ledger.get(ref.run_id) == digest
    if finished and (known or {}).get(ref.run_id) == digest:  # hashed by this process
        return replace(base, proven=True, warnings=tuple(warnings), recorded=recorded)
    if finished and recorded and trust_ledger:
        return replace(base, proven=True, warnings=tuple(warnings), recorded=True)
    listing: Sequence[ArtifactInfo] = reader.list_artifact_tree(ref, "")
    sizes = {a.path: (a.size, None) for a in listing}
    differences, _ = compare(record, data, sizes, finished=finished)
    present = {a.path: a.size for a in listing}
    if differences:  # names or sizes differ: no need to download anything
        return replace(
            base, differences=tuple(differences), warnings=tuple(warnings), present=present
        )
    hashed: dict[str, tuple[int, str | None]] = {}
    with tempfile.TemporaryDirectory(prefix="regctl-proof-") as folder:
        paths = [a.path for a in listing]
        if workers > 1 and len(paths) > 1:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(lambda p: _hash_download(reader, ref, p, folder), paths))
        else:
            results = [_hash_download(reader, ref, p, folder) for p in paths]
    for path, (size, sha) in zip(paths, results, strict=True):
        hashed[path] = (size, sha)
    differences, _ = compare(record, data, hashed, finished=finished)
    return replace(
        base,
        proven=not differences,
        differences=tuple(differences),
        warnings=tuple(warnings),
        recorded=recorded,
        present=present,
        downloaded=True,
    )


def prove(
    claims: Sequence[tuple[str, RunRecord]],
    found: Mapping[tuple[str, str], RunRef],
    reader: ProofReader,
    ledger: Mapping[str, str],
    *,
    known: dict[str, str] | None = None,
    workers: int = 1,
    trust_ledger: bool = True,
) -> dict[tuple[str, str], Proof]:
    """A proof for every (experiment, run record) whose run name is logged in `found`.

    Params and metrics come from one batched run read (usually cached by the run search
    that found them); files are listed and downloaded only when neither the ledger nor
    `known` (digests this process hashed; runs it hashes and proves are added to it)
    vouches for the run with the directory's digest. `trust_ledger` False ignores the
    ledger: for the runs a plan registers or promotes (anyone who may tag registered
    models can write a ledger entry, so an entry only saves downloads for runs whose
    versions already hold what the manifests say).
    """
    wanted = [
        (exp, rec, found[(exp, rec.run_name)])
        for exp, rec in claims
        if (exp, rec.run_name) in found
    ]
    data = reader.run_data(sorted({ref.run_id for *_, ref in wanted}))
    out: dict[tuple[str, str], Proof] = {}
    for exp, rec, ref in wanted:
        logged = data.get(ref.run_id)
        if logged is None:  # deleted between the search and now: nothing to prove
            continue
        proof = prove_one(
            exp,
            rec,
            logged,
            reader,
            ledger,
            known=known,
            workers=workers,
            trust_ledger=trust_ledger,
        )
        out[(exp, rec.run_name)] = proof
        if known is not None and proof.proven and proof.finished and proof.downloaded:
            known[proof.run_id] = proof.digest
    return out


def digests_of(proofs: Collection[Proof]) -> dict[str, str]:
    """Run id -> digest of the proven, finished runs that the ledger does not record yet."""
    return {p.run_id: p.digest for p in proofs if p.proven and p.finished and not p.recorded}


LEDGER_DESCRIPTION: Final = (
    "regctl's ledger of proven runs: each tag regctl.proven.<run id> holds the content digest "
    "regctl verified for that run (params, metrics and every file equal to its run directory). "
    "Written by regctl sync; do not edit. Deleting tags only makes regctl verify those runs again."
)


class LedgerWriter(Protocol):
    """The registry writes the ledger needs."""

    def create_model(self, name: str, description: str | None, tags: Mapping[str, str]) -> None: ...

    def set_model_tag(self, name: str, key: str, value: str) -> None: ...


def record(writer: LedgerWriter, entries: Mapping[str, str]) -> None:
    """Add run id -> digest entries to the ledger model, creating it on first use.

    The create comes first: with MLflow's auth app, setting a tag on a model that does not
    exist is refused as "permission denied", not "does not exist"."""
    items = sorted(entries.items())
    if not items:
        return
    try:
        writer.create_model(
            LEDGER_MODEL, LEDGER_DESCRIPTION, {LEDGER_TAG_PREFIX + k: v for k, v in items}
        )
        return
    except AlreadyExists:
        pass
    for key, value in items:
        writer.set_model_tag(LEDGER_MODEL, LEDGER_TAG_PREFIX + key, value)
