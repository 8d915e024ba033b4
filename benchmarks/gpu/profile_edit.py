"""Where EditPipeline's time goes against diffusers' StableDiffusionInstructPix2PixPipeline on a GPU.

    python benchmarks/gpu/profile_edit.py            # SD-1.5-sized random weights, fp16, CUDA
    python benchmarks/gpu/profile_edit.py --tiny     # the tiny components on the CPU (a dry run)

Times, alternating after a warm-up (median of ``--repeats``, s_I = 1.5, 20 Euler-ancestral
steps), diffusers and four EditPipeline variants that each switch one suspect off: the default
(fused step, Triton on CUDA), the fused step's torch backend, the unfused path (a callback that
asks for the guided prediction, so ``scheduler.step`` runs), and a generator on the CPU. Then one
edit of diffusers and of the default EditPipeline under ``torch.profiler``: the operators with
the most self CPU time, and the calls that make the CPU wait for the GPU (synchronisations and
copies), with counts.
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

from instructedit import DualGuidance, EditPipeline
from instructedit.testing import tiny_components

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from edit_vs_diffusers import sd15_components

WAITS = (
    "cudaStreamSynchronize",
    "cudaDeviceSynchronize",
    "cudaEventSynchronize",
    "cudaMemcpyAsync",
    "cudaMemcpy",
    "aten::item",
    "aten::_local_scalar_dense",
    "aten::to",
    "aten::copy_",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny components on the CPU")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    if args.tiny:
        device, size = torch.device("cpu"), 32
        parts = dict(tiny_components(seed=0))
    else:
        device, size = torch.device("cuda"), 512
        parts = sd15_components(device, torch.float16)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), np.uint8))
    theirs = StableDiffusionInstructPix2PixPipeline(
        **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    theirs.set_progress_bar_config(disable=True)
    ours = EditPipeline(**parts)
    ours_torch = EditPipeline(**parts, guidance=DualGuidance(backend="torch"))
    common = {"num_inference_steps": args.steps, "image_guidance_scale": 1.5, "output_type": "np"}

    def keep(pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> None:
        return None

    def run(name: str) -> Callable[[], Any]:
        def call() -> Any:
            on = "cpu" if name == "ours, CPU generator" else device
            generator = torch.Generator(on).manual_seed(0)
            if name == "diffusers":
                return theirs("make it snowy", image=image, generator=generator, **common).images
            pipe = ours_torch if name == "ours, torch backend" else ours
            extra: dict[str, Any] = {}
            if name == "ours, unfused":
                extra = {
                    "callback_on_step_end": keep,
                    "callback_on_step_end_tensor_inputs": ("noise_pred",),
                }
            return pipe(
                image, "make it snowy", generator=generator, progress=False, **common, **extra
            ).images

        return call

    names = [
        "diffusers",
        "ours",
        "ours, torch backend",
        "ours, unfused",
        "ours, CPU generator",
    ]
    calls = {name: run(name) for name in names}
    for call in calls.values():
        call()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.repeats):
        for name, call in calls.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            call()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["diffusers"])
    print(f"{device}, {size}², {args.steps} steps, s_I 1.5, median of {args.repeats}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:22} {median:7.3f} s  ratio {median / base:5.3f}  {values}")

    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    for name in ("diffusers", "ours"):
        with profile(activities=activities) as prof:
            calls[name]()
            if device.type == "cuda":
                torch.cuda.synchronize()
        events = prof.key_averages()
        print(f"==== {name}: top self-CPU operators")
        print(events.table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=40))
        print(f"==== {name}: waits and copies (count, self CPU ms)")
        for event in events:
            if event.key in WAITS:
                print(f"  {event.key:28} {event.count:6d} {event.self_cpu_time_total / 1e3:9.2f}")


if __name__ == "__main__":
    main()
