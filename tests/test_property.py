"""Property: for any desired state A followed by any desired state B, applying A and then B
leaves the registry equal to B, and `diff --exit-code` is empty after each apply.

States are drawn from a small world so that A and B overlap: up to three models, each
with 0-4 versions drawn from a pool of six pre-created runs (named by `run` or by
`run_id`), aliases from a small set, optional descriptions (the empty one included) and
tags. Version pins are left out (a random pin is almost never reachable). B is often an
edit of A (same runs re-declared, reordered, re-described, aliases moved), since that is
where adoption and updates happen.

Two runs of the same property: many examples on the embedded sqlite:/// store (each
example on a fresh copy of a template database that holds the runs: fast), and fewer
on a real server of this module's own (REST, concurrent writes), each example under its
own model names there. No state leaks from one example into the next.

"Equal to B" follows the ownership rules of SPEC section 2: every declared model exists
and is managed, its declared description and tag keys hold the declared values, each
declared entry is exactly one version bound to its run (with the declared description),
the aliases are exactly the declared ones (so an undeclared version, left alone, holds
none), and a model declared in A but not in B is left exactly as A made it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import _start_server, _stop

RUNS = tuple(f"r{i}" for i in range(6))
ALIASES = ("Production", "Staging", "Canary", "champion")
DESCRIPTIONS = (None, "", "first words", "second words")
TAG_KEYS = ("owner", "tier")
TAG_VALUES = ("a", "b", "")
MODEL_SLOTS = 3


@dataclass(frozen=True)
class Entry:
    run: int  # index into RUNS
    by_id: bool  # declared with `run_id:` instead of `run:`
    description: str | None


@dataclass(frozen=True)
class ModelSpec:
    description: str | None
    tags: Mapping[str, str]
    entries: tuple[Entry, ...]
    aliases: Mapping[str, int]  # alias -> index of the entry holding it


State = Mapping[int, ModelSpec]  # model slot -> spec; absent slots are not declared


@st.composite
def model_specs(draw: st.DrawFn, like: ModelSpec | None = None) -> ModelSpec:
    """A model's spec; `like` biases its runs towards another spec's (an edit of it)."""
    if like is None:
        runs = draw(st.lists(st.integers(0, len(RUNS) - 1), unique=True, max_size=4))
    else:
        kept = draw(st.permutations([e.run for e in like.entries]))
        kept = kept[: draw(st.integers(0, len(kept)))]
        others = [r for r in range(len(RUNS)) if r not in kept]
        extra = draw(st.lists(st.sampled_from(others), unique=True, max_size=4 - len(kept)))
        runs = [*kept, *extra]
        # insert the new ones anywhere, not only at the end
        runs = draw(st.permutations(runs)) if draw(st.booleans()) else runs
    entries = tuple(
        Entry(r, draw(st.booleans()), draw(st.sampled_from(DESCRIPTIONS))) for r in runs
    )
    aliases: dict[str, int] = {}
    if entries:
        for alias in ALIASES:
            holder = draw(st.none() | st.integers(0, len(entries) - 1))
            if holder is not None:
                aliases[alias] = holder
    return ModelSpec(
        description=draw(st.sampled_from(DESCRIPTIONS)),
        tags=draw(st.dictionaries(st.sampled_from(TAG_KEYS), st.sampled_from(TAG_VALUES))),
        entries=entries,
        aliases=aliases,
    )


states = st.dictionaries(st.integers(0, MODEL_SLOTS - 1), model_specs(), max_size=MODEL_SLOTS)


@st.composite
def edits(draw: st.DrawFn, a: State) -> State:
    """A state B that overlaps A: each slot of A kept (edited) or dropped, others added."""
    b: dict[int, ModelSpec] = {}
    for slot in range(MODEL_SLOTS):
        how = draw(st.sampled_from(("edit", "drop", "fresh")))
        if how == "edit":
            b[slot] = draw(model_specs(like=a.get(slot)))
        elif how == "fresh":
            b[slot] = draw(model_specs())
    return b


@st.composite
def pairs(draw: st.DrawFn) -> tuple[State, State]:
    """(A, B): B independent of A, or (more often) an edit of it."""
    a = draw(states)
    b = draw(st.one_of(edits(a), edits(a), states))
    return a, b


@dataclass(frozen=True)
class World:
    """Where examples run: a registry URI per example (or one shared), and the run pool."""

    experiment: str
    run_ids: Mapping[str, str]  # run name -> id
    uri: str = ""  # the module's server; empty: a fresh copy of `template` per example
    template: Path | None = None

    @contextmanager
    def example(self) -> Iterator[tuple[str, Path]]:
        """(tracking URI, repo folder) for one example."""
        with tempfile.TemporaryDirectory(prefix="regctl-prop-") as tmp:
            repo = Path(tmp)
            (repo / "manifests").mkdir()
            if self.template is None:
                yield self.uri, repo
            else:
                shutil.copy(self.template, repo / "mlflow.db")
                yield f"sqlite:///{repo / 'mlflow.db'}", repo


def make_runs(uri: str, artifacts: str | None) -> tuple[str, dict[str, str]]:
    from mlflow import MlflowClient

    client = MlflowClient(uri, uri)
    experiment = f"prop-{uuid.uuid4().hex[:8]}"
    exp_id = client.create_experiment(experiment, artifact_location=artifacts)
    run_ids = {}
    for name in RUNS:
        run = client.create_run(exp_id, run_name=name)
        client.set_terminated(run.info.run_id)
        run_ids[name] = run.info.run_id
    return experiment, run_ids


@pytest.fixture(scope="module")
def sqlite_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """A template sqlite database holding the experiment and its pool of finished runs."""
    root = tmp_path_factory.mktemp("prop-template")
    db = root / "mlflow.db"
    experiment, run_ids = make_runs(f"sqlite:///{db}", (root / "mlruns").as_uri())
    return World(experiment, run_ids, template=db)


@pytest.fixture(scope="module")
def server_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A server of its own (about 5 s to start) holding the experiment and its runs.

    Not the session's shared server: apply reads every model of the registry, and the
    shared one holds hundreds from other tests (an example there took twice as long),
    while the examples' own models would slow the tests after this one.
    """
    server = _start_server(tmp_path_factory.mktemp("prop-server"))
    try:
        experiment, run_ids = make_runs(server.url, None)
        yield World(experiment, run_ids, uri=server.url)
    finally:
        _stop(server.proc)


