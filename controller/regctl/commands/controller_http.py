"""The controller's HTTP routes: probes, metrics and the two webhooks.

- `GET /healthz`: 200 while the loop turns (503 once it has been stuck for 2 minutes).
- `GET /readyz`: 200 while this process leads and a reconcile or sweep has succeeded,
  else 503 (a standby, or a leader demoted to one, is not ready: in Kubernetes the
  webhooks then reach the leader only).
- `GET /metrics`: Prometheus text.
- `POST /webhooks/git`: a GitHub push event, `X-Hub-Signature-256` checked against
  `REGCTL_GIT_WEBHOOK_SECRET`; a push to the watched branch makes the leader fetch at
  once. A ping is answered 200; any other event is accepted and ignored.
- `POST /webhooks/mlflow`: an MLflow registry event, signature and timestamp checked
  against `REGCTL_MLFLOW_WEBHOOK_SECRET`, a repeated delivery id refused; the model it
  names is reconciled (the loop coalesces a burst into one reconcile per model).

A forged, stale or replayed delivery gets 401 and changes nothing; without a configured
secret a webhook route answers 404, as if it did not exist.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping

from regctl.adapters.httpserve import Reply, Route
from regctl.commands.controller_state import Metrics, Status
from regctl.core.webhooks import (
    Deliveries,
    github_signature_ok,
    mlflow_delivery_problem,
    parse_registry_event,
)

__all__ = ["routes"]

_TEXT = "text/plain; charset=utf-8"


def routes(
    status: Status,
    metrics: Metrics,
    *,
    branch: str,
    git_secret: str,
    mlflow_secret: str,
    poke_git: Callable[[], None],
    poke_models: Callable[[list[str]], None],
    log: Callable[..., None],
    clock: Callable[[], float] = time.time,
) -> dict[tuple[str, str], Route]:
    """The route table for `regctl.adapters.httpserve.Listener`."""
    seen = Deliveries()
    seen_lock = threading.Lock()

    def healthz(_: Mapping[str, str], __: bytes) -> Reply:
        return Reply(200, b"ok\n") if status.healthy else Reply(503, b"loop stalled\n")

    def readyz(_: Mapping[str, str], __: bytes) -> Reply:
        if status.ready:
            return Reply(200, f"ready {status.commit}\n".encode())
        return Reply(503, b"not reconciled yet\n")

    def prometheus(_: Mapping[str, str], __: bytes) -> Reply:
        return Reply(200, metrics.text(), "text/plain; version=0.0.4; charset=utf-8")

    def git(headers: Mapping[str, str], body: bytes) -> Reply:
        if not github_signature_ok(git_secret, body, headers.get("x-hub-signature-256")):
            metrics.webhook("git", "forged")
            log("webhook", source="git", result="forged")
            return Reply(401, b"bad signature\n")
        event = headers.get("x-github-event", "")
        if event == "ping":
            metrics.webhook("git", "ping")
            return Reply(200, b"pong\n")
        ref = _push_ref(body) if event == "push" else None
        if ref != f"refs/heads/{branch}":
            metrics.webhook("git", "ignored")
            return Reply(202, b"ignored\n")
        metrics.webhook("git", "accepted")
        log("webhook", source="git", result="accepted", detail=ref)
        poke_git()
        return Reply(202, b"fetching\n")

    def mlflow(headers: Mapping[str, str], body: bytes) -> Reply:
        problem = mlflow_delivery_problem(mlflow_secret, body, headers, clock())
        if problem is not None:
            result = "stale" if "timestamp" in problem else "forged"
            metrics.webhook("mlflow", result)
            log("webhook", source="mlflow", result=result, detail=problem)
            return Reply(401, (problem + "\n").encode())
        with seen_lock:
            fresh = seen.first_time(headers.get("x-mlflow-delivery-id", ""), clock())
        if not fresh:
            metrics.webhook("mlflow", "replayed")
            log("webhook", source="mlflow", result="replayed")
            return Reply(401, b"delivery already received\n")
        event = parse_registry_event(body)
        if event is None:
            metrics.webhook("mlflow", "ignored")
            return Reply(202, b"ignored\n")
        metrics.webhook("mlflow", "accepted")
        log("webhook", source="mlflow", result="accepted", detail=f"{event.kind} {event.model}")
        poke_models([event.model])
        return Reply(202, b"reconciling\n")

    table: dict[tuple[str, str], Route] = {
        ("GET", "/healthz"): healthz,
        ("GET", "/readyz"): readyz,
        ("GET", "/metrics"): prometheus,
    }
    if git_secret:
        table[("POST", "/webhooks/git")] = git
    if mlflow_secret:
        table[("POST", "/webhooks/mlflow")] = mlflow
    return table


def _push_ref(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    ref = data.get("ref") if isinstance(data, dict) else None
    return ref if isinstance(ref, str) else None
