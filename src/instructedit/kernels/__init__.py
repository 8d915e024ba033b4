"""Triton kernels and their launchers. Triton is imported only when a kernel is launched."""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Sequence

from torch import Tensor

__all__ = ["guided_step_triton", "interpreting", "triton_available"]


@functools.cache
def _triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_available() -> bool:
    """Whether Triton is installed (kernels then run on CUDA tensors, or on CPU tensors when
    ``TRITON_INTERPRET=1``)."""
    return _triton_importable()


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def guided_step_triton(
    branches: Tensor,
    weights: Sequence[float],
    sample: Tensor,
    a: float,
    b: float,
    c: float,
    noise: Tensor | None = None,
) -> Tensor:
    """Fused guided step ``a·x + b·Σ_k w_k·ε_k + c·n`` as one Triton kernel.

    Reads each input once and writes the output once, accumulating in fp32 whatever the input
    dtype (fp32, fp16, bf16).

    Args:
        branches: ``[K·B, C, H, W]`` with K in 1..3 branch predictions stacked along the batch.
        weights: K guidance weights.
        sample: ``[B, C, H, W]`` current latents.
        a, b, c: the scheduler's affine coefficients.
        noise: ``[B, C, H, W]`` noise draw, required when ``c != 0``.

    Returns:
        ``[B, C, H, W]`` next latents in ``sample``'s dtype.

    Raises:
        RuntimeError: Triton is not installed, or the tensors are on the CPU without
            ``TRITON_INTERPRET=1``.
    """
    if not triton_available():
        raise RuntimeError("backend='triton' needs Triton: pip install triton (CUDA only)")
    if not sample.is_cuda and not interpreting():
        raise RuntimeError(
            "backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors); "
            "use backend='auto' to fall back to torch"
        )
    from instructedit.kernels._guided_step import launch_guided_step

    return launch_guided_step(branches, weights, sample, a, b, c, noise)
