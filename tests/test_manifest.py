"""Tests of the strict manifest loader (regctl.adapters.manifests, regctl.adapters.yamlfile).

Small literal manifests in tmp_path; every refusal is checked for its exact
`file:line:col` and field path, because that is what a reviewer acts on. The last
tests drive the CLI, one of them against the real MLflow server, to show that nothing
is written while any manifest is invalid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from regctl.adapters.manifests import load_manifests
from regctl.adapters.yamlfile import MAX_DEPTH, MAX_FILE_BYTES
from regctl.core.model import DesiredState
from regctl.errors import InputError, Problem

from conftest import Backend, Recorder, write_manifest

CLI = Callable[..., tuple[int, str, str]]

HEAD = "apiVersion: regctl/v1\nkind: RegisteredModel\n"
"""Lines 1-2 of every manifest below; `name:` is line 3."""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "manifests").mkdir(parents=True)
    return root


def put(repo: Path, name: str, body: str) -> Path:
    """Write `manifests/<name>.yaml` as HEAD + body, byte for byte (no dedent)."""
    path = repo / "manifests" / f"{name}.yaml"
    path.write_text(HEAD + body, encoding="utf-8")
    return path


def problems(repo: Path) -> list[Problem]:
    with pytest.raises(InputError) as caught:
        load_manifests(repo)
    found = list(caught.value.problems)
    assert found, "InputError without problems"
    return found


def shown(found: list[Problem]) -> str:
    return "\n".join(str(p) for p in found)


def only_problem(repo: Path, where: str, field: str, *words: str) -> Problem:
    """Exactly one problem, at `where` (file:line:col), about `field`, mentioning `words`."""
    found = problems(repo)
    assert len(found) == 1, shown(found)
    p = found[0]
    assert str(p.location) == where, shown(found)
    assert p.field == field, shown(found)
    prefix = f"{where}: {field}: " if field else f"{where}: "
    assert str(p).startswith(prefix), shown(found)
    for word in words:
        assert word.lower() in p.message.lower(), shown(found)
    return p


def loads(repo: Path) -> DesiredState:
    return load_manifests(repo)


# -- strict schema: unknown and duplicate keys ---------------------------------------


def test_unknown_top_level_key(repo: Path) -> None:
    put(repo, "m", "name: m\nowner: me\n")
    only_problem(repo, "manifests/m.yaml:4:1", "owner", "unknown")


def test_unknown_key_inside_a_version_entry(repo: Path) -> None:
    put(repo, "m", "name: m\nexperiment: e\nversions:\n  - run: r1\n    alias: [Production]\n")
    only_problem(repo, "manifests/m.yaml:7:5", "versions[0].alias", "unknown")


@pytest.mark.parametrize(
    ("body", "where", "field"),
    [
        # a key named like a pydantic union branch ("none", "str", "int") is still a key
        ("name: m\nnone: x\n", "manifests/m.yaml:4:1", "none"),
        ("name: m\nstr: x\n", "manifests/m.yaml:4:1", "str"),
        (
            "name: m\nversions:\n  - run_id: abc\n    int: 3\n",
            "manifests/m.yaml:6:5",
            "versions[0].int",
        ),
        ("name: m\nlabels[0]: x\n", "manifests/m.yaml:4:1", "labels[0]"),
    ],
    ids=["none", "str", "int", "brackets"],
)
def test_unknown_key_is_named_whatever_its_spelling(
    repo: Path, body: str, where: str, field: str
) -> None:
    put(repo, "m", body)
    only_problem(repo, where, field, "unknown")


def test_tag_key_spelled_like_a_type_keeps_its_path(repo: Path) -> None:
    put(repo, "m", "name: m\ntags: {int: 1}\n")
    only_problem(repo, "manifests/m.yaml:4:13", "tags.int", "quote it")


@pytest.mark.parametrize(
    ("body", "where", "field", "first_line"),
    [
        ("name: m\ndescription: one\nname: m2\n", "manifests/m.yaml:5:1", "name", 3),
        ("name: m\ntags:\n  owner: a\n  owner: b\n", "manifests/m.yaml:6:3", "tags.owner", 5),
        (
            "name: m\nversions:\n  - run_id: abc\n    run_id: def\n",
            "manifests/m.yaml:6:5",
            "versions[0].run_id",
            5,
        ),
        # quoting does not make a second key
        ("name: m\n'name': m2\n", "manifests/m.yaml:4:1", "name", 3),
    ],
    ids=["top", "tags", "version", "quoted"],
)
def test_duplicate_key(repo: Path, body: str, where: str, field: str, first_line: int) -> None:
    put(repo, "m", body)
    only_problem(repo, where, field, "duplicate", f"line {first_line}")


# -- YAML features that are refused -----------------------------------------------------


def test_yaml_anchor(repo: Path) -> None:
    put(repo, "m", "name: m\nexperiment: &exp e\n")
    only_problem(repo, "manifests/m.yaml:4:13", "experiment", "anchor", "&exp")


@pytest.mark.parametrize(
    ("body", "where", "field"),
    [
        ("name: m\ndescription: *exp\n", "manifests/m.yaml:4:14", "description"),
        ("name: m\nversions:\n  - *entry\n", "manifests/m.yaml:5:5", "versions[0]"),
    ],
    ids=["value", "list-item"],
)
def test_yaml_alias(repo: Path, body: str, where: str, field: str) -> None:
    put(repo, "m", body)
    only_problem(repo, where, field, "alias")


def test_merge_key(repo: Path) -> None:
    put(repo, "m", "name: m\n<<: {experiment: e}\n")
    only_problem(repo, "manifests/m.yaml:4:1", "", "<<")


def test_python_object_tag_is_refused_and_never_constructed(repo: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    put(repo, "m", f'name: m\ndescription: !!python/object/apply:os.system ["touch {marker}"]\n')
    only_problem(repo, "manifests/m.yaml:4:14", "description", "tag", "python/object")
    assert not marker.exists()


def test_python_object_tag_on_the_name(repo: Path) -> None:
    put(repo, "m", "name: !!python/object:regctl.model.DesiredState {}\n")
    only_problem(repo, "manifests/m.yaml:3:7", "name", "tag", "python/object")


# -- apiVersion and kind ----------------------------------------------------------------


def test_wrong_api_version(repo: Path) -> None:
    (repo / "manifests" / "m.yaml").write_text(
        "apiVersion: regctl/v2\nkind: RegisteredModel\nname: m\n", encoding="utf-8"
    )
    only_problem(repo, "manifests/m.yaml:1:13", "apiVersion", "regctl/v1", "regctl/v2")


def test_missing_api_version(repo: Path) -> None:
    (repo / "manifests" / "m.yaml").write_text("kind: RegisteredModel\nname: m\n", encoding="utf-8")
    only_problem(repo, "manifests/m.yaml:1:1", "apiVersion", "missing")


def test_wrong_kind(repo: Path) -> None:
    (repo / "manifests" / "m.yaml").write_text(
        "apiVersion: regctl/v1\nkind: Policy\nname: m\n", encoding="utf-8"
    )
    only_problem(repo, "manifests/m.yaml:2:7", "kind", "RegisteredModel", "Policy")


# -- how a version names its run ----------------------------------------------------------


def test_version_without_run_or_run_id(repo: Path) -> None:
    put(repo, "m", "name: m\nexperiment: e\nversions:\n  - description: no run\n")
    only_problem(repo, "manifests/m.yaml:6:5", "versions[0]", "`run`", "`run_id`")


def test_version_with_both_run_and_run_id(repo: Path) -> None:
    put(repo, "m", "name: m\nexperiment: e\nversions:\n  - run: r1\n    run_id: 0123abcd\n")
    only_problem(repo, "manifests/m.yaml:7:5", "versions[0].run_id", "not both")


def test_run_name_without_experiment(repo: Path) -> None:
    put(repo, "m", "name: m\nversions:\n  - run: r1\n")
    only_problem(repo, "manifests/m.yaml:5:5", "versions[0].run", "experiment")


def test_run_id_that_is_not_an_id(repo: Path) -> None:
    put(repo, "m", "name: m\nversions:\n  - run_id: 'not an id'\n")
    only_problem(repo, "manifests/m.yaml:5:13", "versions[0].run_id", "not a run id")


# -- aliases ------------------------------------------------------------------------------


ALIAS_BODY = "name: m\nexperiment: e\nversions:\n  - run: r1\n    aliases: [{alias}]\n"
"""The alias scalar starts at line 7, column 15."""


def test_alias_used_twice_in_one_model(repo: Path) -> None:
    put(
        repo,
        "m",
        "name: m\nexperiment: e\nversions:\n"
        "  - run: r1\n    aliases: [Production]\n"
        "  - run: r2\n    aliases: [Staging, Production]\n",
    )
    only_problem(repo, "manifests/m.yaml:9:24", "versions[1].aliases[1]", "'Production'", "line 7")


def test_alias_repeated_on_one_entry(repo: Path) -> None:
    put(repo, "m", ALIAS_BODY.format(alias="Staging, Staging"))
    only_problem(repo, "manifests/m.yaml:7:24", "versions[0].aliases[1]", "'Staging'")


@pytest.mark.parametrize(
    ("alias", "words"),
    [
        ("latest", ("reserved",)),
        ("Latest", ("reserved",)),
        ("LATEST", ("reserved",)),
        ("v3", ("reserved",)),
        ("V3", ("reserved",)),  # MLflow's version-alias pattern is ^[vV]\d+$
        ("v10", ("reserved",)),
        ("'two words'", ("letters",)),
        ("'a/b'", ("letters",)),
        ("'a.b'", ("letters",)),
        ("a" * 256, ("255",)),
        ("''", ()),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 20 else None,
)
def test_alias_names_mlflow_rejects(repo: Path, alias: str, words: tuple[str, ...]) -> None:
    put(repo, "m", ALIAS_BODY.format(alias=alias))
    only_problem(repo, "manifests/m.yaml:7:15", "versions[0].aliases[0]", *words)


@pytest.mark.parametrize("alias", ["Production", "v", "v3a", "version3", "_-", "a" * 255])
def test_alias_names_mlflow_accepts(repo: Path, alias: str) -> None:
    put(repo, "m", ALIAS_BODY.format(alias=alias))
    (model,) = loads(repo).models
    assert model.versions[0].aliases == (alias,)


@pytest.mark.parametrize(
    ("body", "where", "field"),
    [
        (ALIAS_BODY.format(alias='"Prod\\n"'), "manifests/m.yaml:7:15", "versions[0].aliases[0]"),
        (
            'name: m\nversions:\n  - run_id: "abc\\n"\n',
            "manifests/m.yaml:5:13",
            "versions[0].run_id",
        ),
    ],
    ids=["alias", "run_id"],
)
def test_trailing_newline_does_not_pass_the_name_pattern(
    repo: Path, body: str, where: str, field: str
) -> None:
    # `$` matches before a final newline: the patterns must match the whole string
    put(repo, "m", body)
    only_problem(repo, where, field)


def test_aliases_that_differ_only_in_case(repo: Path) -> None:
    put(
        repo,
        "m",
        "name: m\nexperiment: e\nversions:\n"
        "  - run: r1\n    aliases: [Production]\n"
        "  - run: r2\n    aliases: [production]\n",
    )
    only_problem(repo, "manifests/m.yaml:9:15", "versions[1].aliases[0]", "case", "'Production'")


# -- names across files -------------------------------------------------------------------


def test_model_names_that_differ_only_in_case_across_files(repo: Path) -> None:
    put(repo, "a", "name: Churn\n")
    put(repo, "b", "name: churn\n")
    only_problem(repo, "manifests/b.yaml:3:7", "name", "case", "manifests/a.yaml:3")


def test_same_model_name_in_two_files(repo: Path) -> None:
    put(repo, "a", "name: churn\n")
    put(repo, "b", "name: churn\n")
    only_problem(repo, "manifests/b.yaml:3:7", "name", "already", "manifests/a.yaml:3")


def test_duplicate_name_is_reported_even_when_that_file_has_another_problem(
    repo: Path,
) -> None:
    put(repo, "a", "name: churn\n")
    put(repo, "b", ALIAS_BODY.format(alias="latest").replace("name: m", "name: churn"))
    found = problems(repo)
    rendered = [str(p) for p in found]
    assert any(r.startswith("manifests/b.yaml:7:15: versions[0].aliases[0]: ") for r in rendered), (
        shown(found)
    )
    assert any(r.startswith("manifests/b.yaml:3:7: name: ") for r in rendered), shown(found)


# -- version entries that collide ---------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "where", "words"),
    [
        ("  - run: r1\n  - run: r1\n", "manifests/m.yaml:7:5", ("r1", "versions[0]")),
        (
            "  - run: r1\n    artifact_path: model\n  - run: r1\n    artifact_path: model\n",
            "manifests/m.yaml:8:5",
            ("'model'", "versions[0]"),
        ),
        # "model/" and "model" are the same artifact path
        (
            "  - run: r1\n    artifact_path: model\n  - run: r1\n    artifact_path: model/\n",
            "manifests/m.yaml:8:5",
            ("'model'", "versions[0]"),
        ),
        # an explicit '' is the default, the run's whole artifact root
        (
            "  - run: r1\n    artifact_path: ''\n  - run: r1\n",
            "manifests/m.yaml:8:5",
            ("r1", "versions[0]"),
        ),
        ("  - run_id: abc\n  - run_id: abc\n", "manifests/m.yaml:7:5", ("abc", "versions[0]")),
    ],
    ids=["run", "same-path", "trailing-slash", "empty-path", "run_id"],
)
def test_same_run_and_artifact_path_declared_twice(
    repo: Path, entries: str, where: str, words: tuple[str, ...]
) -> None:
    put(repo, "m", "name: m\nexperiment: e\nversions:\n" + entries)
    only_problem(repo, where, "versions[1]", *words)


def test_same_run_with_different_artifact_paths_is_two_versions(repo: Path) -> None:
    put(
        repo,
        "m",
        "name: m\nexperiment: e\nversions:\n  - run: r1\n  - run: r1\n    artifact_path: model\n",
    )
    (model,) = loads(repo).models
    assert [(v.run, v.artifact_path) for v in model.versions] == [("r1", ""), ("r1", "model")]


def test_version_pin_colliding_with_another_entry(repo: Path) -> None:
    put(
        repo,
        "m",
        "name: m\nexperiment: e\nversions:\n"
        "  - run: r1\n    version: 2\n  - run: r2\n    version: 2\n",
    )
    only_problem(repo, "manifests/m.yaml:9:14", "versions[1].version", "versions[0]")


@pytest.mark.parametrize("pin", ["0", "-1", "'3'", "three", "1.0", "true", "[1]"])
def test_version_pin_must_be_a_positive_integer(repo: Path, pin: str) -> None:
    put(repo, "m", f"name: m\nexperiment: e\nversions:\n  - run: r1\n    version: {pin}\n")
    only_problem(repo, "manifests/m.yaml:7:14", "versions[0].version")


# -- YAML 1.1 surprises and non-string names ----------------------------------------------


@pytest.mark.parametrize(
    ("body", "where", "field", "words"),
    [
        ("name: 017\n", "manifests/m.yaml:3:7", "name", ("'017'", "quote it")),
        (
            "name: m\ndescription: 1.10\n",
            "manifests/m.yaml:4:14",
            "description",
            ("'1.10'", "quote it"),
        ),
        ("name: true\n", "manifests/m.yaml:3:7", "name", ("boolean", "quote it")),
        ("name: False\n", "manifests/m.yaml:3:7", "name", ("boolean", "quote it")),
        ("name: 42\n", "manifests/m.yaml:3:7", "name", ("integer", "quote it")),
        ("name: .nan\n", "manifests/m.yaml:3:7", "name", ("quote it",)),
        (
            "name: m\nexperiment: 2024-01-01\n",
            "manifests/m.yaml:4:13",
            "experiment",
            ("date", "quote it"),
        ),
        ("name: m\ntags: {priority: 1}\n", "manifests/m.yaml:4:18", "tags.priority", ("quote it",)),
        ("name: [a, b]\n", "manifests/m.yaml:3:7", "name", ("string", "list")),
        ("name: {a: b}\n", "manifests/m.yaml:3:7", "name", ("string", "mapping")),
        ("name: ''\n", "manifests/m.yaml:3:7", "name", ()),
    ],
    ids=[
        "017",
        "1.10",
        "true",
        "False",
        "42",
        "nan",
        "date",
        "tag-value",
        "list",
        "mapping",
        "empty",
    ],
)
def test_values_that_are_not_strings(
    repo: Path, body: str, where: str, field: str, words: tuple[str, ...]
) -> None:
    put(repo, "m", body)
    only_problem(repo, where, field, *words)


@pytest.mark.parametrize("word", ["yes", "no", "on", "off", "y", "n"])
def test_yaml_1_1_booleans_are_strings(repo: Path, word: str) -> None:
    put(repo, "m", f"name: {word}\n")
    (model,) = loads(repo).models
    assert model.name == word


@pytest.mark.parametrize(
    ("body", "where", "field"),
    [
        # `name:` with nothing after it is on line 3, not on the line that follows
        ("name:\nexperiment: e\n", "manifests/m.yaml:3", "name"),
        ("name: m\nversions:\nexperiment: e\n", "manifests/m.yaml:4", "versions"),
    ],
    ids=["name", "versions"],
)
def test_empty_value_is_located_on_its_own_line(
    repo: Path, body: str, where: str, field: str
) -> None:
    put(repo, "m", body)
    found = problems(repo)
    assert len(found) == 1, shown(found)
    assert str(found[0]).startswith(f"{where}:"), shown(found)
    assert found[0].field == field, shown(found)


def test_regctl_tag_keys_are_reserved(repo: Path) -> None:
    put(repo, "m", 'name: m\ntags:\n  owner: me\n  regctl.managed: "false"\n')
    only_problem(repo, "manifests/m.yaml:6:3", "tags.regctl.managed", "regctl.")


# -- run_dir ------------------------------------------------------------------------------


def test_run_dir_that_does_not_exist(repo: Path) -> None:
    put(repo, "m", "name: m\nexperiment: e\nversions:\n  - run: r1\n    run_dir: runs/r1\n")
    only_problem(repo, "manifests/m.yaml:7:14", "versions[0].run_dir", "runs/r1")


def test_run_dir_named_differently_from_the_run(repo: Path) -> None:
    (repo / "runs" / "other").mkdir(parents=True)
    put(repo, "m", "name: m\nexperiment: e\nversions:\n  - run: r1\n    run_dir: runs/other\n")
    only_problem(repo, "manifests/m.yaml:7:14", "versions[0].run_dir", "'other'", "'r1'")


def test_run_dir_with_spaces_and_commas(repo: Path) -> None:
    run = "run_20251008_145809_lgbm_y_logret_168h_huber"
    (repo / "examples" / "runs" / "BINANCE_BTCUSDT.P, 60" / run).mkdir(parents=True)
    put(
        repo,
        "m",
        f"name: m\nexperiment: e\nversions:\n  - run: {run}\n"
        f"    run_dir: examples/runs/BINANCE_BTCUSDT.P, 60/{run}\n",
    )
    (model,) = loads(repo).models
    assert model.versions[0].run_dir == f"examples/runs/BINANCE_BTCUSDT.P, 60/{run}"


# -- file-level problems ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ("name: m\n  bad: indent\n", "manifests/m.yaml:4:6"),
        ("name: m\ntags:\n\towner: me\n", "manifests/m.yaml:5:1"),
    ],
    ids=["indent", "tab"],
)
def test_invalid_yaml_syntax(repo: Path, body: str, where: str) -> None:
    put(repo, "m", body)
    only_problem(repo, where, "", "invalid YAML")


@pytest.mark.parametrize(
    "text", ["", "\n\n", "# only a comment\n"], ids=["empty", "blank", "comment"]
)
def test_empty_file(repo: Path, text: str) -> None:
    (repo / "manifests" / "m.yaml").write_text(text, encoding="utf-8")
    only_problem(repo, "manifests/m.yaml:1:1", "", "document", "0")


def test_two_documents_in_one_file(repo: Path) -> None:
    put(repo, "m", "name: a\n---\n" + HEAD + "name: b\n")
    only_problem(repo, "manifests/m.yaml:1:1", "", "document", "2")


def test_explicit_document_markers_are_one_document(repo: Path) -> None:
    (repo / "manifests" / "m.yaml").write_text("---\n" + HEAD + "name: m\n...\n", encoding="utf-8")
    (model,) = loads(repo).models
    assert model.name == "m"
    assert str(model.location) == "manifests/m.yaml:4:7"


def test_top_level_that_is_not_a_mapping(repo: Path) -> None:
    (repo / "manifests" / "m.yaml").write_text("- a\n- b\n", encoding="utf-8")
    only_problem(repo, "manifests/m.yaml:1:1", "", "mapping")


def test_not_utf8(repo: Path) -> None:
    (repo / "manifests" / "m.yaml").write_bytes((HEAD + "name: caf\xe9\n").encode("latin-1"))
    only_problem(repo, "manifests/m.yaml", "", "UTF-8")


def sized(size: int) -> str:
    """A valid manifest of exactly `size` bytes, padded with comments."""
    text = HEAD + "name: m\n"
    line = "#" + "x" * 98 + "\n"
    while len(text) + len(line) <= size:
        text += line
    rest = size - len(text)
    if rest:
        text += "#" + "x" * (rest - 2) + "\n" if rest >= 2 else "\n"
    assert len(text.encode()) == size
    return text


def test_oversized_file_is_refused(repo: Path) -> None:
    (repo / "manifests" / "m.yaml").write_text(sized(MAX_FILE_BYTES + 1), encoding="utf-8")
    only_problem(repo, "manifests/m.yaml", "", str(MAX_FILE_BYTES + 1), str(MAX_FILE_BYTES))


def test_file_of_exactly_the_limit_is_read(repo: Path) -> None:
    (repo / "manifests" / "m.yaml").write_text(sized(MAX_FILE_BYTES), encoding="utf-8")
    assert loads(repo).names() == ("m",)


@pytest.fixture
def pulled(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many events each parse pulled from a YAML parser (libyaml's or ruamel's)."""
    import yaml as pyyaml  # type: ignore[import-untyped]
    from ruamel.yaml import YAML

    counts: list[int] = []

    def counting(parse: Callable[..., Iterator[object]]) -> Callable[..., Iterator[object]]:
        def wrapped(*args: object, **kwargs: object) -> Iterator[object]:
            counts.append(0)
            slot = len(counts) - 1
            for ev in parse(*args, **kwargs):
                counts[slot] += 1
                yield ev

        return wrapped

    monkeypatch.setattr(pyyaml, "parse", counting(pyyaml.parse))
    monkeypatch.setattr(YAML, "parse", counting(YAML.parse))
    return counts


