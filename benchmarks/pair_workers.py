"""The ShapesWorld pairs stage in one process against several (``RecipeConfig.pair_workers``).

    python benchmarks/pair_workers.py                     # a smoke run's models, 16 captions × 8
    python benchmarks/pair_workers.py --run RUN           # a recipe run's models and settings
    python benchmarks/pair_workers.py --samples 2 --captions 32   # the tenth run's 2 per caption

Both sides run the recipe's pairs stage (rendering, CLIP scores, selection, read-back) on the same
captions from the same text-to-image model and CLIP, each into a fresh folder: first in one
process with all of torch's threads, then in ``--workers`` processes (default: the stage's own
choice, :func:`~instructedit.worlds.recipe.pair_worker_count`) sharing them. Prints the seconds
per caption of each, the ratio, and how their candidates compare (the same captions and seeds;
other thread counts may change a pixel's last bits). Without
``--run`` the models are a smoke run's (trained a few steps, built first, about a minute): the
shipped sizes, so the speed is the real one; what they draw does not matter here (the smoke
run's thresholds keep every candidate).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import fields, replace
from pathlib import Path

import torch

from instructedit.worlds.recipe import RecipeConfig, pair_worker_count, reproduce


def run_config(run: Path) -> RecipeConfig:
    """The run's recorded settings (``config.json``), or the defaults where it has none."""
    path = run / "config.json"
    if not path.is_file():
        return RecipeConfig()
    known = {f.name for f in fields(RecipeConfig)}
    recorded = json.loads(path.read_text(encoding="utf-8"))
    return RecipeConfig(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items() if k in known}
    )


def timed_stage(run: Path, base: RecipeConfig, folder: Path, workers: int) -> float:
    """Seconds of the pairs stage in a fresh run folder sharing ``run``'s models."""
    folder.mkdir(parents=True)
    for stage in ("text_to_image", "clip"):
        (folder / stage).symlink_to((run / stage).resolve(), target_is_directory=True)
    config = replace(base, output_dir=str(folder), pair_workers=workers)
    start = time.perf_counter()
    reproduce(config, until="pairs", progress=False)
    return time.perf_counter() - start


def compare_candidates(first: Path, second: Path) -> str:
    """How the two sides' candidate images compare: byte-identical ones, largest pixel gap."""
    import numpy as np
    from PIL import Image

    a, b = first / "pairs" / "candidates", second / "pairs" / "candidates"
    names = sorted(p.relative_to(a) for p in a.rglob("*.jpg"))
    if names != sorted(p.relative_to(b) for p in b.rglob("*.jpg")):
        return "different captions or seeds"
    same = sum((a / n).read_bytes() == (b / n).read_bytes() for n in names)
    gap = max(
        int(np.abs(np.asarray(Image.open(a / n), np.int16) - np.asarray(Image.open(b / n))).max())
        for n in names
    )
    return f"{same} of {len(names)} images byte-identical, largest pixel gap {gap}/255"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None, help="a recipe run (default: smoke)")
    parser.add_argument("--captions", type=int, default=16)
    parser.add_argument("--samples", type=int, default=None, help="candidates per caption")
    parser.add_argument("--workers", type=int, default=None, help="processes of the second side")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run = args.run
        if run is None:
            run = work / "smoke"
            print("building a smoke run's models ...", flush=True)
            reproduce(RecipeConfig.smoke(str(run)), until="clip", progress=False)
        # A smoke run's models fail the default thresholds: the smoke ones keep every candidate.
        defaults = RecipeConfig()
        base = (
            run_config(run)
            if args.run is not None
            else replace(
                RecipeConfig.smoke(),
                generation_steps=defaults.generation_steps,
                samples_per_pair=defaults.samples_per_pair,
                keep_per_pair=defaults.keep_per_pair,
            )
        )
        samples = args.samples or base.samples_per_pair
        base = replace(
            base,
            captions=args.captions,
            samples_per_pair=samples,
            keep_per_pair=min(base.keep_per_pair, samples),
        )
        workers = args.workers or pair_worker_count(replace(base, pair_workers=None))
        if workers < 2:
            raise SystemExit(f"the second side needs 2 or more workers, got {workers}")
        threads = torch.get_num_threads()
        one = timed_stage(run, base, work / "one", 1)
        many = timed_stage(run, base, work / "many", workers)
        compared = compare_candidates(work / "one", work / "many")
        print(
            f"pairs stage, {args.captions} captions × {samples} candidates, "
            f"{base.generation_steps} sampler steps, {base.size}² scenes:\n"
            f"  1 process of {threads} threads: {one:.1f} s ({one / args.captions:.2f} s per caption)\n"
            f"  {workers} processes of {max(1, threads // workers)}: {many:.1f} s "
            f"({many / args.captions:.2f} s per caption)\n"
            f"  speed-up {one / many:.2f}×; {compared}"
        )


if __name__ == "__main__":
    main()
