"""``python -m bench.pyspy_top FILE [N]``: the functions a py-spy collapsed-stack profile spends most time in.

Prints the top N by own time (the innermost frame of a sample) and by total time (any frame of a sample),
each as a share of all samples: the figures the README quotes for a missed goal.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path


def summarise(path: Path, n: int = 15) -> str:
    """Own and total shares of the top ``n`` frames in the collapsed stacks at ``path``."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        weight = int(count)
        frames = stack.split(";")
        samples += weight
        own[frames[-1]] += weight
        for frame in set(frames):
            total[frame] += weight
    if not samples:
        return f"{path}: no samples"
    lines = [f"{path.name}: {samples} samples", "own time:"]
    lines += [f"  {100 * c / samples:5.1f} %  {frame}" for frame, c in own.most_common(n)]
    lines.append("total time:")
    lines += [f"  {100 * c / samples:5.1f} %  {frame}" for frame, c in total.most_common(n)]
    return "\n".join(lines)


if __name__ == "__main__":
    print(summarise(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 15))
