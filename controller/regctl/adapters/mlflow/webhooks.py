"""MLflow's webhooks (MLflow 3.3 and later): the one the controller keeps registered."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from regctl.adapters.mlflow.client import StoreClient


class WebhookWrites(StoreClient):
    """Create or update the registry webhook named `name` (one per registry)."""

    def ensure_webhook(
        self, name: str, url: str, events: Sequence[str], secret: str, description: str
    ) -> str:
        """Point the webhook `name` at `url` for `events`, signed with `secret`, active;
        created when missing. Returns its id. Every field is written on each call (the
        secret is never readable back, so "unchanged" cannot be told)."""
        from mlflow.entities.webhook import WebhookEvent, WebhookStatus

        wanted = [WebhookEvent(*e.split(".", 1)) for e in events]
        found = None
        token: str | None = None
        while True:
            listing = functools.partial(
                self._registry.list_webhooks, max_results=100, page_token=token
            )
            page = self._call("list webhooks", listing)
            found = next((w for w in page if w.name == name), None)
            token = page.token
            if found is not None or not token:
                break
        if found is None:
            hook = self._call(
                "create webhook",
                lambda: self._registry.create_webhook(
                    name,
                    url,
                    wanted,
                    description=description,
                    secret=secret,
                    status=WebhookStatus.ACTIVE,
                ),
            )
            return str(hook.webhook_id)
        hook_id = found.webhook_id
        self._call(
            "update webhook",
            lambda: self._registry.update_webhook(
                hook_id,
                url=url,
                events=wanted,
                description=description,
                secret=secret,
                status=WebhookStatus.ACTIVE,
            ),
        )
        return str(hook_id)
