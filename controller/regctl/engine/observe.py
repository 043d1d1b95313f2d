"""observe(): the registry side of a plan, in a few paginated requests (RegistryReader port)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from regctl.core.model import (
    LEDGER_MODEL,
    DesiredState,
    ObservedState,
    RunRef,
    ledger_entries,
)
from regctl.ports import RegistryReader, runs_by_name

if TYPE_CHECKING:
    pass


def observe(
    desired: DesiredState,
    reader: RegistryReader,
    *,
    complete: bool,
    workers: int = 1,
) -> ObservedState:
    """Read what the plan needs, with as few requests as MLflow allows.

    Models and versions in paginated searches (all of them when the scope is complete, so
    managed models that no manifest names are seen too), experiments in one search, and
    run names resolved with one run search for up to 100 experiments. With `workers` > 1
    (a server) the independent reads are sent together: the time is the slowest one's,
    not the sum.
    """
    names = None if complete else (*desired.names(), LEDGER_MODEL)
    by_exp: dict[str, set[str]] = {}
    for m in desired.models:
        for v in m.versions:
            if v.run is not None and m.experiment is not None:
                by_exp.setdefault(m.experiment, set()).add(v.run)
    ids = {v.run_id for m in desired.models for v in m.versions if v.run_id}

    def read_runs() -> tuple[dict[str, str], dict[tuple[str, str], tuple[RunRef, ...]]]:
        experiments = reader.experiments(
            sorted({m.experiment for m in desired.models if m.experiment})
        )
        return experiments, runs_by_name(reader, experiments, by_exp)

    def read_ids() -> dict[str, RunRef]:
        return reader.runs_by_id(ids) if ids else {}

    if workers > 1:
        with ThreadPoolExecutor(max_workers=2) as pool:
            runs_part = pool.submit(read_runs)
            ids_part = pool.submit(read_ids)
            models = reader.search_models(names)
            experiments, runs = runs_part.result()
            by_id = ids_part.result()
    else:
        models = reader.search_models(names)
        experiments, runs = read_runs()
        by_id = read_ids()
    ledger_model = models.pop(LEDGER_MODEL, None)
    ledger = ledger_entries(ledger_model.tags if ledger_model is not None else None)
    return ObservedState(
        models=models, experiments=experiments, runs=runs, runs_by_id=by_id, ledger=ledger
    )