@pytest.mark.parametrize(
    ("body", "where", "field"),
    [
        # flow style, as deep as the size limit allows
        (
            "name: m\ndescription: " + "[" * (MAX_FILE_BYTES - 200) + "\n",
            f"manifests/m.yaml:4:{14 + MAX_DEPTH}",
            "description" + "[0]" * MAX_DEPTH,
        ),
        (
            "name: m\ntags:\n" + "".join("  " * i + "  a:\n" for i in range(MAX_DEPTH + 200)),
            f"manifests/m.yaml:{5 + MAX_DEPTH}:{2 * MAX_DEPTH + 3}",
            "tags" + ".a" * MAX_DEPTH,
        ),
    ],
    ids=["flow", "block"],
)
def test_deep_nesting_is_refused_fast(
    repo: Path, body: str, where: str, field: str, pulled: list[int]
) -> None:
    put(repo, "m", body)
    found = problems(repo)
    assert len(found) == 1, shown(found)
    assert str(found[0].location) == where, shown(found)
    assert found[0].field == field, shown(found)
    assert "nesting" in found[0].message
    # Fast, measured as work rather than seconds: no parser is driven much past the limit.
    # (libyaml before 0.2.6 is quadratic in flow depth; reading this whole line through it
    # took 50 minutes in CI.)
    assert pulled and max(pulled) <= 3 * MAX_DEPTH, pulled


