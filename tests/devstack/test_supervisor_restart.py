"""``make run``'s supervisor starts a service again when it exits after it was up, and gives up on one
that keeps exiting."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support import free_port

# Serves /readyz, then, once the supervisor has seen it ready and ``die`` exists, removes ``die`` and exits
# with status 1: a service whose background task died.
DYING = textwrap.dedent(
    """
    import os, sys, threading, time
    from http.server import BaseHTTPRequestHandler, HTTPServer
    port, die, starts = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    with open(starts, "a") as f:
        f.write("start\\n")
    served = threading.Event()
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers(); self.wfile.write(b'{"status":"ok"}')
            self.wfile.flush()
            served.set()
        def log_message(self, *a):
            pass
    server = HTTPServer(("127.0.0.1", port), H)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print("up", flush=True)
    while True:
        if served.is_set() and os.path.exists(die):
            os.remove(die)
            print("a background task died", flush=True)
            os._exit(1)
        time.sleep(0.05)
    """
)


def _supervise(tmp_path: Path, repo_root: Path, *, port: int) -> subprocess.Popen[str]:
    service = tmp_path / "dying.py"
    service.write_text(DYING)
    script = textwrap.dedent(
        f"""
        import sys
        from gravity_devstack.supervisor import ServiceSpec, Supervisor
        args = [sys.executable, {str(service)!r}, "{port}", {str(tmp_path / "die")!r}, {str(tmp_path / "starts")!r}]
        sys.exit(Supervisor([ServiceSpec("svc", args, {port})], {{"PATH": "/usr/bin:/bin"}}).run("STACK IS UP"))
        """
    )
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=repo_root)


def _read_until(proc: subprocess.Popen[str], text: str) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"{text!r} never printed; got {lines}")


def test_a_service_that_dies_after_start_is_started_again(tmp_path: Path, repo_root: Path) -> None:
    with _supervise(tmp_path, repo_root, port=free_port()) as sup:
        try:
            _read_until(sup, "STACK IS UP")
            (tmp_path / "die").touch()
            _read_until(sup, "svc exited with code 1: starting it again")
            _read_until(sup, "svc | up")
            assert sup.poll() is None, "the stack stays up"
            assert (tmp_path / "starts").read_text().count("start") == 2
            sup.send_signal(2)
            assert sup.wait(30) == 0
        finally:
            sup.kill()


def test_a_service_that_keeps_dying_stops_everything(tmp_path: Path, repo_root: Path) -> None:
    with _supervise(tmp_path, repo_root, port=free_port()) as sup:
        try:
            _read_until(sup, "STACK IS UP")
            for _ in range(6):
                (tmp_path / "die").touch()
                lines = _read_until(sup, "svc exited with code 1")
            assert "restarts in 60 s: stopping everything" in lines[-1]
            assert sup.wait(30) == 1
        finally:
            sup.kill()
