"""One guided sampler step: the eager torch sequence vs the fused torch path vs the Triton kernel.

    python benchmarks/fused_step.py [--batch 8] [--side 64]

The eager sequence is what diffusers' InstructPix2Pix pipeline runs after the UNet:
``chunk(3)``, the guidance formula, then ``EulerAncestralDiscreteScheduler.step``. The fused paths
combine the three branches and apply the same update (with the same noise) in one pass. Prints
microseconds per step, speed-ups over eager, the largest output difference, and for the Triton
kernel the effective memory bandwidth (bytes read and written once / time). Triton runs only on
CUDA.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch

from instructedit.guidance import (
    advance_scheduler,
    affine_update,
    draw_step_noise,
    dual_guidance_weights,
    fused_guided_step,
)
from instructedit.kernels import triton_available
from instructedit.testing import tiny_scheduler

TEXT_SCALE, IMAGE_SCALE = 7.5, 1.5


def _time(
    step: Callable[[], torch.Tensor], device: torch.device, repeats: int
) -> tuple[float, torch.Tensor]:
    out = step()
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="images per step (B)")
    parser.add_argument("--side", type=int, default=64, help="latent side (64 = 512² images)")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None)
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = (
        getattr(torch, args.dtype)
        if args.dtype
        else (torch.float16 if device.type == "cuda" else torch.float32)
    )
    shape = (args.batch, 4, args.side, args.side)
    base = tiny_scheduler("euler_ancestral")
    base.set_timesteps(50)
    timestep = base.timesteps[10]
    base._init_step_index(timestep)
    base.is_scale_input_called = True  # the benchmark times step(), not scale_model_input()
    generator = torch.Generator(device)
    branches = torch.randn((3 * args.batch, *shape[1:]), device=device, dtype=dtype)
    sample = torch.randn(shape, device=device, dtype=dtype)
    weights = dual_guidance_weights(text_scale=TEXT_SCALE, image_scale=IMAGE_SCALE)
    ordered = [weights["full"], weights["image"], weights["uncond"]]

    def eager() -> torch.Tensor:
        scheduler = copy.copy(base)
        generator.manual_seed(0)
        full, image, uncond = branches.chunk(3)
        guided = uncond + TEXT_SCALE * (full - image) + IMAGE_SCALE * (image - uncond)
        return scheduler.step(guided, timestep, sample, generator=generator).prev_sample

    def fused(backend: str) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            scheduler = copy.copy(base)
            generator.manual_seed(0)
            update = affine_update(scheduler, timestep)
            assert update is not None
            noise = draw_step_noise(sample, generator)
            out = fused_guided_step(branches, ordered, sample, update, noise, backend=backend)  # type: ignore[arg-type]
            advance_scheduler(scheduler)
            return out

        return run

    print(
        f"device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, {dtype}, latents {shape}"
    )
    eager_us, reference = _time(eager, device, args.repeats)
    print(f"eager torch sequence  {eager_us:10.1f} µs")
    backends = ["torch"] + (["triton"] if device.type == "cuda" and triton_available() else [])
    for backend in backends:
        micros, out = _time(fused(backend), device, args.repeats)
        difference = (out.float() - reference.float()).abs().max().item()
        line = f"fused ({backend:6})        {micros:10.1f} µs  speed-up {eager_us / micros:5.2f}×  max |diff| {difference:.2e}"
        if backend == "triton":
            element = sample.element_size()
            moved = sample.numel() * element * (3 + 1 + 1 + 1)  # 3 branches, sample, noise in; out
            line += f"  {moved / micros / 1e3:7.1f} GB/s"
        print(line)
    print("(noise drawing is included on every path: it is part of the ancestral step)")


if __name__ == "__main__":
    main()