def test_billion_laughs_is_refused_before_expansion(repo: Path) -> None:
    lines = ['lol0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 12):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"lol{i}: &a{i} [{refs}]")
    put(repo, "m", "name: m\n" + "\n".join(lines) + "\n")
    found = problems(repo)
    assert len(found) == 1, shown(found)
    assert str(found[0]).startswith("manifests/m.yaml:4:7: lol0: "), shown(found)
    assert "anchor" in found[0].message


# -- every problem of every file ----------------------------------------------------------


def test_every_problem_in_one_file_is_reported_in_line_order(repo: Path) -> None:
    put(
        repo,
        "m",
        "name: m\nowner: me\nexperiment: e\nversions:\n  - run: r1\n    version: two\n",
    )
    found = problems(repo)
    assert [(str(p.location), p.field) for p in found] == [
        ("manifests/m.yaml:4:1", "owner"),
        ("manifests/m.yaml:8:14", "versions[0].version"),
    ], shown(found)


def test_every_bad_file_is_reported(repo: Path, run_cli: CLI) -> None:
    put(repo, "a", "name: a\nowner: me\n")
    put(repo, "b", "name: b\nversions:\n  - run: r1\n")
    put(repo, "c", "name: c\n  bad: indent\n")
    put(repo, "d", "name: d\n")
    code, _, err = run_cli("--repo", str(repo), "validate")
    assert code == 1, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert [line.split(": ", 3)[1:3] for line in lines] == [
        ["manifests/a.yaml:4:1", "owner"],
        ["manifests/b.yaml:5:5", "versions[0].run"],
        ["manifests/c.yaml:4:6", "invalid YAML"],
    ], err
    assert "unknown" in lines[0]
    assert "experiment" in lines[1]


def test_validate_passes_a_valid_set(repo: Path, run_cli: CLI) -> None:
    put(repo, "a", "name: a\nexperiment: e\nversions:\n  - run: r1\n    aliases: [Production]\n")
    put(repo, "b", "name: b\n")
    code, out, err = run_cli("--repo", str(repo), "validate")
    assert code == 0, err
    assert "error" not in err
    assert "2 manifests valid" in out


# -- what a valid set loads into ----------------------------------------------------------


def test_valid_manifests_load_into_the_desired_state(repo: Path) -> None:
    (repo / "runs" / "run_a").mkdir(parents=True)
    write_manifest(
        repo,
        "btcusdt",
        """
        apiVersion: regctl/v1
        kind: RegisteredModel
        name: btcusdt-1h
        description: 7-day forecaster.
        experiment: binance-btcusdt
        tags: {owner: quant-research, team: "42"}
        versions:
          - run: run_a
            run_dir: runs/run_a
            version: 1
            description: Huber LGBM.
            aliases: [Production, champion]
          - run_id: 4f1c0d9a2b7e4c61a3d5e8f90b1c2d3e
            artifact_path: model/
            description: ""
            aliases: [Staging]
          - run: run_a
            artifact_path: scaler
        """,
    )
    write_manifest(
        repo,
        "alpha",
        """
        apiVersion: regctl/v1
        kind: RegisteredModel
        name: Alpha
        prune: true
        """,
    )
    state = loads(repo)
    assert state.names() == ("Alpha", "btcusdt-1h")

    alpha = state.model("Alpha")
    assert alpha is not None
    assert alpha.description is None
    assert alpha.experiment is None
    assert dict(alpha.tags) == {}
    assert alpha.prune is True
    assert alpha.versions == ()
    assert str(alpha.location) == "manifests/alpha.yaml:3:7"

    btc = state.model("btcusdt-1h")
    assert btc is not None
    assert btc.description == "7-day forecaster."
    assert btc.experiment == "binance-btcusdt"
    assert dict(btc.tags) == {"owner": "quant-research", "team": "42"}
    assert btc.prune is False
    v0, v1, v2 = btc.versions
    assert [v.index for v in btc.versions] == [0, 1, 2]
    assert [str(v.location) for v in btc.versions] == [
        "manifests/btcusdt.yaml:8:5",
        "manifests/btcusdt.yaml:13:5",
        "manifests/btcusdt.yaml:17:5",
    ]

    assert (v0.run, v0.run_id, v0.run_dir) == ("run_a", None, "runs/run_a")
    assert (v0.artifact_path, v0.artifact_path_given) == ("", False)
    assert v0.version == 1
    assert v0.description == "Huber LGBM."
    assert v0.aliases == ("Production", "champion")

    assert (v1.run, v1.run_id) == (None, "4f1c0d9a2b7e4c61a3d5e8f90b1c2d3e")
    assert (v1.artifact_path, v1.artifact_path_given) == ("model", True)
    assert v1.version is None
    assert v1.description == ""  # given empty: enforced as empty
    assert v1.aliases == ("Staging",)

    assert (v2.run, v2.artifact_path) == ("run_a", "scaler")
    assert v2.description is None  # absent: left alone
    assert v2.aliases == ()


def test_empty_manifests_folder_is_an_empty_state(repo: Path) -> None:
    (repo / "manifests" / "README.md").write_text("not a manifest: {", encoding="utf-8")
    assert loads(repo).models == ()


# -- nothing reaches the server while any file is invalid ---------------------------------


def test_invalid_manifest_blocks_every_write(
    server_backend: Backend, uniq: str, run_cli: CLI, http_log: Recorder
) -> None:
    repo = server_backend.repo
    good = f"{uniq}-good"
    put(repo, "good", f"name: {good}\ndescription: would be created\ntags: {{owner: me}}\n")
    bad = put(repo, "bad", f"name: {uniq}-bad\nowner: me\n")
    base = ("--tracking-uri", server_backend.uri, "--repo", str(repo))

    for command in (("apply", "--auto-approve"), ("diff",)):
        http_log.clear()
        code, _, err = run_cli(*base, *command)
        assert code == 1, (command, err)
        assert "error: manifests/bad.yaml:4:1: owner: " in err, (command, err)
        assert http_log.writes() == [], (command, http_log.calls)
    assert server_backend.client.search_registered_models(f"name = '{good}'") == []

    # the control: the same set without the bad file does write, and http_log sees it
    bad.unlink()
    http_log.clear()
    code, _, err = run_cli(*base, "apply", "--auto-approve")
    assert code == 0, err
    assert any(p.endswith("/registered-models/create") for _, p in http_log.writes())
    assert server_backend.client.get_registered_model(good).description == "would be created"


def test_empty_description_is_an_error_not_left_alone(repo: Path) -> None:
    """`description:` with no value is ambiguous (clear it? leave it?), so it is refused."""
    put(repo, "m", "name: m\ndescription:\nexperiment: e\nversions: []\n")
    only_problem(repo, "manifests/m.yaml:4:1", "description", "empty", "''")
    put(repo, "m", "name: m\nexperiment: e\nversions:\n  - run: r\n    description:\n")
    only_problem(repo, "manifests/m.yaml:7:5", "versions[0].description", "empty")
    put(repo, "m", "name: m\ndescription: ''\nexperiment: e\nversions: []\n")
    assert loads(repo).models[0].description == ""
