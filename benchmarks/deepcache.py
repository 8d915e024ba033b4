"""Feature caching (DeepCache) against the whole UNet every step, and diffusers eager.

    python benchmarks/deepcache.py                    # SD-1.5-shaped random weights, 256², 20 steps
    python benchmarks/deepcache.py --size 128 --steps 10 --intervals 2 3 5

One process, the same modules, input and seed for every run: EditPipeline with
``cache_interval`` 1 (the whole UNet each step), each given interval (``cache_depth`` 1), and
diffusers' StableDiffusionInstructPix2PixPipeline. It prints seconds per edit, the speed-up over
interval 1 and over diffusers, the UNet's deep-block runs, and the largest output difference
from interval 1 (pixels in [0, 1]).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from diffusers import StableDiffusionInstructPix2PixPipeline
from edit_vs_diffusers import sd15_components
from PIL import Image

from instructedit import EditPipeline

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--intervals", type=int, nargs="+", default=[3])
    args = parser.parse_args()
    device, dtype = torch.device("cpu"), torch.float32
    parts = sd15_components(device, dtype)
    ours = EditPipeline(**parts)
    theirs = StableDiffusionInstructPix2PixPipeline(
        **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    theirs.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8))
    deep: list[int] = []
    ours.unet.mid_block.register_forward_hook(lambda *hook_args: deep.append(1))

    def run(interval: int | None) -> tuple[float, np.ndarray, int]:
        deep.clear()
        start = time.perf_counter()
        if interval is None:
            output = theirs(
                "make it snowy",
                image=image,
                num_inference_steps=args.steps,
                generator=torch.Generator().manual_seed(0),
                output_type="np",
            ).images
        else:
            output = ours(
                image,
                "make it snowy",
                num_inference_steps=args.steps,
                generator=torch.Generator().manual_seed(0),
                output_type="np",
                cache_interval=interval,
                progress=False,
            ).images
        return time.perf_counter() - start, np.asarray(output), len(deep)

    run(1)  # warm-up (allocations, kernels), not timed
    whole, reference, whole_deep = run(1)
    diffusers_seconds, _, _ = run(None)
    print(
        f"SD-1.5-shaped editor (random weights, fp32), {args.size}², {args.steps} steps, "
        f"s_T 7.5 / s_I 1.5, {torch.get_num_threads()} threads"
    )
    print()
    print("| run | seconds | × vs interval 1 | × vs diffusers | deep-block runs | max difference |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| diffusers eager | {diffusers_seconds:.1f} | | 1.00 | {args.steps} | |")
    print(
        f"| interval 1 | {whole:.1f} | 1.00 | {diffusers_seconds / whole:.2f} | {whole_deep} | 0 |"
    )
    for interval in args.intervals:
        seconds, output, runs = run(interval)
        difference = float(np.abs(output - reference).max())
        print(
            f"| interval {interval} | {seconds:.1f} | {whole / seconds:.2f} | "
            f"{diffusers_seconds / seconds:.2f} | {runs} | {difference:.3f} |"
        )


if __name__ == "__main__":
    main()
