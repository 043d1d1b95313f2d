"""What the controller shows: its status (for /healthz and /readyz), its Prometheus
metrics (/metrics) and its log lines (one per reconcile; text or JSON).

Metrics (prometheus-client, a registry of the controller's own, not the global one):

- `regctl_reconcile_total{result}`: reconciles by result (applied, unchanged, invalid,
  denied, error, in-sync, drift, healed, incomplete, lease-lost);
- `regctl_reconcile_duration_seconds`: their durations (a histogram);
- `regctl_drift_objects`: what the last sweep found different from the last good commit;
- `regctl_last_applied_commit_info{commit}`: the commit last applied;
- `regctl_leader`: 1 while this process holds the lease, else 0;
- `regctl_webhook_events_total{source, result}`: webhook deliveries (accepted,
  forged, replayed, stale, ignored, malformed).

Log values are escaped (`regctl.escape.text`): a commit id, a model name or a server's
error message cannot start a new line or move the cursor.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import threading
import time
from typing import IO, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

from regctl import escape

__all__ = ["ControllerLog", "Metrics", "Status"]


class Status:
    """The loop's liveness and readiness, shared with the HTTP threads."""

    def __init__(self, stale_after: float = 120.0) -> None:
        self._lock = threading.Lock()
        self._beat = time.monotonic()
        self._ready = False
        self._commit = ""
        self.stale_after = stale_after

    def beat(self) -> None:
        with self._lock:
            self._beat = time.monotonic()

    def applied(self, commit: str) -> None:
        with self._lock:
            self._ready, self._commit = True, commit

    def standby(self) -> None:
        """Not the leader (any more): not ready, so a Service routes webhooks elsewhere."""
        with self._lock:
            self._ready = False

    @property
    def healthy(self) -> bool:
        """The loop ran recently (it turns at least every lease-TTL/3 or standby poll)."""
        with self._lock:
            return time.monotonic() - self._beat < self.stale_after

    @property
    def ready(self) -> bool:
        """This process leads and a reconcile (or a sweep) has succeeded since it took the
        lease."""
        with self._lock:
            return self._ready

    @property
    def commit(self) -> str:
        with self._lock:
            return self._commit


class Metrics:
    """The controller's metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._reconciles = Counter(
            "regctl_reconcile", "Reconciles by result.", ["result"], registry=r
        )
        self._duration = Histogram(
            "regctl_reconcile_duration_seconds",
            "How long a reconcile took.",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
            registry=r,
        )
        self._drift = Gauge(
            "regctl_drift_objects", "Objects the last sweep found differing.", registry=r
        )
        self._commit = Info("regctl_last_applied_commit", "The commit last applied.", registry=r)
        self._leader = Gauge("regctl_leader", "1 while this process holds the lease.", registry=r)
        self._webhooks = Counter(
            "regctl_webhook_events",
            "Webhook deliveries by result.",
            ["source", "result"],
            registry=r,
        )

    def reconciled(self, result: str, seconds: float) -> None:
        self._reconciles.labels(result=result).inc()
        if seconds > 0:
            self._duration.observe(seconds)

    def drift(self, objects: int) -> None:
        self._drift.set(objects)

    def applied_commit(self, commit: str) -> None:
        self._commit.info({"commit": commit})

    def leader(self, holding: bool) -> None:
        self._leader.set(1 if holding else 0)

    def webhook(self, source: str, result: str) -> None:
        self._webhooks.labels(source=source, result=result).inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)


class ControllerLog:
    """One line per event on `stream`: `key=value` text, or one JSON object."""

    def __init__(self, fmt: str = "text", stream: IO[str] | None = None) -> None:
        if fmt not in ("text", "json"):
            raise ValueError(f"unknown log format {fmt!r}")
        self.fmt = fmt
        self.stream = stream if stream is not None else sys.stderr
        self._lock = threading.Lock()

    def event(self, event: str, **fields: Any) -> None:
        at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
        clean = {k: escape.text(v) if isinstance(v, str) else v for k, v in fields.items()}
        if self.fmt == "json":
            line = json.dumps({"time": at, "event": event, **clean}, ensure_ascii=True)
        else:
            parts = [f"{k}={_quoted(v)}" for k, v in clean.items() if v not in ("", None)]
            line = " ".join([at, event, *parts])
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()


def _quoted(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (" " in text or '"' in text or not text) else text
