"""What feature caching costs the embedded default in edit quality, by the ShapesWorld oracle.

    python examples/shapes/caching_quality.py                 # intervals 1, 2, 3, 4 on 200 test edits
    python examples/shapes/caching_quality.py --scenes 48 --intervals 1 3

Each interval edits the same held-out test edits (seed 0) with the same noise, 20 steps, the
default's stored guidance and masking (found masks, the input pasted back), and prints oracle
success, the unchanged-region error, the UNet's deep-block runs per edit and seconds per edit.
"""

from __future__ import annotations

import argparse
import time

import instructedit
from instructedit.worlds.evaluation import held_out_edits, oracle_summary, pipeline_edits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--intervals", type=int, nargs="+", default=[1, 2, 3, 4])
    args = parser.parse_args()
    pipe = instructedit.load_default()
    edits = held_out_edits(args.scenes, seed=0)
    deep: list[int] = []
    pipe.unet.mid_block.register_forward_hook(lambda *hook_args: deep.append(1))
    print(f"embedded default, {args.scenes} held-out test edits (seed 0), 20 steps, found masks")
    print()
    print("| cache interval | success | unchanged error | deep-block runs per batch | s per edit |")
    print("| --- | --- | --- | --- | --- |")
    for interval in args.intervals:
        deep.clear()
        start = time.perf_counter()
        outputs = pipeline_edits(pipe, edits, masks="auto", cache_interval=interval, progress=False)
        seconds = (time.perf_counter() - start) / len(edits)
        summary = oracle_summary(edits, outputs)["all"]
        batches = -(-len(edits) // 25)
        print(
            f"| {interval} | {100 * summary['success']:.1f} % | {summary['unchanged_error']:.3f} "
            f"| {len(deep) / batches:.0f} | {seconds:.3f} |"
        )


if __name__ == "__main__":
    main()
