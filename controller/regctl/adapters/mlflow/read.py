"""RegistryReader (and resolve's and import's reads) over MLflow's stores.

Models and versions are read in a few paginated searches; runs are cached per registry,
so sync's and import's later reads of the same runs cost nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor

from regctl.adapters.mlflow.client import StoreClient, _quote, _run_data, _version
from regctl.core.model import ObservedModel, ObservedVersion, RunRef, frozen_map
from regctl.errors import NotFound
from regctl.ports import RunData, chunks

MODEL_PAGE = 1000
VERSION_PAGE = 200_000
RUN_PAGE = 50_000
EXPERIMENT_PAGE = 50_000
EXPERIMENTS_PER_SEARCH = 100
NAMES_PER_FILTER = 50


class RegistryReads(StoreClient):
    """The reads: models, versions, experiments and runs."""

    def _name_filters(self, names: Collection[str] | None) -> list[str | None]:
        if names is None or any("'" in n for n in names):
            return [None]
        ordered = sorted(set(names))
        if not ordered:
            return []
        return [
            "name IN (" + ", ".join(_quote(n) for n in part) + ")"
            for part in chunks(ordered, NAMES_PER_FILTER)
        ]

    def search_models(self, names: Collection[str] | None) -> dict[str, ObservedModel]:
        filters = self._name_filters(names)

        # each page is turned into regctl's small values as it arrives, so MLflow's
        # entities of a page are freed before the next one (peak memory at 10,000 models)
        def read_models() -> dict[str, ObservedModel]:
            raw: dict[str, ObservedModel] = {}
            for flt in filters:
                for rm in self._pages(
                    "search registered models",
                    lambda tok, f=flt: self._registry.search_registered_models(  # type: ignore[misc]
                        filter_string=f, max_results=MODEL_PAGE, page_token=tok
                    ),
                ):
                    raw[rm.name] = ObservedModel(
                        name=rm.name,
                        description=rm.description or "",
                        tags=frozen_map({k: str(v) for k, v in (rm.tags or {}).items()}),
                        aliases={str(a): int(v) for a, v in sorted((rm.aliases or {}).items())},
                        versions={},
                    )
            return raw

        def read_versions() -> dict[str, list[ObservedVersion]]:
            raw: dict[str, list[ObservedVersion]] = {}
            for flt in filters:
                for mv in self._pages(
                    "search model versions",
                    lambda tok, f=flt: self._registry.search_model_versions(  # type: ignore[misc]
                        filter_string=f, max_results=VERSION_PAGE, page_token=tok
                    ),
                ):
                    raw.setdefault(mv.name, []).append(_version(mv))
            return raw

        # Models and versions are independent searches: against a server they are sent
        # together (the slower one sets the time, not their sum).
        if self.remote:
            with ThreadPoolExecutor(max_workers=1) as pool:
                pending = pool.submit(read_versions)
                raw_models = read_models()
                raw_versions = pending.result()
        else:
            raw_models, raw_versions = read_models(), read_versions()
        wanted = None if names is None else set(names)
        out: dict[str, ObservedModel] = {}
        for name, om in raw_models.items():
            if wanted is not None and name not in wanted:
                continue
            versions = {ov.version: ov for ov in raw_versions.get(name, [])}
            out[name] = dataclasses.replace(om, versions=dict(sorted(versions.items())))
        return dict(sorted(out.items()))

    def model_tags(self, name: str) -> Mapping[str, str] | None:
        try:
            rm = self._call(
                "get registered model", lambda: self._registry.get_registered_model(name)
            )
        except NotFound:
            return None
        return frozen_map({k: str(v) for k, v in (rm.tags or {}).items()})

    def search_models_like(self, pattern: str) -> dict[str, ObservedModel]:
        flt = f"name LIKE {_quote(pattern)}"
        out: dict[str, ObservedModel] = {}
        for rm in self._pages(
            "search registered models",
            lambda tok: self._registry.search_registered_models(
                filter_string=flt, max_results=MODEL_PAGE, page_token=tok
            ),
        ):
            out[rm.name] = ObservedModel(
                name=rm.name,
                description=rm.description or "",
                tags=frozen_map({k: str(v) for k, v in (rm.tags or {}).items()}),
                aliases={},
                versions={},
            )
        return dict(sorted(out.items()))

    def versions_of_run(self, model: str, run_id: str) -> list[ObservedVersion]:
        flt = f"name = {_quote(model)} AND run_id = {_quote(run_id)}"
        found = self._pages(
            "find versions by run",
            lambda tok: self._registry.search_model_versions(
                filter_string=flt, max_results=VERSION_PAGE, page_token=tok
            ),
        )
        return sorted((_version(mv) for mv in found), key=lambda v: v.version)

    def experiments(self, names: Collection[str]) -> dict[str, str]:
        from mlflow.entities import ViewType

        wanted = set(names)
        if not wanted:
            return {}
        out = {}
        for exp in self._pages(
            "search experiments",
            lambda tok: self._tracking.search_experiments(
                view_type=ViewType.ACTIVE_ONLY, max_results=EXPERIMENT_PAGE, page_token=tok
            ),
        ):
            if exp.name in wanted:
                out[exp.name] = str(exp.experiment_id)
        return out

    def runs_in(self, experiment_ids: Collection[str], names: Collection[str]) -> list[RunRef]:
        from mlflow.entities import ViewType

        wanted = set(names)
        out = []
        # one paginated search over up to EXPERIMENTS_PER_SEARCH experiments, not one each
        for exp_ids in chunks(sorted(set(experiment_ids)), EXPERIMENTS_PER_SEARCH):
            for run in self._pages(
                "search runs",
                lambda tok, e=exp_ids: self._tracking.search_runs(  # type: ignore[misc]
                    list(e), None, ViewType.ACTIVE_ONLY, RUN_PAGE, None, tok
                ),
            ):
                if run.info.run_name in wanted:
                    data = _run_data(run)
                    self._run_cache[data.ref.run_id] = data
                    out.append(data.ref)
        return sorted(out, key=lambda r: (r.experiment_id, r.name, r.run_id))

    def runs_by_id(self, run_ids: Collection[str]) -> dict[str, RunRef]:
        return {rid: d.ref for rid, d in self.run_data(run_ids).items()}

    def run_data(self, run_ids: Collection[str]) -> dict[str, RunData]:
        missing = sorted(set(run_ids) - set(self._run_cache))
        if len(missing) > 1:
            # batched: one experiment search, one run search per 100 ids (fills the cache)
            self.run_origins(missing)
            return {
                rid: self._run_cache[rid] for rid in sorted(set(run_ids)) if rid in self._run_cache
            }
        out = {}
        for rid in sorted(set(run_ids)):
            if rid not in self._run_cache:
                try:
                    run = self._call("get run", lambda r=rid: self._tracking.get_run(r))  # type: ignore[misc]
                except NotFound:
                    continue
                if getattr(run.info, "lifecycle_stage", "active") != "active":
                    continue
                self._run_cache[rid] = _run_data(run)
            out[rid] = self._run_cache[rid]
        return out

    # -- inference (resolve) --------------------------------------------------------

    def get_model(self, name: str) -> ObservedModel:
        """One registered model with its description, tags and aliases: one request.

        `versions` is left empty (MLflow returns only the latest version per stage here);
        ask `get_version` for the one that matters.
        """
        rm = self._call("get registered model", lambda: self._registry.get_registered_model(name))
        return ObservedModel(
            name=str(rm.name),
            description=rm.description or "",
            tags=frozen_map({k: str(v) for k, v in (rm.tags or {}).items()}),
            aliases={str(a): int(v) for a, v in sorted((rm.aliases or {}).items())},
            versions={},
        )

    def get_version(self, name: str, version: int) -> ObservedVersion:
        """One model version (NotFound when the model or the version does not exist)."""
        mv = self._call(
            "get model version", lambda: self._registry.get_model_version(name, str(version))
        )
        return _version(mv)

    def run_info(self, run_id: str) -> tuple[RunData, str, str]:
        """A run's params, metrics and tags, its experiment's name and its lifecycle stage.

        MLflow still serves a deleted run (stage `deleted`) until garbage collection, so
        the stage is returned for the caller to judge; a collected run is NotFound.
        """
        run = self._call("get run", lambda: self._tracking.get_run(run_id))
        data = _run_data(run)
        experiment = self._call(
            "get experiment", lambda: self._tracking.get_experiment(data.ref.experiment_id)
        )
        stage = str(getattr(run.info, "lifecycle_stage", "active") or "active")
        return data, str(experiment.name), stage

    # -- import (onboarding) --------------------------------------------------------

    def run_origins(self, run_ids: Collection[str]) -> dict[str, tuple[RunRef, str]]:
        """Active runs by id, each with its experiment's name, for `regctl import`.

        One experiment search, then one run search per 100 ids (`run_id IN (...)` over
        every active experiment) instead of a `get_run` per version; missing and deleted
        runs are absent from the result.
        """
        from mlflow.entities import ViewType

        wanted = sorted(set(run_ids))
        if not wanted:
            return {}
        experiments: dict[str, str] = {}
        for exp in self._pages(
            "search experiments",
            lambda tok: self._tracking.search_experiments(
                view_type=ViewType.ACTIVE_ONLY, max_results=EXPERIMENT_PAGE, page_token=tok
            ),
        ):
            experiments[str(exp.experiment_id)] = str(exp.name)
        out: dict[str, tuple[RunRef, str]] = {}
        for ids in chunks(wanted, 100):
            flt = "attributes.run_id IN (" + ", ".join(_quote(r) for r in ids) + ")"
            for exp_ids in chunks(sorted(experiments), 500):
                for run in self._pages(
                    "search runs",
                    lambda tok, e=exp_ids, f=flt: self._tracking.search_runs(  # type: ignore[misc]
                        list(e), f, ViewType.ACTIVE_ONLY, RUN_PAGE, None, tok
                    ),
                ):
                    data = _run_data(run)
                    self._run_cache[data.ref.run_id] = data
                    out[data.ref.run_id] = (data.ref, experiments[data.ref.experiment_id])
        return dict(sorted(out.items()))
