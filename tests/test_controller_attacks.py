"""Attacks on `regctl controller` and the operator's worst days: each test names a way
the loop was made to apply what the branch does not hold, to stop converging, or to
report the wrong thing. The controller runs in this process against an embedded sqlite
store, one `_step` at a time, with a bare git repository as its source."""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_sync import make_run_dir

from regctl.commands.controller import Controller, ControllerOptions
from regctl.commands.controller_state import ControllerLog, Metrics
from regctl.config import Settings

from conftest import empty_sqlite

RUN = "run_hmm_20251009_105640"


def git(*args: str, cwd: Path) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Ada", "GIT_AUTHOR_EMAIL": "ada@example.com"}
    env |= {"GIT_COMMITTER_NAME": "Ada", "GIT_COMMITTER_EMAIL": "ada@example.com"}
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


class Rig:
    """A source repository, a registry and one in-process controller."""

    def __init__(self, tmp: Path, **options: Any) -> None:
        self.tmp = tmp
        self.bare = tmp / "source.git"
        git("init", "-q", "--bare", "-b", "main", str(self.bare), cwd=tmp)
        self.work = tmp / "work"
        git("clone", "-q", str(self.bare), str(self.work), cwd=tmp)
        (self.work / "manifests").mkdir()
        make_run_dir(self.work / "runs", RUN, {"model_type": "hmm"}, {"bic": 1.0})
        self.uri = empty_sqlite(tmp / "mlflow.db")
        self.state = (tmp / "state").resolve()
        self.out = io.StringIO()
        self.ctl = Controller(
            ControllerOptions(
                source=self.bare.as_uri(),
                state_dir=self.state,
                tracking_uri=self.uri,
                **options,
            ),
            ControllerLog("json", self.out),
            Metrics(),
        )
        self.settings = Settings(self.state, self.uri, None)

    def manifest(self, description: str, run_dir: str = f"runs/{RUN}", run: str = RUN) -> None:
        (self.work / "manifests" / "m.yaml").write_text(
            "apiVersion: regctl/v1\nkind: RegisteredModel\nname: m\nexperiment: m-exp\n"
            f"description: {description}\nversions:\n  - run: {run}\n    run_dir: {run_dir}\n"
        )

    def push(self, message: str) -> str:
        git("add", "-A", cwd=self.work)
        git("commit", "-qm", message, cwd=self.work)
        git("push", "-q", "origin", "HEAD:main", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def step(self) -> float:
        return self.ctl._step(self.settings)

    def events(self, event: str = "reconcile", kind: str = "commit") -> list[dict[str, Any]]:
        rows = [json.loads(x) for x in self.out.getvalue().splitlines()]
        return [r for r in rows if r["event"] == event and r.get("kind", kind) == kind]

    def description(self) -> str | None:
        from mlflow import MlflowClient

        try:
            return MlflowClient(self.uri, self.uri).get_registered_model("m").description
        except Exception:
            return None

    def close(self) -> None:
        self.ctl._step_down("test")
        if self.ctl._registry is not None:
            self.ctl._registry.close()


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.chdir(tmp_path)  # the embedded store's artifacts land here
    made: list[Rig] = []

    def make(**options: Any) -> Rig:
        r = Rig(tmp_path, **options)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def test_harness_applies_a_head(rig: Any) -> None:
    r = rig()
    r.manifest("first")
    sha = r.push("first")
    r.step()
    assert r.description() == "first"
    assert r.events()[-1]["result"] == "applied" and r.events()[-1]["commit"] == sha


# -- what is applied must be what the branch holds ---------------------------------------


def _outside(tmp: Path) -> Path:
    """A run directory on the controller's host, outside every checkout, with a secret."""
    return make_run_dir(
        tmp / "host", RUN, {"model_type": "hmm"}, {"bic": 1.0}, {"id_rsa": "PRIVATE KEY"}
    )


def _uploaded(r: Rig) -> bool:
    from mlflow import MlflowClient

    exp = MlflowClient(r.uri, r.uri).get_experiment_by_name("m-exp")
    return exp is not None and bool(MlflowClient(r.uri, r.uri).search_runs([exp.experiment_id]))


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink"])
def test_a_run_dir_outside_the_checkout_is_refused(rig: Any, how: str) -> None:
    """A manifest on the branch must not make the controller upload host files: an
    absolute run_dir, one climbing out with `..`, or one through a committed symlink."""
    r = rig()
    host = _outside(r.tmp)
    if how == "absolute":
        r.manifest("x", run_dir=str(host))
    elif how == "dotdot":
        r.manifest("x", run_dir=os.path.relpath(host, r.state / "trees" / ("0" * 40)))
    else:
        (r.work / "out").symlink_to(host.parent)
        r.manifest("x", run_dir=f"out/{RUN}")
    sha = r.push("escape")
    r.step()
    row = r.events()[-1]
    assert row["commit"] == sha and row["result"] == "invalid", r.out.getvalue()
    assert "outside" in row["detail"]
    assert r.description() is None and not _uploaded(r)