def q(text: str) -> str:
    """A YAML scalar that reads back as exactly this string (JSON is YAML)."""
    return json.dumps(text)


def manifest(name: str, spec: ModelSpec, world: World) -> str:
    lines = [
        "apiVersion: regctl/v1",
        "kind: RegisteredModel",
        f"name: {q(name)}",
        f"experiment: {q(world.experiment)}",
    ]
    if spec.description is not None:
        lines.append(f"description: {q(spec.description)}")
    if spec.tags:
        lines.append("tags: {" + ", ".join(f"{q(k)}: {q(v)}" for k, v in spec.tags.items()) + "}")
    lines.append("versions:" if spec.entries else "versions: []")
    for i, e in enumerate(spec.entries):
        run = RUNS[e.run]
        lines.append(f"  - run_id: {q(world.run_ids[run])}" if e.by_id else f"  - run: {q(run)}")
        if e.description is not None:
            lines.append(f"    description: {q(e.description)}")
        held = sorted(a for a, holder in spec.aliases.items() if holder == i)
        lines.append("    aliases: [" + ", ".join(held) + "]")
    return "\n".join(lines) + "\n"


def write_state(repo: Path, prefix: str, state: State, world: World) -> None:
    folder = repo / "manifests"
    for old in folder.glob("*.yaml"):
        old.unlink()
    for slot, spec in state.items():
        name = f"{prefix}-m{slot}"
        (folder / f"{name}.yaml").write_text(manifest(name, spec, world), encoding="utf-8")


