"""``python -m tests.chaos.summary LOG...``: one table from the chaos tables of several ``pytest -s`` runs.

``make chaos`` runs ``tests/chaos`` ``CHAOS_RUNS`` times, each run's output in its own log, and then this:
per run and per test (its injections), the notifications sent, then per observer (stored rows, each
webhook endpoint, each WebSocket client) what was lost and what came more than once. The per-run tables
stay in the logs, unchanged, for anyone to compare.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

_HEADER = re.compile(r"^what\s+expected\s+found\s+lost\s+extra\s*$")
_ROW = re.compile(
    r"^(?P<what>.+?)\s+(?P<expected>\d+)\s+(?P<found>\d+)\s+(?P<lost>-?\d+)\s+(?P<extra>\d+)\s*$"
)
_INJECTED = re.compile(r"^\s+t=\s*[\d.]+s\s+(?P<what>.+)$")
_SENT = re.compile(r"notifications sent (?P<sent>\d+)")


@dataclass
class Table:
    """One chaos table: its injections, what was sent, and its rows."""

    log: str
    injected: list[str] = field(default_factory=list)
    sent: int = 0
    rows: list[tuple[str, int, int, int]] = field(default_factory=list)
    """(what, expected, lost, extra)"""


def tables(path: Path) -> list[Table]:
    """Every chaos table printed in ``path``."""
    found: list[Table] = []
    current: Table | None = None
    in_rows = False
    for line in path.read_text(errors="replace").splitlines():
        if line.strip() == "failure injection: what was injected":
            current, in_rows = Table(path.name), False
            found.append(current)
        elif current is None:
            continue
        elif _HEADER.match(line.strip()):
            in_rows = True
        elif in_rows and (row := _ROW.match(line)):
            current.rows.append(
                (row["what"].strip(), int(row["expected"]), int(row["lost"]), int(row["extra"]))
            )
        elif in_rows:
            current, in_rows = None, False
        elif injected := _INJECTED.match(line):
            current.injected.append(injected["what"])
        elif sent := _SENT.search(line):
            current.sent = int(sent["sent"])
    return found


def render(all_tables: list[Table]) -> str:
    """The summary: one line per observer of every table."""
    out = [
        f"{'run':<12}{'injections':<44}{'sent':>6}  {'observer':<36}{'expected':>9}{'lost':>6}{'extra':>7}"
    ]
    for table in all_tables:
        what = "; ".join(table.injected)[:42]
        for i, (observer, expected, lost, extra) in enumerate(table.rows):
            head = f"{table.log:<12}{what:<44}{table.sent:>6}" if i == 0 else " " * 62
            out.append(f"{head}  {observer[:35]:<36}{expected:>9}{lost:>6}{extra:>7}")
    lost = sum(r[2] for t in all_tables for r in t.rows)
    out.append(f"{len(all_tables)} tables; lost in all: {lost}")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    """Print the summary of the logs named in ``argv``; exit 1 when anything was lost or nothing found."""
    found = [t for name in argv for t in tables(Path(name))]
    print(render(found))
    return 0 if found and all(r[2] == 0 for t in found for r in t.rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
