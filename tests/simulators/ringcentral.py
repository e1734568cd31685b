"""A RingCentral platform simulator: a real HTTP server on loopback, for tests and benchmarks.

It implements what the gateway calls, with RingCentral's field names:

- ``POST /restapi/oauth/token`` — ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`` (``assertion``)
  and ``refresh_token``, HTTP Basic ``clientId:clientSecret``;
- ``POST /restapi/v1.0/subscription`` — performs the ``Validation-Token`` handshake against the
  ``deliveryMode.address`` and fails with ``SUB-520`` when the token is not echoed, as RingCentral does;
- ``GET/PUT/DELETE /restapi/v1.0/subscription/{id}`` and ``POST /restapi/v1.0/subscription/{id}/renew``;
- ``GET /restapi/v1.0/account/~/extension/~/message-store`` (``messageType``, ``direction``, ``dateFrom``);

and lets a test steer it: mark a subscription ``Blacklisted``, expire tokens, answer 429 with
``Retry-After``, and send instant-SMS notifications with the subscription's ``Verification-Token``.

Like RingCentral, the message-store list gives ``id`` (and ``conversationId``) as JSON integers, while
the instant notification's ``body.id`` is a string. To test what a hostile or broken platform can do, a
test can make any route misbehave over real HTTP (:meth:`RingCentralSimulator.misbehave` with
:func:`raw_answer`, :func:`trickle`, :func:`huge_body`), page the message store forever, or answer with a
subscription id of its choosing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support import serve

__all__ = [
    "Answer",
    "RingCentralSimulator",
    "SimCall",
    "SimSubscription",
    "huge_body",
    "raw_answer",
    "running_ringcentral",
    "trickle",
]

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SMS_FILTER = "/restapi/v1.0/account/~/extension/~/message-store/instant?type=SMS"


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _error(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse(
        {"errorCode": code, "message": message, "errors": [{"errorCode": code, "message": message}]},
        status_code=status,
        headers=headers,
    )


Answer = Callable[[Request], Awaitable[Response]]
"""What a misbehaving route answers instead of RingCentral's answer."""

ROUTES = ("token", "create_subscription", "subscription", "renew", "message_store")


def raw_answer(body: bytes | str, *, status: int = 200, headers: dict[str, str] | None = None) -> Answer:
    """Answer exactly ``body`` (``Content-Type: application/json`` unless ``headers`` say otherwise)."""
    content = body.encode() if isinstance(body, str) else body

    async def answer(request: Request) -> Response:
        return Response(
            content, status_code=status, headers={"content-type": "application/json", **(headers or {})}
        )

    return answer


