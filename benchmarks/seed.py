"""Seeding for the benchmarks: registries written in bulk, manifests and run directories.

A registry of thousands of models would take minutes through the REST API (about 100
writes/s here), so the benchmarks write it before the server starts, through MLflow's
own SQL store: `SqlAlchemyStore` creates the schema (all migrations) and the experiments,
and bulk inserts into its tables (the store's own ORM tables, one transaction per table)
add the runs, models, versions, tags and aliases. The server then reads a database that
MLflow itself created, exactly as if every object had been made through the API.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ARTIFACT_ROOT = "mlflow-artifacts:/"
"""The root a server with --artifacts-destination gives new experiments (proxied)."""


@dataclass
class SeedVersion:
    """One model version: the run it comes from, its description and tags."""

    run_id: str
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class SeedModel:
    """One registered model with its versions (numbered 1..n) and aliases."""

    name: str
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    versions: list[SeedVersion] = field(default_factory=list)
    aliases: dict[str, int] = field(default_factory=dict)


def _insert(session: Any, table: Any, rows: Sequence[dict[str, Any]], chunk: int = 5000) -> None:
    from sqlalchemy import insert

    for i in range(0, len(rows), chunk):
        session.execute(insert(table), list(rows[i : i + chunk]))


class Seeder:
    """Writes straight into a fresh MLflow database (the server must not run yet)."""

    def __init__(self, db_uri: str) -> None:
        from mlflow.store.model_registry.sqlalchemy_store import (
            SqlAlchemyStore as RegistryStore,
        )
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore

        self.tracking = TrackingStore(db_uri, ARTIFACT_ROOT)
        self.registry = RegistryStore(db_uri)

    def close(self) -> None:
        """Dispose of the engines; on PostgreSQL first ANALYZE, as autovacuum would soon
        after a bulk load (without statistics the first model search takes ~50 s)."""
        if self.tracking.engine.dialect.name == "postgresql":
            from sqlalchemy import text

            with self.tracking.engine.connect() as conn:
                conn.execute(text("ANALYZE"))
                conn.commit()
        for store in (self.tracking, self.registry):
            engine = getattr(store, "engine", None)
            if engine is not None:
                engine.dispose()

    def experiment(self, name: str) -> str:
        """Create an experiment through the store's API; returns its id."""
        return str(self.tracking.create_experiment(name))

    def runs(self, experiment_id: str, names: Iterable[str]) -> dict[str, str]:
        """FINISHED runs by name (no params, metrics or artifacts); returns name -> run id."""
        from mlflow.store.tracking.dbmodels.models import SqlRun, SqlTag

        location = self.tracking.get_experiment(experiment_id).artifact_location
        now = int(time.time() * 1000)
        runs, tags, out = [], [], {}
        for name in names:
            run_id = uuid.uuid4().hex
            out[name] = run_id
            runs.append(
                {
                    "run_uuid": run_id,
                    "name": name,
                    "source_type": "UNKNOWN",
                    "source_name": "",
                    "entry_point_name": "",
                    "user_id": "bench",
                    "status": "FINISHED",
                    "start_time": now,
                    "end_time": now + 1,
                    "deleted_time": None,
                    "source_version": "",
                    "lifecycle_stage": "active",
                    "artifact_uri": f"{location.rstrip('/')}/{run_id}/artifacts",
                    "experiment_id": int(experiment_id),
                }
            )
            tags.append({"key": "mlflow.runName", "value": name, "run_uuid": run_id})
        with self.tracking.ManagedSessionMaker(read_only=False) as session:
            _insert(session, SqlRun.__table__, runs)
            _insert(session, SqlTag.__table__, tags)
        return out

    def models(self, models: Sequence[SeedModel]) -> None:
        """Registered models with versions (source `runs:/<run id>`), tags and aliases."""
        from mlflow.store.model_registry.dbmodels.models import (
            SqlModelVersion,
            SqlModelVersionTag,
            SqlRegisteredModel,
            SqlRegisteredModelAlias,
            SqlRegisteredModelTag,
        )

        now = int(time.time() * 1000)
        rms, rm_tags, mvs, mv_tags, aliases = [], [], [], [], []
        for m in models:
            rms.append(
                {
                    "name": m.name,
                    "creation_time": now,
                    "last_updated_time": now,
                    "description": m.description,
                }
            )
            rm_tags += [{"name": m.name, "key": k, "value": v} for k, v in m.tags.items()]
            for number, v in enumerate(m.versions, start=1):
                mvs.append(
                    {
                        "name": m.name,
                        "version": number,
                        "creation_time": now,
                        "last_updated_time": now,
                        "description": v.description,
                        "user_id": "bench",
                        "current_stage": "None",
                        "source": f"runs:/{v.run_id}",
                        "storage_location": None,
                        "run_id": v.run_id,
                        "run_link": None,
                        "status": "READY",
                        "status_message": None,
                    }
                )
                mv_tags += [
                    {"name": m.name, "version": number, "key": k, "value": val}
                    for k, val in v.tags.items()
                ]
            aliases += [{"name": m.name, "alias": a, "version": n} for a, n in m.aliases.items()]
        with self.registry.ManagedSessionMaker(read_only=False) as session:
            _insert(session, SqlRegisteredModel.__table__, rms)
            _insert(session, SqlRegisteredModelTag.__table__, rm_tags)
            _insert(session, SqlModelVersion.__table__, mvs)
            _insert(session, SqlModelVersionTag.__table__, mv_tags)
            _insert(session, SqlRegisteredModelAlias.__table__, aliases)


