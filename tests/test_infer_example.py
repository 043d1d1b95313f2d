"""examples/infer.py, run as a user runs it, against the real test server (issue 16).

The shipped manifests are applied to the shared session server under names made unique
by `uniq` (models and experiments renamed, nothing else changed), then the client
resolves, downloads, loads and predicts in a subprocess. What it prints is compared with
predicting directly from the model files in examples/runs, on the rows the printed
timestamps name, and for LightGBM with the run's own pred_test.csv. docs/inference.md's
"A real inference client" must show this output (after the names, ids and the temporary
folder are put back as the page shows them).

lightgbm, hmmlearn and joblib come with the `examples` extra (.ci/run installs it):
missing, they skip these tests locally and fail them under CI.
"""

from __future__ import annotations

import csv
import importlib
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from conftest import REPO, Server

pytestmark = pytest.mark.server

CLI = Callable[..., tuple[int, str, str]]
INFER = REPO / "examples" / "infer.py"
RUNS = REPO / "examples" / "runs" / "BINANCE_BTCUSDT.P, 60"
LGBM, LGBM_RUN = "btcusdt-1h-inference-7d-logret", "run_20251008_145809_lgbm_y_logret_168h_huber"
HMM, HMM_RUN = "btcusdt-1h-regimes-hmm", "run_hmm_20251009_105640"
ROW = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) +(\S.*)$")


def need(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        why = f"{module} is not installed (pip install -e '.[examples]'; .ci/run does)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture
def libs() -> dict[str, ModuleType]:
    """The examples extra, and make_examples.py (how the example runs were trained)."""
    found = {name: need(name) for name in ("lightgbm", "hmmlearn", "joblib", "numpy")}
    sys.path.insert(0, str(REPO / "examples"))
    try:
        found["make_examples"] = importlib.import_module("make_examples")
    finally:
        sys.path.remove(str(REPO / "examples"))
    return found


@dataclass
class Applied:
    server: Server
    prefix: str
    cwd: Path

    def name(self, model: str) -> str:
        return f"{self.prefix}{model}"


@pytest.fixture
def applied(
    libs: dict[str, ModuleType],
    examples_repo: Path,
    mlflow_server: Server,
    uniq: str,
    run_cli: CLI,
    monkeypatch: pytest.MonkeyPatch,
) -> Applied:
    """The shipped manifests, models and experiments renamed `<uniq>-…`, applied."""
    prefix = f"{uniq}-"
    for path in sorted((examples_repo / "manifests").glob("*.yaml")):
        body = path.read_text(encoding="utf-8")
        renamed = re.sub(r"^(name|experiment): ", rf"\g<0>{prefix}", body, flags=re.M)
        assert renamed.count(prefix) == 2, path
        (path.parent / f"{prefix}{path.name}").write_text(renamed, encoding="utf-8")
        path.unlink()
    monkeypatch.chdir(examples_repo)
    code, out, err = run_cli("--tracking-uri", mlflow_server.url, "apply", "--auto-approve")
    assert code == 0, out + err
    return Applied(mlflow_server, prefix, examples_repo)


def infer(applied: Applied, *args: str) -> subprocess.CompletedProcess[str]:
    """`python examples/infer.py ARGS --tracking-uri URL`, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "REGCTL_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "controller"), env.get("PYTHONPATH", "")])
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    return subprocess.run(
        [sys.executable, str(INFER), *args, "--tracking-uri", applied.server.url],
        cwd=applied.cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def printed_rows(out: str) -> list[tuple[str, list[float]]]:
    rows = []
    for line in out.splitlines():
        if m := ROW.match(line):
            rows.append((m.group(1), [float(v) for v in m.group(2).split()]))
    return rows


def row_index(stamp: str, examples: ModuleType) -> int:
    """Which row of make_examples' data a printed timestamp names (one row an hour)."""
    hours = (datetime.fromisoformat(stamp.replace("Z", "+00:00")) - examples.START) / timedelta(
        hours=1
    )
    assert hours == int(hours), stamp
    return int(hours)


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return {row["timestamp"]: row for row in csv.DictReader(f)}


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=0, abs_tol=5e-7 + 1e-12)  # printed with 6 decimals


# ----------------------------------------------------------------------------------- LGBM


