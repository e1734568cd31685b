"""Child processes that never outlive their parent.

Every child starts in its own process group (so a stop reaches its children too) and, on Linux, with
``PR_SET_PDEATHSIG`` = SIGKILL, so even a supervisor killed with SIGKILL leaves nothing behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

__all__ = ["spawn", "stop_process"]

_PR_SET_PDEATHSIG = 1


def _child_setup() -> None:  # runs in the child between fork and exec
    os.setpgrp()
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass  # not Linux: process groups and the supervisor's own clean-up still apply


def spawn(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    log: Path | None = None,
    stdout: int | IO[bytes] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``args`` in its own process group, tied to this process's life."""
    out: int | IO[bytes] | None = stdout
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        out = log.open("ab")
    try:
        return subprocess.Popen(  # noqa: S603 - our own binaries and modules
            list(args),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            preexec_fn=_child_setup,
        )
    finally:
        if log is not None and out is not None and not isinstance(out, int):
            out.close()  # the child has its own descriptor


def stop_process(proc: subprocess.Popen[bytes], *, grace: float = 8.0) -> None:
    """SIGTERM the child's group, wait ``grace`` seconds, then SIGKILL the group."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
