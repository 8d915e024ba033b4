"""Guidance objects: which UNet branches a step needs, and how to combine them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal, Protocol, runtime_checkable

import torch
from torch import Tensor

from instructedit.guidance._reference import dual_guidance_weights, rescale_guidance, weighted_sum

__all__ = ["Backend", "ClassifierFreeGuidance", "DualGuidance", "Guidance", "check_scale"]

Backend = Literal["auto", "torch", "triton"]
_BACKENDS = ("auto", "torch", "triton")


@runtime_checkable
class Guidance(Protocol):
    """What the denoising loop needs from a guidance method.

    A guidance method names its branches (each a UNet evaluation under different conditioning)
    and says, per step, which weight each branch gets. The loop evaluates only the branches with
    a non-zero weight and combines them.
    """

    @property
    def branch_names(self) -> tuple[str, ...]:
        """Every branch this guidance can ask for."""
        ...

    @property
    def guidance_rescale(self) -> float:
        """φ of :func:`~instructedit.guidance.rescale_guidance`; 0 keeps the linear combination."""
        ...

    @property
    def backend(self) -> Backend:
        """Which implementation of the fused step to use."""
        ...

    def weights(self, step: int, num_steps: int) -> dict[str, float | Tensor]:
        """Returns the weight of every branch at ``step`` (0-based) of ``num_steps``.

        A weight is a float, or a tensor ``[B, 1, 1, 1]`` with one value per batch row.

        Branches with weight 0 are not evaluated. When :attr:`guidance_rescale` is 0, the
        combination must be exactly ``Σ weight·prediction``: the fused step uses the weights
        directly, without calling :meth:`combine`.
        """
        ...

    def combine(self, predictions: Mapping[str, Tensor], step: int, num_steps: int) -> Tensor:
        """Combines the branch predictions of ``step``.

        ``predictions`` holds at least every branch whose weight at ``step`` is non-zero.
        """
        ...


def check_scale(name: str, value: float) -> None:
    """Raises unless ``value`` is a finite number >= 0; the message names ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")


def _check_common(guidance_rescale: float, interval: tuple[float, float], backend: str) -> None:
    check_scale("guidance_rescale", guidance_rescale)
    if guidance_rescale > 1:
        raise ValueError(f"guidance_rescale must be in [0, 1], got {guidance_rescale}")
    if len(interval) != 2:
        raise ValueError(f"interval must be a (start, end) pair of fractions, got {interval!r}")
    start, end = interval
    if not (0.0 <= start <= end <= 1.0):
        raise ValueError(f"interval must satisfy 0 <= start <= end <= 1, got {interval!r}")
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")


def _in_interval(interval: tuple[float, float], step: int, num_steps: int) -> bool:
    start, end = interval
    position = step / num_steps
    return start <= position < end or (end == 1.0 and position >= start)