def test_lgbm_at_staging_predicts_what_the_model_files_predict(
    applied: Applied, libs: dict[str, Any], tmp_path: Path
) -> None:
    rows = 7
    out_dir = tmp_path / "model"
    target = f"{applied.name(LGBM)}@Staging"
    done = infer(applied, target, "--rows", str(rows), "--out", str(out_dir))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"{applied.name(LGBM)}@Staging: {applied.name(LGBM)} version 1 (lgbm)" in out
    assert f"run:        {LGBM_RUN} (" in out
    assert "model file: model.txt" in out
    lock = json.loads((out_dir / "regctl-resolved.json").read_text())
    assert f"verified:   yes, {lock['digest']} (11 files, the registry's record)" in out
    assert lock["verified"] is True and lock["digest"] == lock["content_digest"]
    # --out keeps the download: the version's files and what was resolved
    assert (out_dir / "model.txt").read_bytes() == (RUNS / LGBM_RUN / "model.txt").read_bytes()
    assert json.loads((out_dir / "regctl-resolved.json").read_text())["version"] == 1

    got = printed_rows(out)
    assert len(got) == rows
    assert all(len(v) == 1 and math.isfinite(v[0]) for _, v in got)

    examples = libs["make_examples"]
    booster = libs["lightgbm"].Booster(model_file=str(RUNS / LGBM_RUN / "model.txt"))
    config = json.loads((RUNS / LGBM_RUN / "pipeline_config.json").read_text())
    assert booster.feature_name() == config["features"]
    x, _ = examples.lgbm_data()
    columns = [examples.LGBM_FEATURES.index(f) for f in booster.feature_name()]
    index = [row_index(stamp, examples) for stamp, _ in got]
    direct = booster.predict(x[index][:, columns])
    for (stamp, values), want in zip(got, direct, strict=True):
        assert close(values[0], float(want)), (stamp, values, want)

    # the rows are the run's test split, the very rows pred_test.csv was written from
    shipped = read_csv(RUNS / LGBM_RUN / "pred_test.csv")
    assert [stamp for stamp, _ in got] == list(shipped)[:rows]
    for stamp, values in got:
        assert math.isclose(values[0], float(shipped[stamp]["y_pred"]), abs_tol=1e-6), stamp


# ------------------------------------------------------------------------------------ HMM


def test_hmm_at_production_predicts_what_the_model_files_predict(
    applied: Applied, libs: dict[str, Any]
) -> None:
    rows = 12
    done = infer(applied, f"{applied.name(HMM)}@Production", "--rows", str(rows))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"{applied.name(HMM)}@Production: {applied.name(HMM)} version 1 (hmm)" in out
    assert f"run:        {HMM_RUN} (" in out
    assert "model file: model.joblib" in out

    got = printed_rows(out)
    assert len(got) == rows
    assert all(len(v) == 2 and all(map(math.isfinite, v)) for _, v in got)
    found = re.search(rf"^log-likelihood of the {rows} rows: (\S+)$", out, re.M)
    assert found, out
    loglik = float(found.group(1))

    examples, joblib = libs["make_examples"], libs["joblib"]
    model = joblib.load(RUNS / HMM_RUN / "model.joblib")
    scaler = joblib.load(RUNS / HMM_RUN / "scaler.joblib")
    index = [row_index(stamp, examples) for stamp, _ in got]
    assert index == list(range(index[0], index[0] + rows))  # one sequence, decoded together
    scaled = scaler.transform(examples.hmm_data()[index])
    states = model.predict(scaled)
    confidence = model.predict_proba(scaled).max(axis=1)
    for n, (stamp, (state, p)) in enumerate(got):
        assert state == int(states[n]), stamp
        assert close(p, float(confidence[n])), stamp
    assert close(loglik, float(model.score(scaled)))

    # the rows are the test split's first: regimes.csv labels them `test`, with the same
    # states (the regimes are sticky, so the window decoded alone agrees with the series)
    shipped = read_csv(RUNS / HMM_RUN / "regimes.csv")
    first_test = next(stamp for stamp, row in shipped.items() if row["split"] == "test")
    assert got[0][0] == first_test
    assert [int(v[0]) for _, v in got] == [int(shipped[s]["state"]) for s, _ in got]


# --------------------------------------------------------------------------------- errors


def test_an_unknown_alias_is_one_line_and_exit_1(applied: Applied) -> None:
    done = infer(applied, f"{applied.name(HMM)}@Staging")
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("infer.py: error: ")
    assert "has no alias 'Staging' (aliases: Production)" in lines[0]


def test_more_rows_than_the_test_split_is_one_line_and_exit_1(applied: Applied) -> None:
    done = infer(applied, f"{applied.name(LGBM)}@Staging", "--rows", "101")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "infer.py: error: --rows 101: the example data's test split has 100 rows"
    )


# ----------------------------------------------------------------------------------- docs


def test_the_docs_show_what_the_client_prints(applied: Applied) -> None:
    """docs/inference.md's console blocks are this run's output, with the shipped names."""
    doc = (REPO / "docs" / "inference.md").read_text(encoding="utf-8")
    section = doc.split("## A real inference client", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```console\n\$ python examples/infer.py (\S+)\n(.*?)```", section, re.S)
    assert [target for target, _ in blocks] == [f"{LGBM}@Staging", f"{HMM}@Production"]
    for target, shown in blocks:
        done = infer(applied, applied.prefix + target)
        assert done.returncode == 0, done.stderr
        run_id = re.search(r"\(([0-9a-f]{32})\)", shown)
        download = re.search(r"downloaded: (\S+)", shown)
        assert run_id and download, shown
        out = done.stdout.replace(applied.prefix, "")
        out = re.sub(r"\([0-9a-f]{32}\)", f"({run_id.group(1)})", out)
        out = re.sub(r"downloaded: \S+", f"downloaded: {download.group(1)}", out)
        assert out == shown, target
