"""The fused guided step: combine branch predictions and apply the scheduler update in one pass.

For DDIM, Euler and Euler ancestral the scheduler update is affine in the sample, the model
output and (for ancestral sampling) a fresh noise draw::

    x_next = a·x + b·ε̃ + c·n,    ε̃ = Σ_k w_k·ε_k

so the guidance combination and the update collapse into one weighted sum over the UNet's
branch outputs. :func:`affine_update` reads (a, b, c) off a scheduler exactly as its ``step``
would compute them, :func:`fused_guided_step` applies them, and :func:`advance_scheduler` keeps
the scheduler's state (its step index) where ``step`` would have left it. Noise is drawn with the
same call, shape, dtype and generator as ``step`` draws it, so the random stream is identical.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from instructedit.guidance._guidance import Backend

__all__ = [
    "AffineUpdate",
    "advance_scheduler",
    "affine_update",
    "draw_step_noise",
    "fused_guided_step",
    "fused_guided_step_torch",
    "resolve_backend",
]


@dataclass(frozen=True)
class AffineUpdate:
    """One scheduler step written as ``x_next = a·x + b·model_output + c·noise``."""

    a: float
    """Coefficient of the current sample."""
    b: float
    """Coefficient of the (guided) model output."""
    c: float
    """Coefficient of the fresh noise draw (0 when the step draws none)."""
    draws_noise: bool
    """Whether the scheduler draws noise in this step (it may draw and multiply by 0)."""


def _prediction_coefficients(
    prediction_type: str, alpha_bar: float
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Returns ((x0 from x, x0 from out), (eps from x, eps from out)) for DDIM-style schedulers."""
    sqrt_a, sqrt_b = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
    if prediction_type == "epsilon":
        return (1.0 / sqrt_a, -sqrt_b / sqrt_a), (0.0, 1.0)
    if prediction_type == "v_prediction":
        return (sqrt_a, -sqrt_b), (sqrt_b, sqrt_a)
    return None


def _ddim_update(scheduler: Any, timestep: Tensor | int, eta: float) -> AffineUpdate | None:
    config = scheduler.config
    if config.get("thresholding", False) or config.get("clip_sample", False):
        return None
    t = int(timestep)
    prev_t = t - config.num_train_timesteps // scheduler.num_inference_steps
    alphas = scheduler.alphas_cumprod
    alpha_bar = float(alphas[t])
    alpha_bar_prev = float(alphas[prev_t]) if prev_t >= 0 else float(scheduler.final_alpha_cumprod)
    coefficients = _prediction_coefficients(config.prediction_type, alpha_bar)
    if coefficients is None:
        return None
    (x0_x, x0_out), (eps_x, eps_out) = coefficients
    variance = (1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)
    std = eta * math.sqrt(variance)
    direction = math.sqrt(max(1 - alpha_bar_prev - std**2, 0.0))
    sqrt_prev = math.sqrt(alpha_bar_prev)
    a = sqrt_prev * x0_x + direction * eps_x
    b = sqrt_prev * x0_out + direction * eps_out
    return AffineUpdate(a=a, b=b, c=std, draws_noise=eta > 0)


def _sigmas(scheduler: Any, timestep: Tensor | int) -> tuple[float, float]:
    if scheduler.step_index is None:
        scheduler._init_step_index(timestep)
    index = scheduler.step_index
    return float(scheduler.sigmas[index]), float(scheduler.sigmas[index + 1])


def _euler_update(scheduler: Any, timestep: Tensor | int, churn: float) -> AffineUpdate | None:
    if churn != 0.0:
        return None
    sigma, sigma_next = _sigmas(scheduler, timestep)
    dt = sigma_next - sigma
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return AffineUpdate(a=1.0, b=dt, c=0.0, draws_noise=False)
    if prediction_type == "v_prediction":
        # x0 = −σ/√(σ²+1)·v + x/(σ²+1); x_next = x + (x − x0)/σ·dt.
        s2 = sigma * sigma + 1.0
        return AffineUpdate(
            a=1.0 + dt / sigma * (1.0 - 1.0 / s2), b=dt / math.sqrt(s2), c=0.0, draws_noise=False
        )
    return None


def _euler_ancestral_update(scheduler: Any, timestep: Tensor | int) -> AffineUpdate | None:
    sigma, sigma_next = _sigmas(scheduler, timestep)
    sigma_up = math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2)
    sigma_down = math.sqrt(sigma_next**2 - sigma_up**2)
    dt = sigma_down - sigma
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return AffineUpdate(a=1.0, b=dt, c=sigma_up, draws_noise=True)
    if prediction_type == "v_prediction":
        s2 = sigma * sigma + 1.0
        return AffineUpdate(
            a=1.0 + dt / sigma * (1.0 - 1.0 / s2),
            b=dt / math.sqrt(s2),
            c=sigma_up,
            draws_noise=True,
        )
    return None


