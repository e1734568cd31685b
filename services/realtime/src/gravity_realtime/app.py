"""The realtime app: the lifespan owns the key reader, the live stream, the registry client and its key
lookup."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI

from gravity_events import topics
from gravity_events.kafka import ChangeStreamReader, ensure_topics
from gravity_realtime import ws
from gravity_realtime.consumer import LiveStream
from gravity_realtime.hub import Hub
from gravity_realtime.keys import RegistryKeys, TokenBucket
from gravity_realtime.redact import install_token_redaction
from gravity_realtime.settings import Settings
from gravity_realtime.tables import KeyTable, LiveRouter
from gravity_service.errors import install_error_handlers
from gravity_service.health import OK, health_router
from gravity_service.metrics import RealtimeMetrics, install_metrics
from gravity_service.tasks import Supervisor

__all__ = ["create_app"]


def create_app(settings: Settings) -> FastAPI:
    """Build the realtime app for ``settings``."""
    install_token_redaction()
    metrics = RealtimeMetrics(tenant_labels=settings.metrics_tenant_labels)
    hub = Hub(metrics)
    supervisor = Supervisor()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await ensure_topics(settings, create=not settings.production)
        keys = KeyTable(hub)
        key_reader = ChangeStreamReader(
            settings, topics=[topics.API_KEYS], apply=keys.apply, client_id="gravity-realtime"
        )
        live = LiveStream(settings, LiveRouter(hub))
        async with httpx.AsyncClient(base_url=settings.registry_url, timeout=10) as http:
            if settings.key_lookup_path:
                registry_keys = RegistryKeys(
                    http,
                    path=settings.key_lookup_path,
                    hit_seconds=settings.key_cache_seconds,
                    miss_seconds=settings.key_miss_cache_seconds,
                    bucket=TokenBucket(settings.key_lookups_per_second, settings.key_lookup_burst),
                    is_revoked=keys.is_revoked,
                )
                keys.on_revoked.append(registry_keys.forget)
                app.state.registry_keys = registry_keys
            await key_reader.start()
            await live.start()
            metrics.consumer_lag.track(key_reader)
            app.state.keys, app.state.http = keys, http
            app.state.key_reader, app.state.live = key_reader, live
            supervisor.start("api-keys-reader", key_reader.run(), stop=key_reader.stop)
            supervisor.start("live-stream", live.run(), stop=live.stop)
            try:
                yield
            finally:
                hub.close_all()  # 1012: clients reconnect elsewhere and resume with since
                await supervisor.stop()
                await key_reader.close()
                await live.close()

    app = FastAPI(title="Gravity realtime", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings, app.state.hub, app.state.metrics = settings, hub, metrics
    app.state.key_reader = app.state.live = app.state.registry_keys = None
    state = app.state

    def api_keys() -> str:
        """The API-key stream has been replayed, so keys can be judged."""
        return OK if state.key_reader is not None and state.key_reader.ready.is_set() else "replaying"

    def stream() -> str:
        """The live stream is positioned on every partition."""
        return OK if state.live is not None and state.live.assigned.is_set() else "starting"

    install_error_handlers(app)
    checks = {"apiKeys": api_keys, "stream": stream}
    app.include_router(health_router(checks, supervisor=supervisor, extra=lambda: {"connections": len(hub)}))
    app.include_router(ws.router)
    install_metrics(app, metrics)
    return app
