"""apply's interpreter as a function of values: provenance records and the run of a plan
against an in-memory writer (no server; the server suite covers the adapter)."""

from __future__ import annotations

from typing import Any

import pytest

from regctl.core.model import PROVENANCE_TAG
from regctl.core.plan import (
    Change,
    CreateModel,
    CreateVersion,
    DeleteAlias,
    DeleteModel,
    Plan,
    SetAlias,
    SetVersionDescription,
    SyncRun,
)
from regctl.engine.apply import ApplyContext, apply_plan, planned_records, provenance_records
from regctl.errors import AlreadyExists, ApplyError, RegistryError

P = "commit 0123456 by alice at 2026-12-02T00:00:00Z"


class Memory:
    """A writer and reader that remembers calls; `fail` names a method that raises."""

    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.fail = fail
        self.next_version = 1

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any) -> Any:
            self.calls.append((name, args))
            if name == self.fail:
                raise RegistryError(f"{name} refused")
            if name == "create_version":
                self.next_version += 1
                return self.next_version - 1
            if name == "versions_of_run":
                return []
            return None

        return call


def ctx_with(done: list[Change], created: dict[tuple[str, int], int] | None = None) -> ApplyContext:
    """A context after `done` was applied as a whole plan."""
    ctx = ApplyContext(writer=Memory(), reader=Memory(), provenance=P)  # type: ignore[arg-type]
    ctx.create_records.update(planned_records(plan_of(*done), P))
    ctx.done.extend(done)
    ctx.created.update(created or {})
    return ctx


@pytest.mark.parametrize(
    ("done", "created", "expected"),
    [
        pytest.param(
            [
                SetAlias("m", alias="Production", old=1, new=3),
                SetVersionDescription("m", version=1),
            ],
            {},
            {"m": f"{P}; aliases: Production -> v3"},
            id="a promotion and an edit: one record naming the move",
        ),
        pytest.param(
            [SetVersionDescription("m", version=1, new="x")],
            {},
            {"m": P},
            id="no alias moved: the commit alone",
        ),
        pytest.param(
            [DeleteAlias("m", alias="Staging", old=2), SetAlias("m", alias="A", new=1)],
            {},
            {"m": f"{P}; aliases: A -> v1, Staging removed"},
            id="moves sorted, removals said",
        ),
        pytest.param(
            [
                CreateModel("n"),
                CreateVersion("n", entry=0, expected_version=1),
                SetAlias("n", alias="P", entry=0),
            ],
            {("n", 0): 1},
            {},
            id="a created model: its create request carries the record, moves included",
        ),
        pytest.param(
            [
                CreateModel("n"),
                CreateVersion("n", entry=0, expected_version=1),
                SetAlias("n", alias="P", entry=0),
            ],
            {("n", 0): 2},
            {"n": f"{P}; aliases: P -> v2"},
            id="a created model whose version got another number: written again",
        ),
        pytest.param(
            [CreateVersion("m", entry=1), SetAlias("m", alias="Production", old=1, entry=1)],
            {("m", 1): 7},
            {"m": f"{P}; aliases: Production -> v7"},
            id="an alias on a version created now: the number MLflow assigned",
        ),
        pytest.param([DeleteModel("gone")], {}, {}, id="a deleted model: nothing to record"),
        pytest.param(
            [SyncRun("", experiment="e", run_name="r")], {}, {}, id="runs get no regctl tags"
        ),
    ],
)
def test_provenance_is_one_record_per_changed_model(
    done: list[Change], created: dict[tuple[str, int], int], expected: dict[str, str]
) -> None:
    assert provenance_records(ctx_with(done, created)) == expected


def test_no_provenance_without_a_record_to_write() -> None:
    ctx = ctx_with([SetVersionDescription("m", version=1)])
    ctx.provenance = ""
    assert provenance_records(ctx) == {}


def plan_of(*changes: Change) -> Plan:
    return Plan(target="t", models=tuple(sorted({c.model for c in changes})), changes=changes)


def test_what_was_written_is_recorded_when_a_later_change_fails() -> None:
    writer = Memory(fail="delete_alias")
    ctx = ApplyContext(writer=writer, reader=writer, provenance=P)  # type: ignore[arg-type]
    plan = plan_of(
        SetAlias("a", alias="Production", old=1, new=2),  # phase 4
        DeleteAlias("b", alias="Staging", old=1),  # phase 5: refused
    )
    with pytest.raises(ApplyError, match=r"delete_alias refused; applied 1 of 2 changes"):
        apply_plan(plan, ctx)
    tags = [args for name, args in writer.calls if name == "set_model_tag"]
    assert tags == [("a", PROVENANCE_TAG, f"{P}; aliases: Production -> v2")]


def test_nothing_is_recorded_once_the_lease_is_lost() -> None:
    writer = Memory(fail="delete_alias")
    ctx = ApplyContext(writer=writer, reader=writer, provenance=P, holding=lambda: False)  # type: ignore[arg-type]
    plan = plan_of(SetAlias("a", alias="P", new=2), DeleteAlias("b", alias="S", old=1))
    with pytest.raises(ApplyError):
        apply_plan(plan, ctx)
    assert [name for name, _ in writer.calls] == ["set_alias", "delete_alias"]


