"""A tiny service run by ``serve()`` in a subprocess: ``POST /break`` makes its supervised task raise.

Usage: ``python dying_service.py PORT``. Prints ``cleaned up`` when its lifespan's shutdown ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import Response

from gravity_events import logs
from gravity_service import Supervisor, health_router, install_error_handlers, serve


def create_app() -> FastAPI:
    """The app: one supervised loop that raises once ``/break`` was posted."""
    supervisor = Supervisor()
    broken = asyncio.Event()

    async def loop() -> None:
        await broken.wait()
        raise RuntimeError("the consumer loop broke")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        supervisor.start("consumer", loop())
        try:
            yield
        finally:
            await supervisor.stop()
            print("cleaned up", flush=True)

    app = FastAPI(lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(health_router(supervisor=supervisor))

    @app.post("/break")
    async def break_it() -> Response:
        broken.set()
        return Response(status_code=202)

    return app


if __name__ == "__main__":
    logs.configure("info")
    serve(create_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="info")
