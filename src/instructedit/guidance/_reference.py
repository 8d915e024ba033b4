"""The guidance maths as pure functions: every faster path is tested against these."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

__all__ = ["dual_guidance", "dual_guidance_weights", "rescale_guidance", "weighted_sum"]


def dual_guidance(
    full: Tensor, image: Tensor, uncond: Tensor, *, text_scale: float, image_scale: float
) -> Tensor:
    """Combines the three InstructPix2Pix predictions (Brooks et al. 2023, eq. 3).

    .. math::

        \\tilde e = e(z, ∅, ∅) + s_I\\,(e(z, c_I, ∅) - e(z, ∅, ∅)) + s_T\\,(e(z, c_I, c_T) - e(z, c_I, ∅))

    Args:
        full: e(z, c_I, c_T), conditioned on the image and the instruction. ``[B, C, H, W]``.
        image: e(z, c_I, ∅), conditioned on the image only. ``[B, C, H, W]``.
        uncond: e(z, ∅, ∅), unconditional. ``[B, C, H, W]``.
        text_scale: s_T, the instruction's guidance scale.
        image_scale: s_I, the input image's guidance scale.
    """
    return uncond + image_scale * (image - uncond) + text_scale * (full - image)


def dual_guidance_weights(
    *, text_scale: float | Tensor, image_scale: float | Tensor
) -> dict[str, float | Tensor]:
    """Returns the formula of :func:`dual_guidance` as one weight per branch (the scales are
    numbers, or tensors of one value per batch row).

    ``(1 − s_I)·uncond + (s_I − s_T)·image + s_T·full``: a branch whose weight is exactly zero
    (``uncond`` at s_I = 1, ``image`` at s_I = s_T) does not need to be computed.
    """
    return {"full": text_scale, "image": image_scale - text_scale, "uncond": 1.0 - image_scale}


def rescale_guidance(guided: Tensor, conditional: Tensor, rescale: float) -> Tensor:
    """Rescales a guided prediction towards the conditional one's standard deviation.

    Lin et al. 2023, *Common Diffusion Noise Schedules and Sample Steps are Flawed*, §3.4:
    ``x = φ·guided·std(cond)/std(guided) + (1 − φ)·guided``, with the std over every dimension
    but the batch. ``rescale`` = 0 returns ``guided`` unchanged.
    """
    if rescale == 0.0:
        return guided
    dims = list(range(1, guided.ndim))
    std_conditional = conditional.std(dim=dims, keepdim=True)
    std_guided = guided.std(dim=dims, keepdim=True)
    rescaled = guided * (std_conditional / std_guided)
    return rescale * rescaled + (1.0 - rescale) * guided


def weighted_sum(
    predictions: Mapping[str, Tensor], weights: Mapping[str, float | Tensor]
) -> Tensor:
    """Returns Σ weights[name]·predictions[name] over the branches with a non-zero weight.

    A weight is a float or a per-row tensor ``[B, 1, 1, 1]``.
    """
    total: Tensor | None = None
    for name, weight in weights.items():
        if isinstance(weight, Tensor):
            if not bool((weight != 0).any()):
                continue
            term = predictions[name] * weight.to(predictions[name])
        elif weight == 0.0:
            continue
        else:
            term = predictions[name] * weight
        total = term if total is None else total + term
    if total is None:
        raise ValueError(f"every branch weight is zero: {weights}")
    return total
