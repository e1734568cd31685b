"""What the services get from the shared anatomy: one settings base, one error body, one readiness."""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError

from gravity_fanout.settings import Settings as FanoutSettings
from gravity_ingest.settings import Settings as IngestSettings
from gravity_realtime.app import create_app as create_realtime
from gravity_realtime.settings import Settings as RealtimeSettings
from gravity_service import ServiceSettings


@pytest.mark.parametrize(
    ("settings_class", "port"), [(IngestSettings, 8001), (RealtimeSettings, 8002), (FanoutSettings, 8003)]
)
def test_every_service_reads_the_shared_variables(settings_class: type[ServiceSettings], port: int) -> None:
    settings = settings_class(GRAVITY_LOG_LEVEL="WARNING")
    assert (settings.env, settings.production, settings.log_level) == ("development", False, "warning")
    assert (settings.host, settings.port) == ("127.0.0.1", port)
    with pytest.raises(ValidationError, match="GRAVITY_LOG_LEVEL"):
        settings_class(GRAVITY_LOG_LEVEL="chatty")


def test_fanout_refuses_production_without_the_secret_key() -> None:
    with pytest.raises(ValidationError, match=r"refusing to start in production: .*GRAVITY_SECRET_KEY"):
        FanoutSettings(GRAVITY_ENV="production")
    assert FanoutSettings(GRAVITY_ENV="production", GRAVITY_SECRET_KEY="k" * 40).production


async def test_realtime_answers_unknown_paths_in_the_error_shape_and_is_not_ready_before_startup() -> None:
    app = create_realtime(RealtimeSettings())  # lifespan not entered: nothing replayed
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://realtime") as c:
        r = await c.get("/v1/nothing-here")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        r = await c.get("/readyz")
        assert r.status_code == 503
        assert r.json() == {"status": "unavailable", "checks": {"apiKeys": "replaying", "stream": "starting"}}
        assert (await c.get("/healthz")).json() == {"status": "ok"}
