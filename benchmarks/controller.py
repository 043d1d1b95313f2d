"""`regctl controller` (issue 17): how fast drift is healed and a push converges, and what
an idle controller costs.

    python benchmarks/controller.py [--repeat N] [--idle SECONDS]

One `mlflow server` on loopback with webhooks enabled (`--workers 1`; the webhook list
cached for 1 s instead of 60, so that deliveries start at once after registration), a
bare git repository as the source holding one model, and the controller as a child
process, exactly as a user runs it. Rows:

- 17a: a hand edit (the Staging alias moved to a version registered by hand) until the
  controller has put it back, with MLflow's webhook (`--self-heal --public-url`, the
  sweep an hour away). Target: at most 2 s.
- 17b: a push (a description edited) until the registry shows it, with the git webhook
  posted right after the push (`--interval 3600`). Target: at most 5 s.
- 17c: the same without the webhook, `--interval 10`. Target: at most the interval plus
  one apply.
- 17d: idle cost over `--idle` seconds with nothing changing (`--interval 60
  --sweep-interval 600`, the defaults): registry requests per hour (counted by a proxy
  in front of the server), git fetches per hour, and the controller's RSS.
  Target: RSS at most 150 MB.

`--regctl PATH` runs the controllers from another install: the figure that matters for
RSS is regctl's own dependencies (mlflow-skinny), as deployed, not a development venv
with the full mlflow (pandas, pyarrow...) that the test server needs:

    python -m venv /tmp/skinny && /tmp/skinny/bin/pip install .
    python benchmarks/controller.py --regctl /tmp/skinny/bin/regctl

It exits 0 even when a target fails: it is a report.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import http.client
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import Row, base_env, free_port, median, regctl_command, spread, start_server, table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "controller"))

REGCTL: list[str] = []
SECRET_GIT = "bench-git-secret"
SECRET_MLFLOW = "bench-mlflow-secret"
MODEL = "bench-controller"
RUN = "run_hmm_20250101_000000"


def git(*args: str, cwd: Path) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Ada", "GIT_AUTHOR_EMAIL": "a@example.com"}
    env |= {"GIT_COMMITTER_NAME": "Ada", "GIT_COMMITTER_EMAIL": "a@example.com"}
    out = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr)
    return out.stdout.strip()


class Source:
    def __init__(self, root: Path) -> None:
        self.bare = root / "source.git"
        self.work = root / "work"
        git("init", "-q", "--bare", "-b", "main", str(self.bare), cwd=root)
        git("clone", "-q", str(self.bare), str(self.work), cwd=root)
        run = self.work / "runs" / RUN
        run.mkdir(parents=True)
        (run / "pipeline_config.json").write_text(json.dumps({"model_type": "hmm"}))
        (run / "metrics.json").write_text(json.dumps({"bic_final": 1.0}))
        (run / "model.joblib").write_bytes(os.urandom(1024))
        (self.work / "manifests").mkdir()
        self.n = 0
        self.push("first")

    def push(self, description: str) -> None:
        (self.work / "manifests" / f"{MODEL}.yaml").write_text(
            f"apiVersion: regctl/v1\nkind: RegisteredModel\nname: {MODEL}\n"
            f"experiment: {MODEL}\ndescription: {description}\n"
            f"versions:\n  - run: {RUN}\n    run_dir: runs/{RUN}\n    aliases: [Staging]\n"
        )
        git("add", "-A", cwd=self.work)
        git("commit", "-qm", description, cwd=self.work)
        git("push", "-q", "origin", "HEAD:main", cwd=self.work)


class CountingProxy:
    """Forwards every request to the server and counts them (method, first path part)."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").split(":")
        self.counts: Counter[str] = Counter()
        counts, lock = self.counts, threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                return

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length", "0") or 0)
                body = self.rfile.read(length) if length else None
                with lock:
                    counts[f"{self.command} {self.path.split('?')[0]}"] += 1
                conn = http.client.HTTPConnection(host, int(port), timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request(self.command, self.path, body, headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def total(self) -> int:
        return sum(self.counts.values())


class Controller:
    def __init__(self, uri: str, src: Source, state: Path, *flags: str) -> None:
        self.port = free_port()
        env = base_env(
            REGCTL_GIT_WEBHOOK_SECRET=SECRET_GIT, REGCTL_MLFLOW_WEBHOOK_SECRET=SECRET_MLFLOW
        )
        self.log = state.with_suffix(".log")
        argv = [
            *(REGCTL or regctl_command()),
            "--tracking-uri",
            uri,
            "controller",
            "--source",
            src.bare.as_uri(),
            "--listen",
            f"127.0.0.1:{self.port}",
            "--state-dir",
            str(state),
            *[f.replace("PORT", str(self.port)) for f in flags],
        ]
        self.proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=self.log.open("wb")
        )
        wait(self.ready, 120, "controller ready")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def post_push(self) -> None:
        body = json.dumps({"ref": "refs/heads/main"}).encode()
        sig = hmac.new(SECRET_GIT.encode(), body, hashlib.sha256).hexdigest()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/webhooks/git",
            body,
            {"X-GitHub-Event": "push", "X-Hub-Signature-256": f"sha256={sig}"},
            method="POST",
        )
        urllib.request.urlopen(req, timeout=5).close()

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


