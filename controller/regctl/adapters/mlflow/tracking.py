"""TrackingWriter over MLflow's tracking store: sync's experiments, runs and artifacts."""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from pathlib import Path

from regctl.adapters.mlflow.client import StoreClient, _run_ref
from regctl.core.model import RunRef
from regctl.errors import RegistryError

MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000


class TrackingWrites(StoreClient):
    """Experiments and runs created, params and metrics logged, artifacts uploaded."""

    def create_experiment(self, name: str) -> str:
        return str(self._call("create experiment", lambda: self._tracking.create_experiment(name)))

    def create_run(self, experiment_id: str, run_name: str, start_time_ms: int) -> RunRef:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "regctl"
        run = self._call(
            "create run",
            lambda: self._tracking.create_run(
                experiment_id=experiment_id,
                user_id=user,
                start_time=start_time_ms,
                tags=[],
                run_name=run_name,
            ),
        )
        return _run_ref(run)

    def log_batch(
        self, run_id: str, params: Mapping[str, str], metrics: Mapping[str, float], step_ms: int
    ) -> None:
        from mlflow.entities import Metric, Param

        p_items = sorted(params.items())
        m_items = sorted(metrics.items())
        while p_items or m_items:
            p_part, p_items = p_items[:MAX_PARAMS_PER_BATCH], p_items[MAX_PARAMS_PER_BATCH:]
            room = MAX_METRICS_PER_BATCH - len(p_part)
            m_part, m_items = m_items[:room], m_items[room:]
            self._call(
                "log batch",
                lambda pp=p_part, mm=m_part: self._tracking.log_batch(  # type: ignore[misc]
                    run_id,
                    metrics=[Metric(k, float(v), step_ms, 0) for k, v in mm],
                    params=[Param(k, v) for k, v in pp],
                    tags=[],
                ),
            )

    def upload_artifact(self, run: RunRef, local_path: str, rel_path: str) -> None:
        repo = self._artifact_repo(run)
        folder = os.path.dirname(rel_path) or None
        if Path(local_path).name != os.path.basename(rel_path):
            raise RegistryError(f"upload: {local_path} does not end in {rel_path}")
        self._call("upload artifact", lambda: repo.log_artifact(local_path, folder))

    def finish_run(self, run_id: str, status: str, end_time_ms: int) -> None:
        from mlflow.entities import RunStatus

        self._call(
            "update run",
            lambda: self._tracking.update_run_info(
                run_id, RunStatus.from_string(status), end_time_ms, None
            ),
        )
