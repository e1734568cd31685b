"""``make run``: the embedded infrastructure and the four services, supervised.

Start order: infrastructure, then the registry (it applies migrations), then ingest, realtime and
fanout; each must answer ``/readyz`` before the next starts. Output of each service is prefixed with its
name. Ctrl-C (SIGINT) or SIGTERM stops the services (SIGTERM, SIGKILL after a grace period), then the
infrastructure. A service that exits after it was up (a service ends itself with status 1 when one of its
background tasks dies) is started again, as compose's ``restart:`` or Kubernetes would, up to
``MAX_RESTARTS`` times in ``RESTART_WINDOW`` seconds; a service that cannot start, or keeps exiting, stops
everything, so a half-running stack never pretends to be up. Children die with the supervisor even if it
is SIGKILLed (PR_SET_PDEATHSIG); embedded PostgreSQL, which daemonizes, is stopped explicitly and found again
on the next start.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import httpx

from gravity_devstack.procs import spawn, stop_process

__all__ = ["ServiceSpec", "Supervisor", "default_services", "dev_environment"]

DEV_ADMIN_TOKEN = "dev-admin-token"  # noqa: S105 - the documented development default
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0


@dataclass(frozen=True)
class ServiceSpec:
    """One supervised process."""

    name: str
    args: Sequence[str]
    port: int
    ready_path: str = "/readyz"


def default_services(env: dict[str, str]) -> list[ServiceSpec]:
    """The four Gravity services, registry first."""
    py = sys.executable
    return [
        ServiceSpec("registry", [py, "-m", "gravity_registry"], int(env["GRAVITY_REGISTRY_PORT"])),
        ServiceSpec("ingest", [py, "-m", "gravity_ingest"], int(env["GRAVITY_INGEST_PORT"])),
        ServiceSpec("realtime", [py, "-m", "gravity_realtime"], int(env["GRAVITY_REALTIME_PORT"])),
        ServiceSpec("fanout", [py, "-m", "gravity_fanout"], int(env["GRAVITY_FANOUT_PORT"])),
    ]


def dev_environment(data_dir: Path, infra_env: dict[str, str]) -> dict[str, str]:
    """Development defaults for every variable the user did not set."""
    key_file = data_dir / "dev-secret-key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(32))
        key_file.chmod(0o600)
    defaults = {
        "GRAVITY_ENV": "development",
        "GRAVITY_ADMIN_TOKEN": DEV_ADMIN_TOKEN,
        "GRAVITY_SECRET_KEY": key_file.read_text().strip(),
        "GRAVITY_PUBLIC_URL": "http://127.0.0.1:8001",
        "GRAVITY_REGISTRY_PORT": "8000",
        "GRAVITY_INGEST_PORT": "8001",
        "GRAVITY_REALTIME_PORT": "8002",
        "GRAVITY_FANOUT_PORT": "8003",
    }
    # the user's environment wins, so a setting such as KAFKA_FETCH_MAX_WAIT_MS can be tried on the stack
    env = {**defaults, **infra_env, **os.environ}
    env.setdefault("GRAVITY_REGISTRY_URL", f"http://127.0.0.1:{env['GRAVITY_REGISTRY_PORT']}")
    return env


class Supervisor:
    """Runs services until a signal or a crash, then stops all of them."""

    def __init__(self, services: Sequence[ServiceSpec], env: dict[str, str], *, ready_timeout: float = 90):
        self._services = list(services)
        self._env = env
        self._ready_timeout = ready_timeout
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._pumps: list[threading.Thread] = []
        self._stop = threading.Event()
        self._restarts: dict[str, list[float]] = {}
        self._retired: list[subprocess.Popen[bytes]] = []
        self.exit_code = 0

    def _pump(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        if proc.stdout is None:
            return
        width = max(len(s.name) for s in self._services)
        for line in iter(proc.stdout.readline, b""):
            sys.stdout.write(f"{name:<{width}} | {line.decode(errors='replace')}")
            sys.stdout.flush()

    def _start(self, spec: ServiceSpec) -> None:
        proc = spawn(spec.args, env=self._env, stdout=subprocess.PIPE)
        self._procs[spec.name] = proc
        pump = threading.Thread(target=self._pump, args=(spec.name, proc), daemon=True)
        pump.start()
        self._pumps.append(pump)
        url = f"http://127.0.0.1:{spec.port}{spec.ready_path}"
        deadline = time.monotonic() + self._ready_timeout
        while not self._stop.is_set():
            if proc.poll() is not None:
                raise RuntimeError(f"{spec.name} exited with code {proc.returncode} while starting")
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{spec.name} was not ready at {url} within {self._ready_timeout}s")
            self._stop.wait(0.2)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop.set()

    def run(self, banner: str) -> int:
        """Start everything, print ``banner``, wait for a signal or a crash, stop everything."""
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        try:
            for spec in self._services:
                if self._stop.is_set():
                    break
                self._start(spec)
            if not self._stop.is_set():
                print(banner, flush=True)
            while not self._stop.is_set():
                for spec in self._services:
                    proc = self._procs.get(spec.name)
                    if proc is not None and proc.poll() is not None and not self._restart(spec, proc):
                        self.exit_code = 1
                        self._stop.set()
                        break
                self._stop.wait(0.5)
        except (RuntimeError, TimeoutError) as exc:
            print(f"\n{exc}: stopping everything", flush=True)
            self.exit_code = 1
        finally:
            self.stop_all()
        return self.exit_code

    def _restart(self, spec: ServiceSpec, proc: subprocess.Popen[bytes]) -> bool:
        """Start ``spec`` again after it exited; False when it exited too often to try again."""
        now = time.monotonic()
        recent = [t for t in self._restarts.get(spec.name, []) if now - t < RESTART_WINDOW]
        if len(recent) >= MAX_RESTARTS:
            print(
                f"\n{spec.name} exited with code {proc.returncode}, {len(recent)} restarts in "
                f"{RESTART_WINDOW:.0f} s: stopping everything",
                flush=True,
            )
            return False
        self._restarts[spec.name] = [*recent, now]
        print(f"\n{spec.name} exited with code {proc.returncode}: starting it again", flush=True)
        self._retired.append(proc)
        self._start(spec)
        return True

    def stop_all(self) -> None:
        """Stop services in reverse start order."""
        for name in reversed(list(self._procs)):
            stop_process(self._procs[name], grace=10)
        for pump in self._pumps:
            pump.join(timeout=2)
        for proc in [*self._retired, *self._procs.values()]:
            if proc.stdout is not None:
                proc.stdout.close()
