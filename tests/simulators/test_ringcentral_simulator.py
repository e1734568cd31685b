"""The simulator behaves like RingCentral where the gateway depends on it."""

from __future__ import annotations

import httpx

from tests.simulators.ringcentral import JWT_GRANT, SMS_FILTER, running_ringcentral
from tests.support import running_receiver


async def _login(client: httpx.AsyncClient, jwt: str = "sim-jwt") -> httpx.Response:
    return await client.post(
        "/restapi/oauth/token",
        data={"grant_type": JWT_GRANT, "assertion": jwt},
        auth=("sim-client", "sim-secret"),
    )


async def test_token_grants_and_subscription_handshake() -> None:
    async with running_ringcentral() as sim, running_receiver() as receiver:
        async with httpx.AsyncClient(base_url=sim.server_url) as client:
            assert (await _login(client, "wrong")).status_code == 400
            token = (await _login(client)).json()
            auth = {"Authorization": f"Bearer {token['access_token']}"}
            body = {
                "eventFilters": [SMS_FILTER],
                "deliveryMode": {
                    "transportType": "WebHook",
                    "address": receiver.url("/rc"),
                    "verificationToken": "t" * 32,
                },
                "expiresIn": 3600,
            }
            # The receiver answers 200 but does not echo Validation-Token: SUB-520.
            refused = await client.post("/restapi/v1.0/subscription", json=body, headers=auth)
            assert refused.status_code == 400 and refused.json()["errorCode"] == "SUB-520"
            assert receiver.received("/rc")[0].headers["validation-token"]

            receiver.behave("/rc", status=200)
            sim.throttle(1, retry_after=3)
            limited = await client.post("/restapi/v1.0/subscription", json=body, headers=auth)
            assert limited.status_code == 429 and limited.headers["retry-after"] == "3"

            refreshed = await client.post(
                "/restapi/oauth/token",
                data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"]},
                auth=("sim-client", "sim-secret"),
            )
            assert refreshed.status_code == 200
            sim.expire_access_tokens()
            expired = await client.get("/restapi/v1.0/subscription/x", headers=auth)
            assert expired.status_code == 401
