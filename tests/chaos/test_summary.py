"""The chaos summary reads the tables the chaos tests print."""

from __future__ import annotations

from pathlib import Path

from tests.chaos.summary import main, render, tables

LOG = """
tests/chaos/test_kill_and_restart.py
failure injection: what was injected
  t=  4.0s  SIGKILL ingest-1, restarted
  t= 10.0s  SIGKILL registry-0, restarted
  notifications sent 3000 at 100/s over two ingest copies; answered 200: 3000; re-sent after a refusal or error: 3; never accepted: 0; requests to the hanging endpoint: 12
what                                      expected     found    lost   extra
stored rows                                   3000      3000       0       0
webhook /ok                                   3000      2990      10      25
websocket client A (resumes with since)       3000      3000       0       0
  /ok (never failed), messages by times received: 1 times: 2965, 2 times: 25
.
"""


def test_a_table_is_read_with_its_injections_and_rows(tmp_path: Path) -> None:
    log = tmp_path / "run-1.log"
    log.write_text(LOG)
    [table] = tables(log)
    assert table.injected == ["SIGKILL ingest-1, restarted", "SIGKILL registry-0, restarted"]
    assert table.sent == 3000
    assert table.rows == [
        ("stored rows", 3000, 0, 0),
        ("webhook /ok", 3000, 10, 25),
        ("websocket client A (resumes with since)", 3000, 0, 0),
    ]
    assert "lost in all: 10" in render([table])
    assert main([str(log)]) == 1, "something was lost"


def test_no_table_is_a_failure(tmp_path: Path) -> None:
    log = tmp_path / "run-1.log"
    log.write_text("collected 0 items\n")
    assert main([str(log)]) == 1
