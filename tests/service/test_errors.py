"""The contract's error body through a tiny FastAPI app with the shared handlers installed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, Field

from gravity_service import GravityError, error_body, install_error_handlers, json_response


class Teapot(GravityError):
    """A service's own error, as each service declares its tree."""

    status, code = 418, "teapot"


class Widget(BaseModel):
    name: str = Field(min_length=1)
    size: int


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/teapot")
    async def teapot(detailed: bool = False) -> None:
        raise Teapot("short and stout", {"spout": True} if detailed else None)

    @app.post("/widgets")
    async def widgets(widget: Widget, limit: int = 10) -> Any:
        return json_response(widget.model_dump(), 201)

    @app.get("/broken")
    async def broken() -> None:
        raise RuntimeError("an unexpected bug")

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # the catch-all answers 500 and Starlette re-raises for the server to log; the client sees the answer
    transport = httpx.ASGITransport(_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as c:
        yield c


async def test_a_gravity_error_answers_its_status_code_and_message(client: httpx.AsyncClient) -> None:
    r = await client.get("/teapot")
    assert r.status_code == 418 and r.headers["content-type"] == "application/json"
    assert r.json() == {"error": {"code": "teapot", "message": "short and stout"}}  # no details: left out
    r = await client.get("/teapot", params={"detailed": "true"})
    assert r.json() == {"error": {"code": "teapot", "message": "short and stout", "details": {"spout": True}}}


async def test_validation_errors_name_each_field(client: httpx.AsyncClient) -> None:
    r = await client.post("/widgets", params={"limit": "many"}, json={"name": "", "size": "big"})
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "validation_error" and error["message"]
    assert {d["field"] for d in error["details"]} == {"name", "size", "query.limit"}
    assert all(set(d) == {"field", "message"} and d["message"] for d in error["details"])
    r = await client.post("/widgets", content=b"{oops", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"
    assert (await client.post("/widgets", json={"name": "w", "size": 1})).status_code == 201


async def test_unknown_routes_and_methods_answer_in_the_error_shape(client: httpx.AsyncClient) -> None:
    r = await client.get("/nothing-here")
    assert r.status_code == 404 and r.json() == error_body("not_found", "Not Found")
    r = await client.delete("/widgets")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert r.headers["allow"] == "POST"


async def test_an_unexpected_error_is_a_logged_500_in_the_error_shape(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    r = await client.get("/broken")
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "internal_error"
    assert "an unexpected bug" not in r.text  # the cause is for the log, not the caller
    [record] = [rec for rec in caplog.records if rec.name == "gravity_service.errors"]
    assert record.exc_info is not None and "an unexpected bug" in str(record.exc_info[1])


def test_error_body_and_class_attributes() -> None:
    assert error_body("conflict", "already there") == {
        "error": {"code": "conflict", "message": "already there"}
    }
    assert (GravityError.status, GravityError.code, GravityError.retriable) == (500, "internal_error", False)
    error = Teapot("m", [1])
    assert str(error) == "m" and error.body() == {"error": {"code": "teapot", "message": "m", "details": [1]}}