def affine_update(
    scheduler: Any, timestep: Tensor | int, step_kwargs: dict[str, Any] | None = None
) -> AffineUpdate | None:
    """Returns the affine form of ``scheduler.step`` at ``timestep``, or ``None`` if it has none.

    Exact for diffusers' ``DDIMScheduler`` (any ``eta``, no clipping or thresholding),
    ``EulerDiscreteScheduler`` (``s_churn = 0``) and ``EulerAncestralDiscreteScheduler``, with
    ``epsilon`` or ``v_prediction`` models. Subclasses are not assumed to share the update, so
    only these exact classes qualify; every other scheduler returns ``None`` and goes through
    its own ``step``.

    Index-based schedulers (the Euler family) get their step index initialised from
    ``timestep`` if ``scale_model_input`` has not done so, as ``step`` would.
    """
    kwargs = step_kwargs or {}
    name = type(scheduler).__name__
    module = type(scheduler).__module__
    if not module.startswith("diffusers."):
        return None
    if name == "DDIMScheduler":
        return _ddim_update(scheduler, timestep, float(kwargs.get("eta", 0.0)))
    if name == "EulerDiscreteScheduler":
        return _euler_update(scheduler, timestep, float(kwargs.get("s_churn", 0.0)))
    if name == "EulerAncestralDiscreteScheduler":
        return _euler_ancestral_update(scheduler, timestep)
    return None


def advance_scheduler(scheduler: Any) -> None:
    """Moves the scheduler's state past one step, as its ``step`` does at its end."""
    if type(scheduler).__name__ in ("EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler"):
        scheduler._step_index += 1


def draw_step_noise(
    like: Tensor, generator: torch.Generator | Sequence[torch.Generator] | None
) -> Tensor:
    """Draws the step noise exactly as diffusers' schedulers do (``randn_tensor`` on ``like``)."""
    from diffusers.utils.torch_utils import randn_tensor

    return randn_tensor(like.shape, generator=generator, device=like.device, dtype=like.dtype)


def fused_guided_step_torch(
    branches: Tensor,
    weights: Sequence[float],
    sample: Tensor,
    update: AffineUpdate,
    noise: Tensor | None = None,
) -> Tensor:
    """The fused step in torch, accumulating in fp32.

    Args:
        branches: the UNet output for the evaluated branches stacked along the batch,
            ``[K·B, C, H, W]`` with branch k in rows ``k·B … (k+1)·B − 1``.
        weights: one guidance weight per evaluated branch, in the same order (K values).
        sample: the current latents ``[B, C, H, W]``.
        update: the scheduler's affine coefficients.
        noise: the step's noise draw ``[B, C, H, W]``, required when ``update.c != 0``.

    Returns:
        The next latents ``[B, C, H, W]``, in ``sample``'s dtype.
    """
    count = len(weights)
    if branches.shape[0] != count * sample.shape[0]:
        raise ValueError(
            f"branches has batch {branches.shape[0]}, expected {count} branches × {sample.shape[0]}"
        )
    parts = branches.float().chunk(count)
    result = sample.float() * update.a
    for part, weight in zip(parts, weights, strict=True):
        if weight != 0.0:
            result = result.add(part, alpha=update.b * weight)
    if update.c != 0.0:
        if noise is None:
            raise ValueError("noise is required when the update has a noise coefficient")
        result = result.add(noise.float(), alpha=update.c)
    return result.to(sample.dtype)


def resolve_backend(backend: Backend, tensor: Tensor) -> Backend:
    """Resolves ``"auto"``: Triton for CUDA tensors when Triton imports, torch otherwise.

    An explicit ``"triton"`` is returned as is; the kernel launcher fails loudly if it cannot run.
    """
    if backend != "auto":
        return backend
    if tensor.is_cuda:
        from instructedit.kernels import triton_available

        if triton_available():
            return "triton"
    return "torch"


def fused_guided_step(
    branches: Tensor,
    weights: Sequence[float],
    sample: Tensor,
    update: AffineUpdate,
    noise: Tensor | None = None,
    *,
    backend: Backend = "auto",
) -> Tensor:
    """Combines branch predictions and applies the scheduler update in one pass.

    Same arguments as :func:`fused_guided_step_torch`; ``backend`` picks the implementation
    (see :func:`resolve_backend`).
    """
    chosen = resolve_backend(backend, sample)
    if chosen == "triton":
        from instructedit.kernels import guided_step_triton

        return guided_step_triton(branches, weights, sample, update.a, update.b, update.c, noise)
    return fused_guided_step_torch(branches, weights, sample, update, noise)
