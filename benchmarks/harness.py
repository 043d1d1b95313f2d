"""Benchmark plumbing: throwaway servers, timed child processes, the result table.

Every figure is taken from a child process (wall time from start to exit, peak RSS from
`wait4`), so regctl and its baselines pay the same interpreter start-up. Repeated
measurements are interleaved (A B, B A, A B...) and the median is reported: the machine
is noisy, so only figures taken side by side in one run are compared.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PYTHON = sys.executable
REGCTL = [PYTHON, "-m", "regctl"]
PROBE = [PYTHON, str(HERE / "probe.py")]


def regctl_command() -> list[str]:
    """The installed `regctl` console script beside this interpreter, else `-m regctl`."""
    script = Path(PYTHON).parent / "regctl"
    return [str(script)] if script.exists() else list(REGCTL)


def base_env(**extra: str) -> dict[str, str]:
    """The environment of every child: no inherited MLflow settings, no telemetry."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MLFLOW_") and k not in ("REGCTL_COMMIT", "PYTEST_CURRENT_TEST")
    }
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "controller"), env.get("PYTHONPATH", "")) if p
    )
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- servers ------------------------------------------------------------------------------


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    root: Path
    started_in: float

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)


def start_server(
    root: Path,
    backend_uri: str,
    *,
    default_workers: bool = False,
    env_extra: Mapping[str, str] | None = None,
) -> Server:
    """`mlflow server` on a free loopback port: `--workers 1` and no job runner, or MLflow's
    defaults (4 workers, job runner) when `default_workers`; `env_extra` is added to its
    environment (the webhook settings of benchmarks/controller.py)."""
    port = free_port()
    env = base_env(**(env_extra or {}))
    cmd = [
        PYTHON,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_uri,
        "--artifacts-destination",
        str(root / "mlartifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if not default_workers:
        cmd += ["--workers", "1"]
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    log = (root / f"server-{port}.log").open("wb")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = (root / f"server-{port}.log").read_text(errors="replace")
            raise RuntimeError(f"mlflow server exited:\n{text[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                if resp.status == 200:
                    server = Server(url, proc, root, time.perf_counter() - t0)
                    warm_up(url)
                    return server
        except OSError:
            time.sleep(0.25)
    Server(url, proc, root, 0.0).stop()
    raise RuntimeError("mlflow server did not become healthy in 180 s")


def warm_up(url: str, requests: int = 64, threads: int = 8) -> None:
    """Send bursts of cheap reads (each search regctl and the baselines use) and small
    artifact uploads, so that every worker process has served every kind before anything
    is measured: a long-running server is warm, and a worker's first requests of a kind
    are slow (about 8 s more for a first sync against a cold 4-worker server)."""
    from concurrent.futures import ThreadPoolExecutor

    api = url + "/api/2.0/mlflow"
    reads: list[tuple[str, bytes | None]] = [
        ("/registered-models/search?max_results=1", None),
        ("/model-versions/search?max_results=1", None),
        ("/experiments/search", b'{"max_results": 1}'),
        ("/runs/search", b'{"experiment_ids": ["0"], "max_results": 1}'),
    ]

    def get(i: int) -> None:
        path, body = reads[i % len(reads)]
        with contextlib.suppress(OSError):
            req = urllib.request.Request(api + path, data=body, method="POST" if body else "GET")
            req.add_header("Content-Type", "application/json")
            with urllib.request.urlopen(req, timeout=60) as resp:
                resp.read()

    def put(i: int) -> None:
        with contextlib.suppress(OSError):
            target = f"{url}/api/2.0/mlflow-artifacts/artifacts/warm-up/{i}.bin"
            req = urllib.request.Request(target, data=b"x" * 1024, method="PUT")
            with urllib.request.urlopen(req, timeout=60) as resp:
                resp.read()

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(get, range(requests)))
        list(pool.map(put, range(requests)))


# -- child processes ----------------------------------------------------------------------


@dataclass
class Proc:
    """One finished child: exit code, wall seconds, peak RSS (MB), output, CPU seconds."""

    argv: list[str]
    rc: int
    wall: float
    rss_mb: float
    out: str
    err: str
    cpu: float = 0.0


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 900.0,
    check: bool = True,
) -> Proc:
    """Run a child to completion; its own peak RSS comes from wait4 (not its siblings')."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            list(argv), env=dict(env or base_env()), cwd=cwd, stdout=out, stderr=err
        )
        deadline = t0 + timeout
        while True:  # poll (1 ms): a blocking wait4 once hung here with no child left
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                deadline = math.inf
            time.sleep(0.001)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        result = Proc(
            list(argv),
            proc.returncode,
            wall,
            usage.ru_maxrss / 1024,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
            usage.ru_utime + usage.ru_stime,
        )
    if check and result.rc != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {result.rc}:\n{result.out[-2000:]}\n{result.err[-3000:]}"
        )
    return result


def interleaved(runs: Mapping[str, Callable[[], Proc]], repeat: int) -> dict[str, list[Proc]]:
    """Run each callable `repeat` times, alternating the order every round."""
    names = list(runs)
    out: dict[str, list[Proc]] = {n: [] for n in names}
    for i in range(repeat):
        for name in names if i % 2 == 0 else reversed(names):
            out[name].append(runs[name]())
    return out


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float]) -> str:
    """min-max of repeated figures, for the noise column."""
    if len(values) < 2:
        return ""
    return f"{min(values):.2f}-{max(values):.2f}"


# -- the table ----------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the result table."""

    row: str
    what: str
    regctl: str
    baseline: str
    ratio: str
    target: str
    ok: bool | None
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return "info" if self.ok is None else ("PASS" if self.ok else "FAIL")


def table(rows: Sequence[Row]) -> str:
    """A markdown table (pasteable into docs/performance.md)."""
    head = ("row", "what regctl does", "regctl", "baseline", "ratio", "target", "result")
    body = [(r.row, r.what, r.regctl, r.baseline, r.ratio, r.target, r.verdict) for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(b) for b in body]
    notes = [f"- {r.row}: {n}" for r in rows for n in r.notes]
    if notes:
        out += ["", "Notes:", *notes]
    return "\n".join(out)
