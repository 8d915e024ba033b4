"""EditPipeline vs diffusers' InstructPix2Pix pipeline, everything but the networks.

The UNet and the VAE of the tiny test components are replaced by stubs of the right shapes (the
UNet returns a scaled slice of its input; the VAE pools and upsamples by 8), so what is timed is
each pipeline's own work per edit: pre- and post-processing, text encoding, guidance, scheduler
and the denoising loop's bookkeeping, at a realistic image size.

    python benchmarks/pipeline_overhead.py --size 512 --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import time
import types
from typing import Any

import numpy as np
import torch
from diffusers import StableDiffusionInstructPix2PixPipeline
from PIL import Image

from instructedit import EditPipeline
from instructedit.testing import tiny_components


class _Posterior:
    def __init__(self, mean: torch.Tensor) -> None:
        self.mean = mean

    def mode(self) -> torch.Tensor:
        return self.mean

    def sample(self, generator: Any = None) -> torch.Tensor:
        return self.mean


def _stub_networks(parts: dict[str, Any]) -> None:
    def unet(self: Any, sample: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor]:
        return (sample[:, :4] * 0.1,)

    def encode(self: Any, pixels: torch.Tensor, return_dict: bool = True) -> Any:
        mean = torch.nn.functional.avg_pool2d(pixels, 8)[:, :1].repeat(1, 4, 1, 1)
        posterior = _Posterior(mean)
        return types.SimpleNamespace(latent_dist=posterior) if return_dict else (posterior,)

    def decode(self: Any, latents: torch.Tensor, return_dict: bool = True, **kwargs: Any) -> Any:
        pixels = torch.nn.functional.interpolate(latents[:, :3], scale_factor=8)
        return types.SimpleNamespace(sample=pixels) if return_dict else (pixels,)

    parts["unet"].forward = types.MethodType(unet, parts["unet"])
    parts["vae"].encode = types.MethodType(encode, parts["vae"])
    parts["vae"].decode = types.MethodType(decode, parts["vae"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    parts = dict(tiny_components(seed=0))
    _stub_networks(parts)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8))
    theirs = StableDiffusionInstructPix2PixPipeline(
        **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    theirs.set_progress_bar_config(disable=True)
    ours = EditPipeline(**parts)
    common = {"num_inference_steps": args.steps, "image_guidance_scale": 1.5, "output_type": "np"}

    def run_theirs() -> None:
        generator = torch.Generator().manual_seed(0)
        theirs("make it snowy", image=image, generator=generator, **common)

    def run_ours() -> None:
        generator = torch.Generator().manual_seed(0)
        ours(image, "make it snowy", generator=generator, progress=False, **common)

    run_theirs(), run_ours()  # warm-up
    times: dict[str, list[float]] = {"diffusers": [], "EditPipeline": []}
    for _ in range(args.repeats):
        for name, run in (("diffusers", run_theirs), ("EditPipeline", run_ours)):
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    theirs_s, ours_s = (statistics.median(times[k]) for k in ("diffusers", "EditPipeline"))
    print(
        f"{args.size}² image, {args.steps} steps, stub networks, median of {args.repeats}: "
        f"diffusers {1000 * theirs_s:.1f} ms  EditPipeline {1000 * ours_s:.1f} ms  "
        f"ratio {ours_s / theirs_s:.3f}"
    )


if __name__ == "__main__":
    main()