def snapshot(client: Any, name: str) -> dict[str, Any] | None:
    """The registry's view of one model, with regctl's provenance tags left out."""
    from mlflow.exceptions import MlflowException

    try:
        rm = client.get_registered_model(name)
    except MlflowException:
        return None
    versions = {
        int(mv.version): (mv.run_id, mv.source, mv.description or "")
        for mv in client.search_model_versions(f"name = '{name}'")
    }
    return {
        "description": rm.description or "",
        "tags": {k: v for k, v in rm.tags.items() if k != "regctl.applied"},
        "aliases": {a: int(v) for a, v in rm.aliases.items()},
        "versions": versions,
    }


def assert_matches(got: dict[str, Any] | None, spec: ModelSpec, world: World, name: str) -> None:
    assert got is not None, f"{name}: declared but not in the registry"
    if spec.description is not None:
        assert got["description"] == spec.description, name
    assert got["tags"].get("regctl.managed") == "true", name
    for key, value in spec.tags.items():
        assert got["tags"].get(key) == value, (name, key)
    by_run: dict[str, list[int]] = {}
    for number, (run_id, _, _) in got["versions"].items():
        by_run.setdefault(run_id, []).append(number)
    assert all(len(n) == 1 for n in by_run.values()), f"{name}: a run holds two versions {by_run}"
    bound: list[int] = []
    for e in spec.entries:
        run_id = world.run_ids[RUNS[e.run]]
        assert run_id in by_run, f"{name}: no version for run {RUNS[e.run]}"
        number = by_run[run_id][0]
        _, source, description = got["versions"][number]
        assert source == f"runs:/{run_id}", (name, number, source)
        if e.description is not None:
            assert description == e.description, (name, number)
        bound.append(number)
    want_aliases = {alias: bound[holder] for alias, holder in spec.aliases.items()}
    assert got["aliases"] == want_aliases, name


def check_a_then_b(a: State, b: State, world: World, capsys: pytest.CaptureFixture[str]) -> None:
    from mlflow import MlflowClient

    from regctl.cli import main

    prefix = f"p{uuid.uuid4().hex[:8]}"
    names = {slot: f"{prefix}-m{slot}" for slot in range(MODEL_SLOTS)}
    with world.example() as (uri, repo):
        client = MlflowClient(uri, uri)

        def run(*args: str) -> tuple[int, str, str]:
            capsys.readouterr()
            code = main(["--tracking-uri", uri, "--repo", str(repo), *args])
            out, err = capsys.readouterr()
            return code, out, err

        after: dict[int, dict[str, Any] | None] = {}
        for label, state in (("A", a), ("B", b)):
            write_state(repo, prefix, state, world)
            code, out, err = run("apply", "--auto-approve")
            assert code == 0, f"apply {label} failed:\n{out}\n{err}"
            code, out, err = run("diff", "--exit-code")
            assert code == 0, f"diff after apply {label} is not empty:\n{out}\n{err}"
            for slot, name in names.items():
                got = snapshot(client, name)
                if slot in state:
                    assert_matches(got, state[slot], world, name)
                elif label == "B":
                    # not declared in B: left exactly as A made it (or still absent)
                    assert got == after[slot], name
                after[slot] = got


# derandomize: the same examples on every run (CI stability); database=None: nothing is
# written to .hypothesis/. The capsys fixture is read and reset around every command.
COMMON = {
    "deadline": None,
    "derandomize": True,
    "database": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}


@settings(max_examples=50, **COMMON)
@given(ab=pairs())
def test_apply_a_then_b_converges_to_b_sqlite(
    ab: tuple[State, State], sqlite_world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    check_a_then_b(*ab, sqlite_world, capsys)


@settings(max_examples=20, **COMMON)
@given(ab=pairs())
def test_apply_a_then_b_converges_to_b_server(
    ab: tuple[State, State], server_world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    check_a_then_b(*ab, server_world, capsys)