def wait(check: Callable[[], bool], timeout: float, what: str, step: float = 0.01) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if check():
            return time.perf_counter() - t0
        time.sleep(step)
    raise RuntimeError(f"not within {timeout} s: {what}")


def row_revert(uri: str, src: Source, work: Path, repeat: int) -> Row:
    from mlflow import MlflowClient

    c = Controller(
        uri,
        src,
        work / "revert",
        "--interval",
        "3600",
        "--sweep-interval",
        "3600",
        "--self-heal",
        "--public-url",
        "http://127.0.0.1:PORT",
    )
    client = MlflowClient(uri)
    run_id = client.get_model_version(MODEL, "1").run_id
    hand = client.create_model_version(MODEL, f"runs:/{run_id}", run_id).version
    time.sleep(3)  # the webhook list cache (1 s here) and the echo of that create
    took = []
    try:
        for _ in range(repeat):
            t0 = time.perf_counter()
            client.set_registered_model_alias(MODEL, "Staging", hand)
            wait(
                lambda: client.get_model_version_by_alias(MODEL, "Staging").version == "1",
                30,
                "alias put back",
                0.005,
            )
            took.append(time.perf_counter() - t0)
            time.sleep(1)
    finally:
        c.stop()
        client.delete_model_version(MODEL, hand)
    m = median(took)
    return Row(
        "17a",
        "hand edit (alias moved) until reverted, MLflow webhook",
        f"{m:.2f} s",
        "Argo CD polls every 180 s; our drift workflow runs hourly",
        "",
        "<= 2 s",
        m <= 2,
        [f"{repeat} edits, {spread(took)} s"],
    )


def row_push(uri: str, src: Source, work: Path, repeat: int, webhook: bool) -> Row:
    from mlflow import MlflowClient

    interval = "3600" if webhook else "10"
    c = Controller(
        uri, src, work / f"push-{webhook}", "--interval", interval, "--sweep-interval", "3600"
    )
    client = MlflowClient(uri)
    took = []
    try:
        for i in range(repeat):
            text = f"push {webhook} {i} {time.time()}"
            t0 = time.perf_counter()
            src.push(text)
            if webhook:
                c.post_push()
            wait(
                lambda t=text: client.get_registered_model(MODEL).description == t,
                60,
                "pushed description",
                0.01,
            )
            took.append(time.perf_counter() - t0)
    finally:
        c.stop()
    m = median(took)
    if webhook:
        return Row(
            "17b",
            "push until converged, with the git webhook",
            f"{m:.2f} s",
            "",
            "",
            "<= 5 s",
            m <= 5,
            [f"{repeat} pushes, {spread(took)} s (push included)"],
        )
    return Row(
        "17c",
        "push until converged, polling every 10 s",
        f"{m:.2f} s",
        "",
        "",
        "<= 10 s + one apply",
        max(took) <= 10 + 5,
        [f"{repeat} pushes, {spread(took)} s: uniform in [apply, interval + apply]"],
    )


def row_idle(uri: str, src: Source, work: Path, seconds: float) -> Row:
    proxy = CountingProxy(uri)
    c = Controller(proxy.url, src, work / "idle")  # the defaults: --interval 60, sweep 600
    time.sleep(5)  # start-up settles (first reconcile, first sweep)
    before = proxy.total()
    time.sleep(seconds)
    requests = proxy.total() - before
    rss = c.rss_mb()
    c.stop()
    per_hour = requests * 3600 / seconds
    fetches = 3600 / 60
    return Row(
        "17d",
        f"idle controller ({'mlflow-skinny install' if REGCTL else 'this venv'}), "
        f"{seconds:.0f} s, defaults (60 s, 600 s)",
        f"{rss:.0f} MB RSS",
        "",
        "",
        "<= 150 MB",
        rss <= 150,
        [
            f"{requests} registry requests in {seconds:.0f} s = {per_hour:.0f}/h (the "
            "lease heartbeat: read, expiry tag, read every 6.7 s; plus one sweep per 10 "
            f"minutes); {fetches:.0f} git fetches/h"
        ],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--idle", type=float, default=120.0)
    parser.add_argument("--regctl", help="the regctl to run as the controller")
    args = parser.parse_args()
    if args.regctl:
        REGCTL[:] = [args.regctl]
    work = Path(tempfile.mkdtemp(prefix="regctl-bench-controller-"))
    hooks = {
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http",
        "MLFLOW_WEBHOOK_CACHE_TTL": "1",
    }
    server = start_server(work, f"sqlite:///{work / 'mlflow.db'}", env_extra=hooks)
    try:
        src = Source(work)
        rows = [
            row_push(server.url, src, work, args.repeat, webhook=True),
            row_revert(server.url, src, work, args.repeat),
            row_push(server.url, src, work, max(3, args.repeat // 2), webhook=False),
            row_idle(server.url, src, work, args.idle),
        ]
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(table(rows))
    print(f"\nmachine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
