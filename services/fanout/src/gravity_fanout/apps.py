"""The apps table: every app's delivery configuration, kept current by the apps change stream.

Apps arrive only from ``gravity.registry.apps.v1`` (compacted, replayed from the beginning by every fanout
copy); signing secrets travel there encrypted and are decrypted here with ``GRAVITY_SECRET_KEY``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from gravity_events import topics
from gravity_events.kafka import ChangeStreamReader, Envelope
from gravity_events.models import AppDeleted, AppUpserted
from gravity_events.settings import KafkaSettings
from gravity_webhooks import DecryptionError, SecretBox

__all__ = ["App", "AppTable", "make_apps_reader"]

log = logging.getLogger(__name__)


@dataclass
class App:
    """One app's delivery configuration, secrets decrypted."""

    app_id: str
    tenant_id: str
    webhook_url: str | None
    disabled: bool
    secrets: list[tuple[str, datetime | None]]
    updated_at: datetime
    failing_since: datetime | None = None

    def live_secrets(self, now: datetime) -> list[str]:
        """Secrets to sign with now (the previous one only until its rotation window ends)."""
        return [s for s, expires in self.secrets if expires is None or expires > now]

    @property
    def deliverable(self) -> bool:
        """Has a URL, is enabled, and has a secret to sign with."""
        return bool(self.webhook_url) and not self.disabled and bool(self.secrets)


@dataclass
class AppTable:
    """appId → App and tenantId → its apps, kept current by the apps change stream.

    ``on_removed`` is called with an app's id whenever it stops receiving (deleted, disabled, no URL or
    no usable secret), so its lane and connections can be released.
    """

    box: SecretBox
    on_removed: Callable[[str], None] = lambda app_id: None
    _apps: dict[str, App] = field(default_factory=dict)
    _by_tenant: dict[str, dict[str, App]] = field(default_factory=dict)

    def apply(self, envelope: Envelope) -> None:
        """Apply one change record (last write wins, as on the compacted topic)."""
        event = envelope.event
        if isinstance(event, AppUpserted):
            self._upsert(event)
        elif isinstance(event, AppDeleted):
            self._remove(event.app_id)

    def _upsert(self, event: AppUpserted) -> None:
        try:
            secrets = [(self.box.decrypt(s.ciphertext), s.expires_at) for s in event.signing_secrets]
        except DecryptionError:
            log.error("app %s: its signing secret cannot be decrypted with GRAVITY_SECRET_KEY", event.app_id)
            secrets = []
        old = self._apps.get(event.app_id)
        app = App(
            app_id=event.app_id,
            tenant_id=event.tenant_id,
            webhook_url=event.webhook_url,
            disabled=event.disabled,
            secrets=secrets,
            updated_at=event.updated_at,
            failing_since=old.failing_since if old is not None and not event.disabled else None,
        )
        if old is not None and old.disabled and not event.disabled:
            app.failing_since = None  # re-enabled: the failure clock starts again
        self._apps[app.app_id] = app
        self._by_tenant.setdefault(app.tenant_id, {})[app.app_id] = app
        if not app.deliverable:
            self.on_removed(app.app_id)

    def _remove(self, app_id: str) -> None:
        app = self._apps.pop(app_id, None)
        if app is not None:
            self._by_tenant.get(app.tenant_id, {}).pop(app_id, None)
        self.on_removed(app_id)

    def get(self, app_id: str) -> App | None:
        """The app, if it exists."""
        return self._apps.get(app_id)

    def targets(self, tenant_id: str) -> list[App]:
        """The tenant's apps that receive deliveries now."""
        return [a for a in self._by_tenant.get(tenant_id, {}).values() if a.deliverable]

    def __len__(self) -> int:
        return len(self._apps)


def make_apps_reader(settings: KafkaSettings, apps: AppTable) -> ChangeStreamReader:
    """The reader that replays the apps change stream into ``apps`` and then follows it."""
    return ChangeStreamReader(settings, topics=[topics.APPS], apply=apps.apply, client_id="gravity-fanout")