@dataclass(frozen=True)
class DualGuidance:
    """Classifier-free guidance over two conditions, image and instruction (InstructPix2Pix).

    Brooks, Holynski and Efros, *InstructPix2Pix: Learning to Follow Image Editing Instructions*,
    CVPR 2023, eq. 3. Three branches of the same latent z:

    * ``full`` = e(z, c_I, c_T): the input image and the instruction;
    * ``image`` = e(z, c_I, ∅): the input image, empty instruction;
    * ``uncond`` = e(z, ∅, ∅): zero image latent, empty instruction.

    combined as ``uncond + s_I·(image − uncond) + s_T·(full − image)``. Equivalently the branch
    weights are ``(1 − s_I, s_I − s_T, s_T)``; a zero weight means the branch is not run, so
    s_I = 1 or s_I = s_T costs two UNet evaluations a step instead of three, with the same result.

    Raising s_I keeps the output closer to the input image; raising s_T follows the instruction
    more strongly.

    Example:
        >>> guidance = DualGuidance(text_scale=7.5, image_scale=1.0)
        >>> guidance.weights(0, 10)
        {'full': 7.5, 'image': -6.5, 'uncond': 0.0}
    """

    text_scale: float = 7.5
    """s_T: how strongly to follow the instruction (official default 7.5)."""
    image_scale: float = 1.5
    """s_I: how strongly to stay with the input image (official default 1.5)."""
    guidance_rescale: float = 0.0
    """φ in [0, 1] (Lin et al. 2023): rescales the guided prediction towards the std of ``full``;
    0 disables it. A non-zero value disables the fused step (the rescale is not affine)."""
    interval: tuple[float, float] = (0.0, 1.0)
    """Fractions (start, end) of the steps where guidance applies; outside it only ``full`` runs
    (one UNet evaluation a step)."""
    backend: Backend = "auto"
    """Fused-step implementation: ``"triton"`` (CUDA tensors), ``"torch"``, or ``"auto"``
    (Triton on CUDA when available, else torch)."""

    def __post_init__(self) -> None:
        check_scale("text_scale", self.text_scale)
        check_scale("image_scale", self.image_scale)
        _check_common(self.guidance_rescale, self.interval, self.backend)

    @property
    def branch_names(self) -> tuple[str, ...]:
        return ("full", "image", "uncond")

    def with_scales(
        self, *, text_scale: float | None = None, image_scale: float | None = None
    ) -> DualGuidance:
        """Returns a copy with new scales (``None`` keeps the current one)."""
        return replace(
            self,
            text_scale=self.text_scale if text_scale is None else text_scale,
            image_scale=self.image_scale if image_scale is None else image_scale,
        )

    def weights(self, step: int, num_steps: int) -> dict[str, float | Tensor]:
        if not _in_interval(self.interval, step, num_steps):
            return {"full": 1.0, "image": 0.0, "uncond": 0.0}
        return dual_guidance_weights(text_scale=self.text_scale, image_scale=self.image_scale)

    def combine(self, predictions: Mapping[str, Tensor], step: int, num_steps: int) -> Tensor:
        weights = self.weights(step, num_steps)
        guided = weighted_sum(predictions, weights)
        if weights["full"] == 1.0 and weights["image"] == weights["uncond"] == 0.0:
            return guided
        return rescale_guidance(guided, predictions["full"], self.guidance_rescale)


@dataclass(frozen=True)
class ClassifierFreeGuidance:
    """Classifier-free guidance over one condition (Ho and Salimans, 2022), for text-to-image.

    Branches ``cond`` = e(z, c) and ``uncond`` = e(z, ∅), combined as
    ``uncond + s·(cond − uncond)``; at s = 1 only ``cond`` runs.
    """

    scale: float | tuple[float, ...] = 7.5
    """s: guidance scale (Stable Diffusion's default 7.5), or one scale per batch row (the
    InstructPix2Pix data recipe draws s ~ U[7.5, 15] per sample); per-row scales run unfused."""
    guidance_rescale: float = 0.0
    """φ in [0, 1] (Lin et al. 2023); 0 disables it."""
    interval: tuple[float, float] = (0.0, 1.0)
    """Fractions (start, end) of the steps where guidance applies; outside it only ``cond`` runs."""
    backend: Backend = "auto"
    """Fused-step implementation, as in :class:`DualGuidance`."""

    def __post_init__(self) -> None:
        if isinstance(self.scale, tuple):
            if not self.scale:
                raise ValueError("scale must be a number or a non-empty tuple, got ()")
            for index, value in enumerate(self.scale):
                check_scale(f"scale[{index}]", value)
        else:
            check_scale("scale", self.scale)
        _check_common(self.guidance_rescale, self.interval, self.backend)

    @property
    def branch_names(self) -> tuple[str, ...]:
        return ("cond", "uncond")

    def weights(self, step: int, num_steps: int) -> dict[str, float | Tensor]:
        if not _in_interval(self.interval, step, num_steps):
            return {"cond": 1.0, "uncond": 0.0}
        if isinstance(self.scale, tuple):
            scale = torch.tensor(self.scale).view(-1, 1, 1, 1)
            return {"cond": scale, "uncond": 1.0 - scale}
        return {"cond": float(self.scale), "uncond": 1.0 - float(self.scale)}

    def combine(self, predictions: Mapping[str, Tensor], step: int, num_steps: int) -> Tensor:
        weights = self.weights(step, num_steps)
        guided = weighted_sum(predictions, weights)
        if not isinstance(weights["uncond"], Tensor) and weights["uncond"] == 0.0:
            return guided
        return rescale_guidance(guided, predictions["cond"], self.guidance_rescale)
