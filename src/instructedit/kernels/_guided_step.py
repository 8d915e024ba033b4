"""The Triton kernel of the fused guided step."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor

from instructedit.kernels import interpreting

__all__ = ["launch_guided_step"]

_BLOCK = 4096
_MAX_BRANCHES = 3


@triton.jit
def _guided_step_kernel(
    out_ptr,
    sample_ptr,
    branches_ptr,
    noise_ptr,
    n_elements,
    w0,
    w1,
    w2,
    a,
    b,
    c,
    NUM_BRANCHES: tl.constexpr,  # noqa: N803 - Triton's convention for compile-time constants
    HAS_NOISE: tl.constexpr,  # noqa: N803
    BLOCK: tl.constexpr,  # noqa: N803
):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n_elements
    # Branch k occupies elements k·n … (k+1)·n − 1 of the stacked UNet output.
    guided = w0 * tl.load(branches_ptr + offsets, mask=mask).to(tl.float32)
    if NUM_BRANCHES > 1:
        guided += w1 * tl.load(branches_ptr + n_elements + offsets, mask=mask).to(tl.float32)
    if NUM_BRANCHES > 2:
        guided += w2 * tl.load(branches_ptr + 2 * n_elements + offsets, mask=mask).to(tl.float32)
    result = a * tl.load(sample_ptr + offsets, mask=mask).to(tl.float32) + b * guided
    if HAS_NOISE:
        result += c * tl.load(noise_ptr + offsets, mask=mask).to(tl.float32)
    tl.store(out_ptr + offsets, result.to(out_ptr.dtype.element_ty), mask=mask)


def launch_guided_step(
    branches: Tensor,
    weights: Sequence[float],
    sample: Tensor,
    a: float,
    b: float,
    c: float,
    noise: Tensor | None,
) -> Tensor:
    """Validates the inputs and launches :func:`_guided_step_kernel` over ``sample``'s elements."""
    count = len(weights)
    if not 1 <= count <= _MAX_BRANCHES:
        raise ValueError(f"weights must hold 1 to {_MAX_BRANCHES} values, got {count}")
    if branches.shape[0] != count * sample.shape[0] or branches.shape[1:] != sample.shape[1:]:
        raise ValueError(
            f"branches {tuple(branches.shape)} must stack {count} tensors shaped like sample "
            f"{tuple(sample.shape)}"
        )
    if c != 0.0 and noise is None:
        raise ValueError("noise is required when c != 0")
    if noise is not None and noise.shape != sample.shape:
        raise ValueError(
            f"noise {tuple(noise.shape)} must be shaped like sample {tuple(sample.shape)}"
        )
    branches = branches.contiguous()
    sample_c = sample.contiguous()
    has_noise = noise is not None and c != 0.0
    noise_c = noise.contiguous() if has_noise and noise is not None else sample_c
    # Triton's interpreter truncates on its fp32 → bf16 store (compiled kernels round to nearest
    # even); store fp32 there and let torch round.
    staged = interpreting() and sample_c.dtype == torch.bfloat16
    out = torch.empty_like(sample_c, dtype=torch.float32 if staged else sample_c.dtype)
    n_elements = sample_c.numel()
    padded = [float(w) for w in weights] + [0.0] * (_MAX_BRANCHES - count)
    grid = (triton.cdiv(n_elements, _BLOCK),)
    _guided_step_kernel[grid](
        out,
        sample_c,
        branches,
        noise_c,
        n_elements,
        padded[0],
        padded[1],
        padded[2],
        float(a),
        float(b),
        float(c),
        NUM_BRANCHES=count,
        HAS_NOISE=has_noise,
        BLOCK=_BLOCK,
    )
    return out.to(sample_c.dtype) if staged else out
