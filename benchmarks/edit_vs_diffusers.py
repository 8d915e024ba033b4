"""diffusers' StableDiffusionInstructPix2PixPipeline vs instructedit's EditPipeline, same weights.

    python benchmarks/edit_vs_diffusers.py                 # tiny model on the CPU
    python benchmarks/edit_vs_diffusers.py --compile       # also torch.compile'd EditPipeline
    python benchmarks/edit_vs_diffusers.py --sd15          # SD-1.5-sized random weights, 512², fp16 (CUDA)

Both sides run in this one process on the same modules, scheduler config, input and generator
seed, alternating, after a warm-up; the script prints median seconds per edit, the ratio
EditPipeline / diffusers, and the largest difference between their outputs. At s_I = 1 the
unconditional branch has weight zero, so EditPipeline runs the UNet on 2·B instead of 3·B.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    StableDiffusionInstructPix2PixPipeline,
    UNet2DConditionModel,
)
from PIL import Image
from transformers import CLIPTextConfig, CLIPTextModel

from instructedit import EditPipeline
from instructedit.testing import clip_tokenizer, tiny_components, tiny_scheduler

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def sd15_components(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Random weights with Stable Diffusion 1.5's architecture and an 8-channel UNet."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        in_channels=8,
        out_channels=4,
        block_out_channels=(320, 640, 1280, 1280),
        cross_attention_dim=768,
        attention_head_dim=8,
        layers_per_block=2,
        sample_size=64,
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            bos_token_id=49406,
            eos_token_id=49407,
        )
    )
    parts: dict[str, Any] = {
        "unet": unet.to(device, dtype).eval(),
        "vae": vae.to(device, dtype).eval(),
        "text_encoder": text_encoder.to(device, dtype).eval(),
        "tokenizer": clip_tokenizer(),
        "scheduler": tiny_scheduler("euler_ancestral"),
    }
    return parts


def _timed(run: Callable[[], np.ndarray], device: torch.device) -> tuple[float, np.ndarray]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def compare(
    parts: dict[str, Any],
    image: Image.Image,
    *,
    image_scale: float,
    steps: int,
    repeats: int,
    device: torch.device,
    compiled: bool,
) -> None:
    """Times both pipelines on ``parts`` and prints one result line."""
    theirs = StableDiffusionInstructPix2PixPipeline(
        **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    theirs.set_progress_bar_config(disable=True)
    ours = EditPipeline(**parts)
    if compiled:
        ours.compile()
    common = {
        "num_inference_steps": steps,
        "image_guidance_scale": image_scale,
        "output_type": "np",
    }

    def run_theirs() -> np.ndarray:
        generator = torch.Generator(device).manual_seed(0)
        return theirs("make it snowy", image=image, generator=generator, **common).images

    def run_ours() -> np.ndarray:
        generator = torch.Generator(device).manual_seed(0)
        return ours(image, "make it snowy", generator=generator, progress=False, **common).images

    run_theirs(), run_ours()  # warm-up (and compilation)
    times_theirs, times_ours = [], []
    for _ in range(repeats):
        elapsed, out_theirs = _timed(run_theirs, device)
        times_theirs.append(elapsed)
        elapsed, out_ours = _timed(run_ours, device)
        times_ours.append(elapsed)
    median_theirs, median_ours = statistics.median(times_theirs), statistics.median(times_ours)
    difference = float(np.abs(out_ours - out_theirs).max())
    label = "compiled" if compiled else "eager"
    print(
        f"s_I={image_scale:<4} {label:8} diffusers {median_theirs:8.3f} s  "
        f"EditPipeline {median_ours:8.3f} s  ratio {median_ours / median_theirs:5.3f}  "
        f"max |diff| {difference:.2e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sd15", action="store_true", help="SD-1.5-sized weights at 512² (CUDA, fp16)"
    )
    parser.add_argument(
        "--size", type=int, default=32, help="image side for the tiny model (32: its native size)"
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument(
        "--compile", action="store_true", help="also time a torch.compile'd EditPipeline"
    )
    args = parser.parse_args()

    if args.sd15:
        if not torch.cuda.is_available():
            raise SystemExit("--sd15 needs a CUDA device")
        device, dtype, size = torch.device("cuda"), torch.float16, 512
        parts = sd15_components(device, dtype)
    else:
        device, dtype, size = torch.device("cpu"), torch.float32, args.size
        parts = dict(tiny_components(seed=0))
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    print(
        f"device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, "
        f"torch threads {torch.get_num_threads()}, {dtype}, image {size}², {args.steps} steps, "
        f"median of {args.repeats}"
    )
    for image_scale in (1.5, 1.0):
        for compiled in (False, True) if args.compile else (False,):
            compare(
                parts,
                image,
                image_scale=image_scale,
                steps=args.steps,
                repeats=args.repeats,
                device=device,
                compiled=compiled,
            )


if __name__ == "__main__":
    main()
