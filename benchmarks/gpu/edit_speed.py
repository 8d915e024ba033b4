"""Per-edit time on a GPU: diffusers eager and compiled against EditPipeline eager, with the
speed presets, and compiled (CUDA graphs, channels-last, fused QKV).

    python benchmarks/gpu/edit_speed.py              # SD-1.5-sized random weights, 512², fp16, CUDA
    python benchmarks/gpu/edit_speed.py --tiny       # the tiny components on the CPU (a dry run)

Every run uses the same modules, input and seed, 20 Euler-ancestral steps, at s_I 1.5 and 1.0;
each time is the median of ``--repeats`` edits after a warm-up (which also compiles). Compiling
changes the UNet in place (channels-last, fused QKV), so those runs come last. Prints a markdown
table with each run's median seconds and its speed-up over diffusers eager.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import StableDiffusionInstructPix2PixPipeline
from PIL import Image

from instructedit import EditPipeline
from instructedit.testing import tiny_components

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from edit_vs_diffusers import sd15_components


def _median_seconds(run: Callable[[], Any], repeats: int, device: torch.device) -> float:
    run()  # warm-up: allocations, autotuning, compilation, graph capture
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny components on the CPU")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    if args.tiny:
        device, dtype, size, mode = torch.device("cpu"), torch.float32, 32, "default"
        parts = tiny_components(seed=0)
    else:
        device, dtype, size, mode = torch.device("cuda"), torch.float16, 512, "reduce-overhead"
        parts = sd15_components(device, dtype)
    ours = EditPipeline(**parts)
    theirs = StableDiffusionInstructPix2PixPipeline(
        **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    theirs.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    rows: list[tuple[str, float, float]] = []

    def edit_ours(image_scale: float, **kwargs: Any) -> Callable[[], Any]:
        return lambda: ours(
            image,
            "make it snowy",
            num_inference_steps=args.steps,
            image_guidance_scale=image_scale,
            generator=torch.Generator(device).manual_seed(0),
            output_type="np",
            progress=False,
            **kwargs,
        )

    def edit_theirs(image_scale: float) -> Callable[[], Any]:
        return lambda: theirs(
            "make it snowy",
            image=image,
            num_inference_steps=args.steps,
            image_guidance_scale=image_scale,
            generator=torch.Generator(device).manual_seed(0),
            output_type="np",
        )

    scales = (1.5, 1.0)
    runs: list[tuple[str, Callable[[float], Callable[[], Any]]]] = [
        ("diffusers eager", edit_theirs),
        ("EditPipeline eager", edit_ours),
        ('EditPipeline speed="balanced"', lambda s: edit_ours(s, speed="balanced")),
        ('EditPipeline speed="fast"', lambda s: edit_ours(s, speed="fast")),
    ]
    for name, make in runs:
        rows.append((name, *(_median_seconds(make(s), args.repeats, device) for s in scales)))
    eager_unet = theirs.unet
    theirs.unet = torch.compile(eager_unet, mode=mode)
    rows.append(
        (
            f"diffusers, UNet compiled ({mode})",
            *(_median_seconds(edit_theirs(s), args.repeats, device) for s in scales),
        )
    )
    theirs.unet = eager_unet
    ours.compile(mode=mode)
    rows.append(
        (
            f"EditPipeline.compile(mode={mode!r})",
            *(_median_seconds(edit_ours(s), args.repeats, device) for s in scales),
        )
    )
    ours.compile(mode=mode, channels_last=True, fuse_qkv=True)
    rows.append(
        (
            "… + channels_last, fuse_qkv",
            *(_median_seconds(edit_ours(s), args.repeats, device) for s in scales),
        )
    )
    rows.append(
        (
            '… + speed="fast"',
            *(_median_seconds(edit_ours(s, speed="fast"), args.repeats, device) for s in scales),
        )
    )
    card = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"{card}, {size}², {dtype}, {args.steps} steps, median of {args.repeats}")
    print()
    print("| run | s_I 1.5: s | × | s_I 1.0: s | × |")
    print("| --- | --- | --- | --- | --- |")
    base = rows[0]
    for name, high, low in rows:
        print(f"| {name} | {high:.3f} | {base[1] / high:.2f} | {low:.3f} | {base[2] / low:.2f} |")


if __name__ == "__main__":
    main()