# -- the registry shape of rows 2 and 4 --------------------------------------------------

MANAGED = {"regctl.managed": "true"}


@dataclass
class Fleet:
    """N models x V versions x 2 aliases, runs spread over a few experiments.

    Model i's versions come from runs `r<i>-<n>` of experiment `exp-<i mod E>`; alias
    `prod` points at version V-1 (or 1) and `staging` at version V.
    """

    prefix: str
    models: int
    versions: int
    experiments: int
    run_ids: dict[tuple[str, str], str] = field(default_factory=dict)

    def name(self, i: int) -> str:
        return f"{self.prefix}-model-{i:05d}"

    def experiment(self, i: int) -> str:
        return f"{self.prefix}-exp-{i % self.experiments:02d}"

    def run(self, i: int, n: int) -> str:
        return f"r{i:05d}-{n}"

    def prod(self) -> int:
        return max(1, self.versions - 1)

    def seed(self, seeder: Seeder, *, description: str = "v{n}") -> None:
        """Write the experiments, runs and models (descriptions `v<n>`, aliases as above)."""
        exp_ids: dict[str, str] = {}
        per_exp: dict[str, list[str]] = {}
        for i in range(self.models):
            exp = self.experiment(i)
            per_exp.setdefault(exp, []).extend(self.run(i, n) for n in range(1, self.versions + 1))
        for exp, names in sorted(per_exp.items()):
            exp_ids[exp] = seeder.experiment(exp)
            for name, rid in seeder.runs(exp_ids[exp], names).items():
                self.run_ids[(exp, name)] = rid
        models = []
        for i in range(self.models):
            exp = self.experiment(i)
            versions = [
                SeedVersion(self.run_ids[(exp, self.run(i, n))], description.format(n=n))
                for n in range(1, self.versions + 1)
            ]
            models.append(
                SeedModel(
                    self.name(i),
                    f"model {i}",
                    {**MANAGED, "team": "bench"},
                    versions,
                    {"prod": self.prod(), "staging": self.versions},
                )
            )
        seeder.models(models)

    def manifest(
        self, i: int, *, prod: int | None = None, described: dict[int, str], by_id: bool = False
    ) -> str:
        """Manifest text of model i: every version by run name (or by run id, after
        `seed`), aliases, descriptions."""
        prod = self.prod() if prod is None else prod
        lines = [
            "apiVersion: regctl/v1",
            "kind: RegisteredModel",
            f"name: {self.name(i)}",
            f"description: model {i}",
            f"experiment: {self.experiment(i)}",
            "tags: {team: bench}",
            "versions:",
        ]
        for n in range(1, self.versions + 1):
            if by_id:
                lines.append(f"  - run_id: {self.run_ids[(self.experiment(i), self.run(i, n))]}")
            else:
                lines.append(f"  - run: {self.run(i, n)}")
            lines.append(f"    description: {json.dumps(described.get(n, f'v{n}'))}")
            aliases = [a for a, at in (("prod", prod), ("staging", self.versions)) if at == n]
            if aliases:
                lines.append(f"    aliases: [{', '.join(aliases)}]")
        return "\n".join(lines) + "\n"

    def write_manifests(
        self,
        repo: Path,
        *,
        prod: int | None = None,
        described: dict[int, str] | None = None,
        by_id: bool = False,
        count: int | None = None,
    ) -> None:
        """Manifests of the first `count` models (all by default)."""
        folder = repo / "manifests"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(self.models if count is None else min(count, self.models)):
            text = self.manifest(i, prod=prod, described=described or {}, by_id=by_id)
            (folder / f"{self.name(i)}.yaml").write_text(text, encoding="utf-8")

    def names(self) -> list[str]:
        return [self.name(i) for i in range(self.models)]


# -- run directories (row 5) -------------------------------------------------------------

HMM_CONFIG = {
    "model_type": "hmm",
    "dataset": "BENCH",
    "features": ["logret_1h", "vol_24h"],
    "state_grid": [2, 3],
    "selection_criterion": "bic",
    "n_iter": 50,
    "seed": 1,
}
HMM_METRICS = {"n_states": 3, "bic_final": 1378.7, "train_final_ll": -614.4, "test_ll": -77.3}


def run_dirs(root: Path, count: int, files: int, size: int) -> list[Path]:
    """`count` HMM run directories of `files` files each (two small JSON files, the rest
    `size` bytes of random data, one of them the model file)."""
    out = []
    for d in range(count):
        path = root / f"run_hmm_20250101_{d // 60:02d}{d % 60:02d}00"
        path.mkdir(parents=True)
        (path / "pipeline_config.json").write_text(json.dumps(HMM_CONFIG))
        (path / "metrics.json").write_text(json.dumps(HMM_METRICS))
        for f in range(files - 2):
            name = "model.joblib" if f == 0 else f"part-{f:03d}.bin"
            (path / name).write_bytes(os.urandom(size))
        out.append(path)
    return out


def sync_manifests(repo: Path, experiment: str, dirs: Sequence[Path]) -> None:
    """One manifest per run directory (model `sync-<run>`), each naming its run_dir."""
    folder = repo / "manifests"
    folder.mkdir(parents=True, exist_ok=True)
    for d in dirs:
        rel = d.relative_to(repo).as_posix()
        (folder / f"sync-{d.name}.yaml").write_text(
            "apiVersion: regctl/v1\nkind: RegisteredModel\n"
            f"name: sync-{d.name}\nexperiment: {experiment}\n"
            f"versions:\n  - run: {d.name}\n    run_dir: {json.dumps(rel)}\n",
            encoding="utf-8",
        )