def test_sync_steps_run_first_and_hand_their_run_ids_to_the_versions() -> None:
    order: list[str] = []

    class Steps:
        def run(self, key: tuple[str, str]) -> str:
            order.append(f"sync {key[1]}")
            return f"id-{key[1]}"

        def finish(self) -> None:
            order.append("ledger")

    writer = Memory()
    ctx = ApplyContext(writer=writer, reader=writer, sync=Steps())  # type: ignore[arg-type]
    plan = plan_of(
        SyncRun("", experiment="e", run_name="r1"),
        CreateVersion("m", entry=0, experiment="e", run_name="r1", expected_version=1),
    )
    report = apply_plan(plan, ctx)
    assert (report.done, report.total) == (2, 2)
    assert order == ["sync r1", "ledger"]
    created = [args for name, args in writer.calls if name == "create_version"]
    assert created[0][:3] == ("m", "runs:/id-r1", "id-r1")


def test_a_model_an_earlier_apply_created_is_recorded_by_this_one() -> None:
    class Exists(Memory):
        def create_model(self, *args: Any) -> None:
            self.calls.append(("create_model", args))
            raise AlreadyExists("exists")

    writer = Exists()
    ctx = ApplyContext(writer=writer, reader=writer, provenance=P)  # type: ignore[arg-type]
    apply_plan(plan_of(CreateModel("n", description="d")), ctx)
    tags = [args for name, args in writer.calls if name == "set_model_tag"]
    assert tags == [("n", PROVENANCE_TAG, P)]


def test_a_created_model_carries_its_alias_moves_in_the_create_request() -> None:
    writer = Memory()
    ctx = ApplyContext(writer=writer, reader=writer, provenance=P)  # type: ignore[arg-type]
    plan = plan_of(
        CreateModel("n"),
        CreateVersion("n", entry=0, run_id="r", expected_version=1),
        SetAlias("n", alias="Production", new=1, entry=0),
    )
    apply_plan(plan, ctx)
    create = next(args for name, args in writer.calls if name == "create_model")
    assert create[2][PROVENANCE_TAG] == f"{P}; aliases: Production -> v1"
    assert not [n for n, _ in writer.calls if n == "set_model_tag"]  # nothing more to write


def test_a_created_model_whose_alias_failed_is_recorded_as_it_is() -> None:
    writer = Memory(fail="set_alias")
    ctx = ApplyContext(writer=writer, reader=writer, provenance=P)  # type: ignore[arg-type]
    plan = plan_of(
        CreateModel("n"),
        CreateVersion("n", entry=0, run_id="r", expected_version=1),
        SetAlias("n", alias="Production", new=1, entry=0),
    )
    with pytest.raises(ApplyError):
        apply_plan(plan, ctx)
    tags = [args for name, args in writer.calls if name == "set_model_tag"]
    assert tags == [("n", PROVENANCE_TAG, P)]  # the create request's moves did not happen


def test_provenance_writes_stop_once_the_lease_is_lost() -> None:
    held = [True]

    class Losing(Memory):
        def set_model_tag(self, *args: Any) -> None:
            self.calls.append(("set_model_tag", args))
            held[0] = False

    writer = Losing()
    ctx = ApplyContext(writer=writer, reader=writer, provenance=P, holding=lambda: held[0])  # type: ignore[arg-type]
    plan = plan_of(*(SetVersionDescription(f"m{i}", version=1, new="d") for i in range(50)))
    apply_plan(plan, ctx, concurrency=1)
    assert len([n for n, _ in writer.calls if n == "set_model_tag"]) == 1


def test_an_unexpected_error_in_a_lane_is_an_apply_error_and_the_others_are_recorded() -> None:
    class Odd(Memory):
        def set_alias(self, model: str, alias: str, number: int) -> None:
            self.calls.append(("set_alias", (model, alias, number)))
            if model == "b":
                raise OSError("a file vanished")

    writer = Odd()
    ctx = ApplyContext(writer=writer, reader=writer, provenance=P)  # type: ignore[arg-type]
    plan = plan_of(SetAlias("a", alias="P", old=1, new=2), SetAlias("b", alias="P", old=1, new=2))
    with pytest.raises(ApplyError, match="a file vanished; applied 1 of 2"):
        apply_plan(plan, ctx, concurrency=2)
    tags = [args for name, args in writer.calls if name == "set_model_tag"]
    assert tags == [("a", PROVENANCE_TAG, f"{P}; aliases: P -> v2")]


def test_a_stop_between_sync_steps_still_records_the_runs_that_finished() -> None:
    log: list[str] = []

    class Steps:
        def run(self, key: tuple[str, str]) -> str:
            log.append(f"sync {key[1]}")
            return f"id-{key[1]}"

        def finish(self) -> None:
            log.append("ledger")

    writer = Memory()
    ctx = ApplyContext(writer=writer, reader=writer, sync=Steps())  # type: ignore[arg-type]
    plan = plan_of(
        SyncRun("", experiment="e", run_name="r1"), SyncRun("", experiment="e", run_name="r2")
    )
    with pytest.raises(ApplyError, match="stopped; applied 1 of 2"):
        apply_plan(plan, ctx, should_stop=lambda: "sync r1" in log)
    assert log == ["sync r1", "ledger"]
