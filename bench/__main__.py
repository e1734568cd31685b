"""``python -m bench [name ...]``: run the benchmarks and write ``bench/results/latest.md``."""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, machine_facts

BENCHES = ("ingest", "projection", "fanout", "realtime", "queries", "observability", "stack")


def main(argv: list[str] | None = None) -> None:
    """Start the embedded infrastructure once (memory broker), run each bench, write the report."""
    from gravity_devstack.infra import start_infra

    names = (argv if argv is not None else sys.argv[1:]) or list(BENCHES)
    sections = []
    with tempfile.TemporaryDirectory(prefix="gravity-bench-") as tmp:
        infra = start_infra(data_dir=Path(tmp), durable=False)
        try:
            for name in names:
                module = __import__(f"bench.{name}", fromlist=["run"])
                print(f"running {name} …", flush=True)
                section = asyncio.run(module.run(infra))
                print(section, flush=True)
                sections.append(section)
        finally:
            infra.stop()
    out = ROOT / "bench" / "results" / "latest.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    header = (
        f"# Benchmark results\n\nCommand: `make bench` (`python -m bench {' '.join(names)}`), {stamp}.\n"
        f"Machine: {machine_facts()}.\n\n"
    )
    out.write_text(header + "\n".join(sections))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