def trickle(*, every: float = 0.2, status: int = 200) -> Answer:
    """Send the status line and headers, then one byte of a JSON body every ``every`` seconds, forever."""

    async def answer(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield b"{"
            while True:
                await asyncio.sleep(every)
                yield b" "

        return StreamingResponse(body(), status_code=status, media_type="application/json")

    return answer


def huge_body(*, size: int = 4 * 1024**3, status: int = 200) -> Answer:
    """A body of ``size`` bytes (gigabytes by default), streamed as fast as the reader takes it, with an
    honest ``Content-Length`` unless ``size`` is 0 (then chunked, endless)."""
    chunk = b'{"records": [' + b" " * (65_536 - 13)

    async def answer(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            sent = 0
            while size == 0 or sent < size:
                piece = chunk if size == 0 else chunk[: size - sent]
                sent += len(piece)
                yield piece
                # let the event loop run (the server shares it with the test): a reader that hung up
                # is noticed, and the stream ends
                await asyncio.sleep(0)

        headers = {"content-length": str(size)} if size else None
        return StreamingResponse(body(), status_code=status, media_type="application/json", headers=headers)

    return answer


@dataclass(frozen=True)
class SimCall:
    """One API call as the simulator received it."""

    method: str
    path: str
    at: float
    status: int
    detail: dict[str, Any]


@dataclass
class SimSubscription:
    """A subscription as the simulator keeps it."""

    id: str
    event_filters: list[str]
    address: str
    verification_token: str
    expires_in: int
    expiration_time: datetime
    status: str = "Active"
    created: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_json(self) -> dict[str, Any]:
        """RingCentral's subscription resource."""
        return {
            "uri": f"/restapi/v1.0/subscription/{self.id}",
            "id": self.id,
            "creationTime": _iso(self.created),
            "status": self.status,
            "eventFilters": self.event_filters,
            "expirationTime": _iso(self.expiration_time),
            "expiresIn": max(0, int((self.expiration_time - datetime.now(UTC)).total_seconds())),
            "deliveryMode": {
                "transportType": "WebHook",
                "address": self.address,
                "encryption": False,
            },
        }


class RingCentralSimulator:
    """State and steering of the simulated platform."""

    def __init__(self, *, client_id: str = "sim-client", client_secret: str = "sim-secret") -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.valid_jwts: set[str] = {"sim-jwt"}
        self.access_tokens: dict[str, datetime] = {}
        self.refresh_tokens: set[str] = set()
        self.subscriptions: dict[str, SimSubscription] = {}
        self.deleted_subscriptions: list[str] = []
        self.messages: list[dict[str, Any]] = []
        self.calls: list[tuple[str, str]] = []
        self.log: list[SimCall] = []
        self.created_requests: list[dict[str, Any]] = []
        self.rate_limit_next: int = 0
        self.fail_creates: int = 0
        self.retry_after_seconds: int = 1
        self.access_token_ttl = 3600
        self.port = 0
        self.account_id = "809646016"
        self.extension_id = "629893016"
        self.faults: dict[str, Answer] = {}
        self.endless_paging = False
        self.force_subscription_id: str | None = None
        self.renew_answers_id: str | None = None

    # -- steering ----------------------------------------------------------------------------

    @property
    def server_url(self) -> str:
        """What a tenant passes as ``serverUrl``."""
        return f"http://127.0.0.1:{self.port}"

    def blacklist(self, subscription_id: str) -> None:
        """RingCentral stopped delivering to this subscription."""
        self.subscriptions[subscription_id].status = "Blacklisted"

    def expire_access_tokens(self) -> None:
        """Every issued access token is now expired (refresh tokens still work)."""
        for token in self.access_tokens:
            self.access_tokens[token] = datetime.now(UTC) - timedelta(seconds=1)

    def revoke_refresh_tokens(self) -> None:
        """Refresh fails: the gateway must log in again with the JWT."""
        self.refresh_tokens.clear()

    def fail_subscription_creates(self, count: int) -> None:
        """The next ``count`` subscription creations answer 503 (no Retry-After)."""
        self.fail_creates = count

    def throttle(self, count: int, retry_after: int = 1) -> None:
        """The next ``count`` API calls answer 429 with ``Retry-After``."""
        self.rate_limit_next = count
        self.retry_after_seconds = retry_after

    def misbehave(self, route: str, answer: Answer | None) -> None:
        """Answer calls to ``route`` (one of :data:`ROUTES`) with ``answer`` from now on; None restores
        the normal answer. The call is still logged, with the status the fault answers."""
        if route not in ROUTES:
            raise ValueError(route)
        if answer is None:
            self.faults.pop(route, None)
        else:
            self.faults[route] = answer

    def answer_subscription_id(self, *, created: str | None = None, renewed: str | None = None) -> None:
        """Give every created subscription the id ``created``, and answer every renewal with the id
        ``renewed`` (None: the real ids), as a broken or hostile platform might."""
        self.force_subscription_id = created
        self.renew_answers_id = renewed

    def page_forever(self, enabled: bool = True) -> None:
        """The message store always promises a next page (repeating the last one)."""
        self.endless_paging = enabled

    def add_message(
        self, *, text: str = "hello", rc_id: str | None = None, **overrides: Any
    ) -> dict[str, Any]:
        """Store an inbound SMS in the message store (what the list API returns) and return it."""
        now = datetime.now(UTC)
        message = {
            "uri": "",
            "id": rc_id or str(secrets.randbelow(10**12) + 10**12),
            "to": [{"phoneNumber": "+15551234567", "name": "Support", "target": True}],
            "from": {"phoneNumber": "+15559876543", "location": "Mountain View, CA"},
            "type": "SMS",
            "creationTime": _iso(now),
            "lastModifiedTime": _iso(now),
            "readStatus": "Unread",
            "priority": "Normal",
            "attachments": [{"id": "1", "type": "Text", "contentType": "text/plain"}],
            "direction": "Inbound",
            "availability": "Alive",
            "subject": text,
            "messageStatus": "Received",
            "conversation": {"id": "1638233798595111162"},
        }
        message.update(overrides)
        self.messages.append(message)
        return message

    def notification(self, subscription_id: str, message: dict[str, Any]) -> dict[str, Any]:
        """The instant-SMS notification RingCentral would POST for ``message``."""
        return {
            "uuid": str(secrets.randbelow(10**18)),
            "event": f"/restapi/v1.0/account/{self.account_id}/extension/{self.extension_id}"
            "/message-store/instant?type=SMS",
            "timestamp": _iso(datetime.now(UTC)),
            "subscriptionId": subscription_id,
            "ownerId": self.extension_id,
            "body": {**message, "eventType": "Create"},
        }

    async def deliver(self, subscription_id: str, message: dict[str, Any]) -> httpx.Response:
        """POST ``message``'s notification to the subscription's address (again, if called again)."""
        sub = self.subscriptions[subscription_id]
        async with httpx.AsyncClient(timeout=10) as client:
            return await client.post(
                sub.address,
                json=self.notification(subscription_id, message),
                headers={"Verification-Token": sub.verification_token},
            )

    async def send_sms(
        self, subscription_id: str, *, text: str = "hello", rc_id: str | None = None
    ) -> tuple[dict[str, Any], httpx.Response]:
        """Create a message and POST its notification to the subscription's address, signed."""
        sub = self.subscriptions[subscription_id]
        message = self.add_message(text=text, rc_id=rc_id)
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(
                sub.address,
                json=self.notification(subscription_id, message),
                headers={"Verification-Token": sub.verification_token},
            )
        return message, response

    def calls_to(self, method: str, path_suffix: str) -> list[SimCall]:
        """Logged calls whose method matches and whose path ends with ``path_suffix``."""
        return [c for c in self.log if c.method == method and c.path.endswith(path_suffix)]

    # -- HTTP --------------------------------------------------------------------------------

    def _record(self, request: Request, response: Response, **detail: Any) -> Response:
        self.log.append(
            SimCall(request.method, request.url.path, time.monotonic(), response.status_code, detail)
        )
        return response

    def _throttled(self) -> Response | None:
        if self.rate_limit_next > 0:
            self.rate_limit_next -= 1
            return _error(
                429, "CMN-301", "Request rate exceeded", **{"Retry-After": str(self.retry_after_seconds)}
            )
        return None

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        token = header.removeprefix("Bearer ")
        expires = self.access_tokens.get(token)
        return expires is not None and expires > datetime.now(UTC)

    async def token(self, request: Request) -> Response:
        self.calls.append(("POST", "/restapi/oauth/token"))
        if (limited := self._throttled()) is not None:
            return limited
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return JSONResponse(
                {"error": "invalid_client", "error_description": "Invalid client"}, status_code=401
            )
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        grant = form.get("grant_type")
        if grant == JWT_GRANT:
            if form.get("assertion") not in self.valid_jwts:
                return JSONResponse(
                    {"error": "invalid_grant", "error_description": "Invalid JWT token"}, status_code=400
                )
        elif grant == "refresh_token":
            token = str(form.get("refresh_token"))
            if token not in self.refresh_tokens:
                return JSONResponse(
                    {"error": "invalid_grant", "error_description": "Token is expired"}, status_code=400
                )
            self.refresh_tokens.discard(token)
        else:
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        self.access_tokens[access] = datetime.now(UTC) + timedelta(seconds=self.access_token_ttl)
        self.refresh_tokens.add(refresh)
        return JSONResponse(
            {
                "access_token": access,
                "token_type": "bearer",
                "expires_in": self.access_token_ttl,
                "refresh_token": refresh,
                "refresh_token_expires_in": 604800,
                "scope": "ReadMessages SubscriptionWebhook",
                "owner_id": self.extension_id,
            }
        )

    async def create_subscription(self, request: Request) -> Response:
        self.calls.append(("POST", "/restapi/v1.0/subscription"))
        if (limited := self._throttled()) is not None:
            return limited
        if not self._authorized(request):
            return _error(401, "TokenInvalid", "Access token is expired or invalid")
        if self.fail_creates > 0:
            self.fail_creates -= 1
            return _error(503, "CMN-211", "Service temporarily unavailable")
        data = await request.json()
        self.created_requests.append(data)
        mode = data.get("deliveryMode") or {}
        if mode.get("transportType") != "WebHook" or not mode.get("address"):
            return _error(400, "SUB-400", "deliveryMode.transportType WebHook and address are required")
        if not data.get("eventFilters"):
            return _error(400, "SUB-400", "eventFilters are required")
        # The handshake: RingCentral POSTs a Validation-Token and expects it echoed.
        probe = secrets.token_hex(16)
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                answer = await client.post(mode["address"], headers={"Validation-Token": probe})
            echoed = answer.status_code == 200 and answer.headers.get("validation-token") == probe
        except httpx.HTTPError:
            echoed = False
        if not echoed:
            return _error(400, "SUB-520", "WebHook responds with incorrect HTTP status or Validation-Token")
        expires_in = int(data.get("expiresIn", 604800))
        sub = SimSubscription(
            id=self.force_subscription_id or secrets.token_hex(8) + "-" + secrets.token_hex(4),
            event_filters=list(data["eventFilters"]),
            address=mode["address"],
            verification_token=str(mode.get("verificationToken", "")),
            expires_in=expires_in,
            expiration_time=datetime.now(UTC) + timedelta(seconds=expires_in),
        )
        self.subscriptions[sub.id] = sub
        return JSONResponse(sub.to_json())

    async def subscription(self, request: Request) -> Response:
        sub_id = request.path_params["id"]
        self.calls.append((request.method, f"/restapi/v1.0/subscription/{sub_id}"))
        if (limited := self._throttled()) is not None:
            return limited
        if not self._authorized(request):
            return _error(401, "TokenInvalid", "Access token is expired or invalid")
        sub = self.subscriptions.get(sub_id)
        if sub is None:
            return _error(404, "SUB-100", "Subscription not found")
        if request.method == "DELETE":
            del self.subscriptions[sub_id]
            self.deleted_subscriptions.append(sub_id)
            return Response(status_code=204)
        if request.method == "PUT":
            data = await request.json()
            sub.expires_in = int(data.get("expiresIn", sub.expires_in))
            sub.expiration_time = datetime.now(UTC) + timedelta(seconds=sub.expires_in)
            sub.event_filters = list(data.get("eventFilters", sub.event_filters))
        return JSONResponse(sub.to_json())

    async def renew(self, request: Request) -> Response:
        sub_id = request.path_params["id"]
        self.calls.append(("POST", f"/restapi/v1.0/subscription/{sub_id}/renew"))
        if (limited := self._throttled()) is not None:
            return limited
        if not self._authorized(request):
            return _error(401, "TokenInvalid", "Access token is expired or invalid")
        sub = self.subscriptions.get(sub_id)
        if sub is None:
            return _error(404, "SUB-100", "Subscription not found")
        if sub.status == "Blacklisted":
            return _error(403, "SUB-522", "Subscription is blacklisted")
        sub.expiration_time = datetime.now(UTC) + timedelta(seconds=sub.expires_in)
        answer = sub.to_json()
        if self.renew_answers_id is not None:
            answer["id"] = self.renew_answers_id
        return JSONResponse(answer)

    async def message_store(self, request: Request) -> Response:
        self.calls.append(("GET", "/restapi/v1.0/account/~/extension/~/message-store"))
        if (limited := self._throttled()) is not None:
            return limited
        if not self._authorized(request):
            return _error(401, "TokenInvalid", "Access token is expired or invalid")
        q = request.query_params
        records = [
            m
            for m in self.messages
            if q.get("messageType", "SMS") == m["type"]
            and q.get("direction", m["direction"]) == m["direction"]
            and (not q.get("dateFrom") or m["creationTime"] >= q["dateFrom"])
        ]
        records.sort(key=lambda m: m["creationTime"], reverse=True)
        per_page = int(q.get("perPage", 100))
        page = int(q.get("page", 1))
        if self.endless_paging:
            page_records = records[:per_page]
            more = True
        else:
            page_records = records[(page - 1) * per_page : page * per_page]
            more = page * per_page < len(records)
        return JSONResponse(
            {
                "records": [_listed(m) for m in page_records],
                "paging": {
                    "page": page,
                    "perPage": per_page,
                    "pageStart": 0,
                    "totalPages": -(-len(records) // per_page),
                },
                "navigation": {"nextPage": {"uri": f"?page={page + 1}"}} if more else {},
            }
        )

    def _logged(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        route = handler.__name__

        async def endpoint(request: Request) -> Response:
            detail: dict[str, Any] = {}
            if request.url.path.endswith("/oauth/token"):
                form = parse_qs((await request.body()).decode())
                detail["grant_type"] = form.get("grant_type", [""])[0]
            fault = self.faults.get(route)
            if fault is not None:
                self.calls.append((request.method, request.url.path))
                return self._record(request, await fault(request), fault=True, **detail)
            return self._record(request, await handler(request), **detail)

        return endpoint

    def app(self) -> Starlette:
        """The ASGI app."""
        return Starlette(
            routes=[
                Route("/restapi/oauth/token", self._logged(self.token), methods=["POST"]),
                Route("/restapi/v1.0/subscription", self._logged(self.create_subscription), methods=["POST"]),
                Route(
                    "/restapi/v1.0/subscription/{id}",
                    self._logged(self.subscription),
                    methods=["GET", "PUT", "DELETE"],
                ),
                Route("/restapi/v1.0/subscription/{id}/renew", self._logged(self.renew), methods=["POST"]),
                Route(
                    "/restapi/v1.0/account/~/extension/~/message-store",
                    self._logged(self.message_store),
                    methods=["GET"],
                ),
            ]
        )


def _listed(message: dict[str, Any]) -> dict[str, Any]:
    """A stored message as the list API gives it: ``id`` and ``conversationId`` as JSON integers."""
    listed = dict(message)
    if str(listed.get("id", "")).isdigit():
        listed["id"] = int(listed["id"])
    conversation = listed.get("conversation")
    if isinstance(conversation, dict) and str(conversation.get("id", "")).isdigit():
        listed["conversationId"] = int(conversation["id"])
    return listed


@contextlib.asynccontextmanager
async def running_ringcentral() -> AsyncIterator[RingCentralSimulator]:
    """Serve a fresh simulator on a free loopback port for the duration of the block."""
    sim = RingCentralSimulator()
    async with serve(sim.app(), lifespan="off") as port:
        sim.port = port
        yield sim
