"""What an edit costs before it runs: UNet evaluations, the largest attention, a peak memory.

The memory figure is an estimate from the models' shapes, not a measurement: the weights, plus
the larger of the UNet's working set (its first-level feature maps for every branch and output,
and the attention score matrices of its first attention layer where its attention processors
hold them)
and the VAE's (its full-resolution feature maps and its mid-block attention over the latent
cells, or one tile's with tiling). It is meant to tell 40 MB from 4 GB, and to refuse what
cannot fit before any model runs; ``benchmarks/RESULTS.md`` compares it with measured peaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["CostEstimate", "check_fits", "estimate_cost"]

_ACTIVATION_COPIES = 6
"""Feature maps alive at once in a ResNet block (input, two normalised and activated copies,
two convolution outputs, the residual sum), as a multiple of one map."""


@dataclass(frozen=True)
class CostEstimate:
    """An edit's cost, estimated from the models' shapes (see the module's docstring).

    Attributes:
        width: width of the edited image, in pixels.
        height: height of the edited image, in pixels.
        native_size: the model's native side (see ``EditPipeline.native_size``).
        latent_cells: cells of the latent grid (h × w).
        unet_evaluations: UNet evaluations of one image each (steps × guidance branches run ×
            outputs).
        attention_tokens: tokens of the largest self-attention (the UNet's first attention
            level), and so each of its score matrices is tokens × tokens.
        attention_bytes: the score matrices of that layer for one step, were attention to
            materialise them (every branch, output and head).
        attention_materialised: whether the UNet's attention processors hold those scores
            (classic or custom processors, e.g. attention controllers; with attention slicing
            one slice of heads at a time) or not (PyTorch's scaled-dot-product attention).
        weights_bytes: the weights on the device (the largest model alone under model CPU
            offload, none under sequential offload).
        peak_bytes: the estimated peak memory on the device.
        device: where the edit runs.
    """

    width: int
    height: int
    native_size: int
    latent_cells: int
    unet_evaluations: int
    attention_tokens: int
    attention_bytes: int
    attention_materialised: bool
    weights_bytes: int
    peak_bytes: int
    device: str

    @property
    def area_factor(self) -> float:
        """The edited area over the native area (1 at the native size)."""
        return self.width * self.height / self.native_size**2

    def __str__(self) -> str:
        return (
            f"{self.width}×{self.height} pixels ({self.area_factor:.1f}× the native "
            f"{self.native_size}×{self.native_size} area), {self.latent_cells} latent cells; "
            f"{self.unet_evaluations} UNet evaluations; largest attention {self.attention_tokens} "
            f"tokens ({_size(self.attention_bytes)} of scores, "
            f"{'held' if self.attention_materialised else 'not held: scaled-dot-product attention'}"
            f"); weights "
            f"{_size(self.weights_bytes)}; peak memory about {_size(self.peak_bytes)} on "
            f"{self.device}"
        )


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def _weights(model: Any) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _first_attention_level(unet: Any) -> int:
    """Index of the UNet's first down block with attention (0 for Stable Diffusion)."""
    for index, kind in enumerate(unet.config.down_block_types):
        if "Attn" in kind:
            return int(index)
    return len(unet.config.down_block_types) - 1  # the mid block's attention


def estimate_cost(
    pipe: Any, width: int, height: int, *, outputs: int = 1, steps: int = 100, guidance: Any = None
) -> CostEstimate:
    """The cost of editing ``outputs`` images of ``width`` × ``height`` pixels (as prepared for
    the model) in ``steps`` steps with ``guidance`` (``pipe.guidance`` when ``None``)."""
    guidance = pipe.guidance if guidance is None else guidance
    factor = pipe.vae_scale_factor
    cells = (height // factor) * (width // factor)
    branches = [
        sum(1 for weight in guidance.weights(step, steps).values() if not _is_zero(weight))
        for step in range(steps)
    ]
    widest = max(branches) * outputs
    level = _first_attention_level(pipe.unet)
    tokens = max(1, cells // 4**level)
    heads = pipe.unet.config.attention_head_dim
    heads = max(heads) if isinstance(heads, list | tuple) else heads
    itemsize = torch.empty((), dtype=pipe.dtype).element_size()
    attention = widest * int(heads) * tokens * tokens * itemsize
    held = _held_share(pipe.unet, int(heads))
    channels = pipe.unet.config.block_out_channels[level]
    unet_working = widest * channels * tokens * itemsize * _ACTIVATION_COPIES + int(
        attention * held
    )
    vae = pipe.vae
    vae_cells, vae_pixels = cells, width * height
    if getattr(vae, "use_tiling", False):
        tile = int(getattr(vae, "tile_sample_min_size", vae.config.sample_size))
        vae_pixels = min(vae_pixels, tile * tile)
        vae_cells = min(vae_cells, vae_pixels // factor**2)
    batch = 1 if getattr(vae, "use_slicing", False) else outputs
    vae_itemsize = torch.empty((), dtype=vae.dtype).element_size()
    vae_working = (
        batch
        * vae_itemsize
        * (
            vae.config.block_out_channels[0] * vae_pixels * _ACTIVATION_COPIES
            # the mid block's one-head attention scores, held unless scaled-dot-product attention
            + vae_cells * vae_cells * int(_held_share(vae, 1))
        )
    )
    models = pipe._models()
    offload = getattr(pipe, "_offload", None)
    if offload == "sequential":
        weights = 0
    elif offload == "model":
        weights = max(_weights(model) for model in models)
    else:
        weights = sum(_weights(model) for model in models)
    return CostEstimate(
        width=width,
        height=height,
        native_size=pipe.native_size,
        latent_cells=cells,
        unet_evaluations=sum(branches) * outputs,
        attention_tokens=tokens,
        attention_bytes=attention,
        attention_materialised=held > 0,
        weights_bytes=weights,
        peak_bytes=weights + max(unet_working, vae_working),
        device=str(pipe.device),
    )


def _held_share(unet: Any, heads: int) -> float:
    """The share of an attention layer's score matrices its processors hold at once: 0 for
    PyTorch's scaled-dot-product attention, a slice's share with attention slicing, else 1."""
    processors = list(getattr(unet, "attn_processors", {}).values())
    if processors and all(type(p).__name__ == "AttnProcessor2_0" for p in processors):
        return 0.0
    sliced = [p for p in processors if type(p).__name__ == "SlicedAttnProcessor"]
    if sliced and len(sliced) == len(processors):
        return min(1.0, max(int(p.slice_size) for p in sliced) / max(heads, 1))
    return 1.0


def _is_zero(weight: Any) -> bool:
    if isinstance(weight, torch.Tensor):
        return bool((weight == 0).all())
    return float(weight) == 0.0


def check_fits(estimate: CostEstimate, free_bytes: int) -> None:
    """Raises ``MemoryError`` when ``estimate`` needs more than ``free_bytes``, naming a size and
    the tools that would fit."""
    if estimate.peak_bytes <= free_bytes:
        return
    scale = (free_bytes / max(estimate.peak_bytes, 1)) ** 0.5
    suggestion = (
        f"resize='native' (long side {estimate.native_size})"
        if estimate.area_factor > 1
        else f"an image of about {int(estimate.width * scale)}×{int(estimate.height * scale)}"
    )
    raise MemoryError(
        f"this edit needs about {_size(estimate.peak_bytes)} on {estimate.device} and "
        f"{_size(free_bytes)} is free ({estimate}); edit at {suggestion}, or call "
        "enable_vae_tiling(), enable_model_cpu_offload() or enable_sequential_cpu_offload()"
    )
