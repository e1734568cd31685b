"""deploy/nginx.conf, the compose front: parsed here into directives, and `nginx -t` where nginx is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

FORWARDED = ("Host", "X-Forwarded-For", "X-Forwarded-Proto")


@dataclass
class Directive:
    name: str
    args: list[str]
    block: list[Directive] | None = None
    parent: Directive | None = field(default=None, repr=False)

    def children(self, name: str) -> list[Directive]:
        return [d for d in self.block or [] if d.name == name]

    def child(self, name: str) -> Directive:
        (found,) = self.children(name)
        return found


_TOKEN = re.compile(r"""\s+|\#[^\n]*|'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)"|([{};])|([^\s{};'"#]+)""")


def _parse(text: str) -> Directive:
    """nginx's grammar, as far as this file needs: words, quoted strings, `;`, `{ }`, comments."""
    root = Directive("main", [], [])
    stack, words = [root], []
    for match in _TOKEN.finditer(text):
        single, double, punct, word = match.groups()
        if punct == ";":
            assert words, "empty directive"
            stack[-1].block.append(Directive(words[0], words[1:], None, stack[-1]))  # type: ignore[union-attr]
            words = []
        elif punct == "{":
            block = Directive(words[0], words[1:], [], stack[-1])
            stack[-1].block.append(block)  # type: ignore[union-attr]
            stack.append(block)
            words = []
        elif punct == "}":
            assert not words, f"unterminated directive {words}"
            stack.pop()
        elif single is not None or double is not None:
            words.append(single if single is not None else double)
        elif word is not None:
            words.append(word)
    assert len(stack) == 1 and not words, "unbalanced braces"
    return root


@pytest.fixture(scope="module")
def conf(repo_root: Path) -> Directive:
    return _parse((repo_root / "deploy" / "nginx.conf").read_text())


def _proxy_headers(location: Directive) -> dict[str, str]:
    """The headers nginx sends upstream from a location: its own proxy_set_header if it has any,
    else the nearest enclosing level's (nginx inherits the whole list or nothing)."""
    level: Directive | None = location
    while level is not None:
        own = level.children("proxy_set_header")
        if own:
            return {d.args[0]: d.args[1] for d in own}
        level = level.parent
    return {}


def test_workers_hold_thousands_of_websockets(conf: Directive) -> None:
    assert conf.child("worker_processes").args == ["auto"]
    connections = int(conf.child("events").child("worker_connections").args[0])
    assert connections >= 8192
    # each proxied connection holds two descriptors
    assert int(conf.child("worker_rlimit_nofile").args[0]) >= 2 * connections


def test_upstream_names_follow_dns(conf: Directive) -> None:
    http = conf.child("http")
    assert http.child("resolver").args[0] == "127.0.0.11"
    upstreams = http.children("upstream")
    assert {u.args[0] for u in upstreams} == {"registry", "ingest", "realtime"}
    for upstream in upstreams:
        assert upstream.children("zone"), upstream.args
        servers = upstream.children("server")
        assert servers and all("resolve" in s.args[1:] for s in servers), upstream.args


def test_every_proxied_location_forwards_the_client_and_scheme(conf: Directive) -> None:
    server = conf.child("http").child("server")
    proxied = [loc for loc in server.children("location") if loc.children("proxy_pass")]
    assert len(proxied) == 3
    for location in proxied:
        headers = _proxy_headers(location)
        assert {h: headers.get(h) for h in FORWARDED} == {
            "Host": "$host",
            "X-Forwarded-For": "$proxy_add_x_forwarded_for",
            "X-Forwarded-Proto": "$forwarded_proto",
        }, location.args
    websocket = next(loc for loc in proxied if loc.args == ["=", "/v1/ws"])
    headers = _proxy_headers(websocket)
    assert headers["Upgrade"] == "$http_upgrade" and headers["Connection"] == "$connection_upgrade"
    assert websocket.child("proxy_read_timeout").args == ["1h"]
    # the others keep upstream connections alive
    for location in proxied:
        if location is not websocket:
            assert _proxy_headers(location)["Connection"] == ""


def test_forwarded_proto_keeps_an_outer_terminators_value(conf: Directive) -> None:
    maps = {tuple(m.args): m for m in conf.child("http").children("map")}
    entries = {d.name: d.args for d in maps[("$http_x_forwarded_proto", "$forwarded_proto")].block or []}
    assert entries == {"default": ["$http_x_forwarded_proto"], "": ["$scheme"]}


def test_access_log_never_writes_a_query_string(conf: Directive) -> None:
    http = conf.child("http")
    formats = {f.args[0]: " ".join(f.args[1:]) for f in http.children("log_format")}
    for name, fmt in formats.items():
        for leaky in ("$request ", "$request_uri", "$query_string", "$args", "$arg_", "$http_authorization"):
            assert leaky not in fmt + " ", f"log_format {name} logs {leaky.strip()}"
        assert "$uri" in fmt
    logs = [d for d in _walk(conf) if d.name == "access_log" and d.args != ["off"]]
    assert logs and all(len(d.args) >= 2 and d.args[1] in formats for d in logs), "a log without our format"


def _walk(directive: Directive) -> list[Directive]:
    found = []
    for child in directive.block or []:
        found.append(child)
        found.extend(_walk(child))
    return found


def _nginx_version(nginx: str) -> tuple[int, ...]:
    out = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False).stderr
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", out)
    assert match, out
    return tuple(int(part) for part in match.groups())


def test_nginx_accepts_the_configuration(repo_root: Path, tmp_path: Path) -> None:
    """`nginx -t`. An nginx older than 1.27.3 lacks `server … resolve`: then a copy without it, with the
    upstream hosts on loopback (old nginx resolves them at load), checks the rest."""
    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )
    if nginx is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light); the parsed checks above still ran")
    text = (repo_root / "deploy" / "nginx.conf").read_text()
    if _nginx_version(nginx) < (1, 27, 3):
        text = re.sub(r"server (registry|ingest|realtime):(\d+) resolve;", r"server 127.0.0.1:\2;", text)
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    result = subprocess.run(
        [nginx, "-t", "-q", "-p", str(tmp_path), "-c", str(conf), "-e", "/dev/stderr"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
