"""Time to ``import instructedit`` vs ``import diffusers`` (fresh interpreter each, alternating).

    python benchmarks/import_time.py [--repeats 5]

instructedit defers torch, diffusers, open_clip, Triton and datasets until a component needs
them, so importing it (and starting the CLI) should cost a small fraction of importing diffusers.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys


def _time_import(module: str) -> float:
    """Seconds ``import module`` takes in a fresh interpreter, start-up excluded."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(args.repeats):
        ours.append(_time_import("instructedit"))
        theirs.append(_time_import("diffusers"))
    ours_s, theirs_s = statistics.median(ours), statistics.median(theirs)
    print(f"import instructedit: {ours_s * 1000:8.1f} ms (median of {args.repeats})")
    print(f"import diffusers:    {theirs_s * 1000:8.1f} ms")
    print(f"ratio instructedit / diffusers: {ours_s / theirs_s:.3f}")


if __name__ == "__main__":
    main()
