"""Content digests (issue 16): the pure part, as tables, no server.

`version_tree` picks a version's files out of its run's by artifact path; the per-file
record is believed only when it hashes to the digest; `content_changes` records new and
adopted versions from their run directory, and refuses a pin or a record the content
contradicts, naming the manifest field.
"""

from __future__ import annotations

import hashlib

import pytest

from regctl.core.digests import (
    DIGEST_TAG,
    FILES_TAG_LIMIT,
    content_changes,
    differences,
    digest_of,
    files_record,
    parse_files_record,
    version_tree,
)
from regctl.core.model import DesiredModel, DesiredVersion, ObservedModel, ObservedVersion
from regctl.core.plan import Binding, Change, CreateVersion, RecordDigest
from regctl.core.runs import RunFile, tree_digest
from regctl.errors import Location, Problem


def rf(path: str, body: bytes) -> RunFile:
    return RunFile(path, len(body), hashlib.sha256(body).hexdigest())


FILES = (
    rf("metrics.json", b"{}"),
    rf("model/model.txt", b"tree"),
    rf("model/sub/x.bin", b"\x00"),
    rf("modelling.txt", b"not the model folder"),
    rf("pipeline_config.json", b"{}"),
)


@pytest.mark.parametrize(
    ("artifact_path", "paths"),
    [
        ("", ["metrics.json", "model/model.txt", "model/sub/x.bin", "modelling.txt",
              "pipeline_config.json"]),
        ("model", ["model.txt", "sub/x.bin"]),
        ("model/", ["model.txt", "sub/x.bin"]),
        ("model/model.txt", ["model.txt"]),  # a file source: the file, by its name
        ("absent", []),
    ],
)  # fmt: skip
def test_version_tree_takes_the_files_under_the_source(
    artifact_path: str, paths: list[str]
) -> None:
    assert [p for p, _, _ in version_tree(FILES, artifact_path)] == paths


def test_the_digest_of_the_whole_root_is_the_run_directory_digest() -> None:
    tree = version_tree(FILES, "")
    assert digest_of(tree) == tree_digest((f.rel_path, f.size, f.sha256) for f in FILES)


def test_the_files_record_is_believed_only_when_it_hashes_to_the_digest() -> None:
    tree = version_tree(FILES, "")
    record = files_record(tree)
    assert record is not None
    digest = digest_of(tree)
    assert parse_files_record(record, digest) == tree
    forged = record.replace(tree[0][2], "0" * 64)
    assert parse_files_record(forged, digest) is None
    for bad in ("", "x", record.rstrip("\n"), record + record, "a" * 64 + " 01 p\n"):
        assert parse_files_record(bad, digest) is None, bad


def test_a_record_over_one_tag_keeps_the_digest_only() -> None:
    many = tuple(
        rf(f"shard-{i:05d}/part.bin", str(i).encode()) for i in range(FILES_TAG_LIMIT // 80)
    )
    tree = version_tree(many, "")
    assert files_record(tree) is None
    assert digest_of(tree).startswith("sha256:")


def test_differences_name_each_file() -> None:
    a = version_tree(FILES, "model")
    b = (("model.txt", 4, "f" * 64), ("new.txt", 1, "e" * 64))
    assert differences(a, b) == [
        f"model.txt: sha256 {'f' * 64} found, {a[0][2]} recorded",
        "new.txt: not in the record (extra file)",
        f"sub/x.bin: missing (recorded sha256 {a[1][2]})",
    ]


# ---- content_changes -----------------------------------------------------------------------

LOC = Location("manifests/m.yaml", 7, 5)


def entry(*, digest: str | None = None, run_dir: str | None = "runs/r1") -> DesiredVersion:
    return DesiredVersion(
        index=0,
        location=LOC,
        run="r1",
        run_id=None,
        run_dir=run_dir,
        artifact_path="",
        artifact_path_given=False,
        version=None,
        description=None,
        aliases=(),
        digest=digest,
    )


def model_of(v: DesiredVersion) -> DesiredModel:
    return DesiredModel(
        name="m",
        location=LOC,
        description=None,
        experiment="e",
        tags={},
        prune=False,
        versions=(v,),
    )


def observed(tags: dict[str, str]) -> ObservedModel:
    version = ObservedVersion(1, "rid", "runs:/rid", "", tags)
    return ObservedModel("m", "", {}, {}, {1: version})


DIGEST = digest_of(version_tree(FILES, ""))
OTHER = "sha256:" + "0" * 64


def run(
    v: DesiredVersion, current: ObservedModel | None, created: bool
) -> tuple[list[Change], list[Change], list[Problem]]:
    changes: list[Change] = []
    if created:
        changes.append(CreateVersion(model="m", entry=0, run_name="r1", expected_version=1))
    problems: list[Problem] = []
    binding = Binding("m", 0, 1, None if created else "rid", created)
    out = content_changes(
        model_of(v), current, {0: binding}, changes, {("e", "r1"): FILES}, problems
    )
    return changes, out, problems


def test_a_new_version_carries_the_run_directory_digest() -> None:
    changes, out, problems = run(entry(), None, True)
    [create] = changes
    assert isinstance(create, CreateVersion)
    assert create.digest == DIGEST and create.files == files_record(version_tree(FILES, ""))
    assert out == [] and problems == []


def test_no_run_directory_no_record() -> None:
    changes, out, problems = run(entry(run_dir=None), None, True)
    assert isinstance(changes[0], CreateVersion) and changes[0].digest is None
    assert out == [] and problems == []


def test_an_adopted_version_without_a_record_gets_one() -> None:
    _, out, problems = run(entry(), observed({}), False)
    assert problems == []
    assert out == [RecordDigest("m", 1, DIGEST, files_record(version_tree(FILES, "")))]


def test_an_adopted_version_with_the_same_record_changes_nothing() -> None:
    assert run(entry(), observed({DIGEST_TAG: DIGEST}), False)[1:] == ([], [])


@pytest.mark.parametrize(
    ("v", "tags", "created", "field", "needle"),
    [
        (entry(digest=OTHER), {}, True, "versions[0].digest", "the run directory's files give"),
        (entry(digest=OTHER), {DIGEST_TAG: DIGEST}, False, "versions[0].digest",
         "the registry records"),
        (entry(digest=DIGEST, run_dir=None), {}, False, "versions[0].digest",
         "nothing to check it against"),
        (entry(), {DIGEST_TAG: OTHER}, False, "versions[0].run_dir", "changed after it was made"),
        (entry(), {DIGEST_TAG: "sha256:<script>"}, False, "versions[0].digest", "malformed"),
    ],
)  # fmt: skip
def test_a_contradicted_pin_or_record_is_a_problem_at_its_field(
    v: DesiredVersion, tags: dict[str, str], created: bool, field: str, needle: str
) -> None:
    _, out, problems = run(v, None if created else observed(tags), created)
    assert [p.field for p in problems] == [field]
    assert needle in problems[0].message and problems[0].location == LOC
    assert out == []


def test_a_matching_pin_passes() -> None:
    assert run(entry(digest=DIGEST), None, True)[2] == []
    assert run(entry(digest=DIGEST, run_dir=None), observed({DIGEST_TAG: DIGEST}), False)[2] == []
