"""Webhook deliveries the controller accepts: signatures, freshness, repeats. Pure.

- GitHub push events (`POST /webhooks/git`): `X-Hub-Signature-256: sha256=<hex>`, the
  HMAC-SHA256 of the raw body with the shared secret (GitHub's scheme). GitHub signs no
  timestamp, so a replayed push is harmless by construction: it only makes the
  controller fetch, and what it applies is what the branch holds then.
- MLflow registry events (`POST /webhooks/mlflow`, MLflow 3.3 and later):
  `X-MLflow-Signature: v1,<base64>` over `<delivery id>.<timestamp>.<body>`,
  `X-MLflow-Timestamp` (unix seconds) and `X-MLflow-Delivery-Id`. A delivery older or
  newer than `MAX_SKEW` seconds is refused, and a delivery id seen before is refused
  (`Deliveries` remembers the ids of the skew window), so a captured delivery cannot be
  replayed.

Comparisons are constant-time (`hmac.compare_digest`). Every failure says why in a few
words that never echo the header's value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

__all__ = [
    "MAX_SKEW",
    "Deliveries",
    "RegistryEvent",
    "github_signature_ok",
    "mlflow_delivery_problem",
    "parse_registry_event",
]

MAX_SKEW: Final = 300.0
_MAX_IDS: Final = 100_000


def github_signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    """True when `header` is `sha256=` + the HMAC-SHA256 of `body` under `secret`."""
    if not secret or not header or not header.startswith("sha256="):
        return False
    want = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, header[len("sha256=") :].strip().lower())


def mlflow_delivery_problem(
    secret: str,
    body: bytes,
    headers: Mapping[str, str],
    now: float,
) -> str | None:
    """Why an MLflow delivery is refused (None: it is authentic and fresh)."""
    signature = headers.get("x-mlflow-signature", "")
    stamp = headers.get("x-mlflow-timestamp", "")
    delivery = headers.get("x-mlflow-delivery-id", "")
    if not secret:
        return "no secret configured"
    if not signature or not stamp or not delivery:
        return "missing signature, timestamp or delivery id"
    if len(delivery) > 200 or not (stamp.isascii() and stamp.isdigit()) or len(stamp) > 12:
        return "malformed timestamp or delivery id"
    if abs(now - int(stamp)) > MAX_SKEW:
        return f"timestamp more than {MAX_SKEW:g} s from this machine's clock"
    version, _, given = signature.partition(",")
    if version != "v1":
        return "unknown signature version"
    try:
        got = base64.b64decode(given, validate=True)
        text = body.decode("utf-8")
    except (binascii.Error, ValueError):
        return "malformed signature or body"
    signed = f"{delivery}.{stamp}.{text}".encode()
    want = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    if not hmac.compare_digest(want, got):
        return "bad signature"
    return None


class Deliveries:
    """Delivery ids seen within the skew window: a repeat is refused."""

    def __init__(self, window: float = 2 * MAX_SKEW) -> None:
        self.window = window
        self._seen: OrderedDict[str, float] = OrderedDict()

    def first_time(self, delivery: str, now: float) -> bool:
        """Record `delivery`; False when it was seen before (a replay or a retry)."""
        while self._seen:
            oldest, at = next(iter(self._seen.items()))
            if now - at <= self.window and len(self._seen) < _MAX_IDS:
                break
            self._seen.pop(oldest)
        if delivery in self._seen:
            return False
        self._seen[delivery] = now
        return True


@dataclass(frozen=True, slots=True)
class RegistryEvent:
    """What an MLflow delivery names: `entity.action` and the registered model."""

    kind: str
    model: str


def parse_registry_event(body: bytes) -> RegistryEvent | None:
    """The event's kind and model name; None when the body names no registered model."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("data"), dict):
        return None
    name = data["data"].get("name")
    entity, action = data.get("entity"), data.get("action")
    if not isinstance(name, str) or not name or len(name) > 1000:
        return None
    if not isinstance(entity, str) or not isinstance(action, str):
        return None
    return RegistryEvent(f"{entity}.{action}", name)
