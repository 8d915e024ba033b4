"""Real images into Prompt-to-Prompt: DDIM inversion and null-text inversion (Mokady et al. 2023)."""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from instructedit._inputs import check_positive_int, check_side
from instructedit.caching import DeepCacheUNet
from instructedit.guidance import check_scale
from instructedit.images import ImageInput, load_image, pil_to_tensor, prepare_image
from instructedit.sampling import scheduler_from_name

if TYPE_CHECKING:
    from instructedit.p2p._pipeline import PromptToPrompt

__all__ = ["Inversion", "ddim_inversion", "invert", "null_text_inversion"]

logger = logging.getLogger(__name__)


@dataclass
class Inversion:
    """A real image, inverted: start :meth:`PromptToPrompt.generate` from ``latents`` with
    ``scheduler``, ``guidance_scale`` and ``uncond_embeddings`` to reconstruct or edit it.

    Attributes:
        latents: x_T ``[1, 4, h, w]``.
        trajectory: DDIM inversion latents x_0 … x_T.
        uncond_embeddings: optimised unconditional embedding per step (null-text inversion), or
            ``None`` (plain DDIM inversion: use the empty prompt).
        prompt: the caption the image was inverted with (the source prompt for edits).
        scheduler: the DDIM scheduler of the inversion (same timesteps for the edit).
        num_inference_steps: steps of the inversion.
        guidance_scale: the guidance scale null-text inversion was optimised for.
    """

    latents: Tensor
    trajectory: list[Tensor]
    uncond_embeddings: list[Tensor] | None
    prompt: str
    scheduler: Any
    num_inference_steps: int
    guidance_scale: float


def _alpha(scheduler: Any, timestep: int) -> Tensor:
    return scheduler.alphas_cumprod[timestep] if timestep >= 0 else scheduler.final_alpha_cumprod


def _ddim_step(scheduler: Any, eps: Tensor, timestep: int, sample: Tensor) -> Tensor:
    """One deterministic DDIM step t → t − Δ (η = 0, ε-prediction)."""
    previous = timestep - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    alpha, alpha_prev = _alpha(scheduler, timestep), _alpha(scheduler, previous)
    x0 = (sample - (1 - alpha) ** 0.5 * eps) / alpha**0.5
    return alpha_prev**0.5 * x0 + (1 - alpha_prev) ** 0.5 * eps


def _ddim_inverse_step(scheduler: Any, eps: Tensor, timestep: int, sample: Tensor) -> Tensor:
    """One DDIM inversion step t − Δ → t, with ε predicted at t (Mokady et al.'s ``next_step``)."""
    current = min(
        timestep - scheduler.config.num_train_timesteps // scheduler.num_inference_steps, 999
    )
    alpha, alpha_next = _alpha(scheduler, current), scheduler.alphas_cumprod[timestep]
    x0 = (sample - (1 - alpha) ** 0.5 * eps) / alpha**0.5
    return alpha_next**0.5 * x0 + (1 - alpha_next) ** 0.5 * eps


def _side_multiple(p2p: PromptToPrompt) -> int:
    return max(8, p2p.vae_scale_factor)


def _check_size(p2p: PromptToPrompt, height: int | None, width: int | None) -> None:
    if (height is None) != (width is None):
        raise ValueError(
            f"pass both height and width to resize the image, or neither, got height={height!r} "
            f"and width={width!r}"
        )
    multiple = _side_multiple(p2p)
    for name, value in (("height", height), ("width", width)):
        if value is not None:
            check_side(value, name, multiple)


def _check_layout(p2p: PromptToPrompt) -> None:
    if p2p.is_xl:
        raise ValueError(
            "inversion runs on Stable Diffusion 1.x/2.x models; this one is SDXL (its UNet "
            "takes pooled text and size ids, which inversion does not pass)"
        )


def _check_prompt(prompt: Any) -> None:
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")


def _check_null_text(
    guidance_scale: float,
    inner_steps: int,
    learning_rate: float,
    early_stop: float,
    early_stop_slope: float,
) -> None:
    check_scale("guidance_scale", guidance_scale)
    check_positive_int(inner_steps, "inner_steps")
    for name, value in (
        ("learning_rate", learning_rate),
        ("early_stop", early_stop),
        ("early_stop_slope", early_stop_slope),
    ):
        check_scale(name, value)
    if learning_rate == 0:
        raise ValueError(f"learning_rate must be a finite number > 0, got {learning_rate}")


def encode_real_image(
    p2p: PromptToPrompt, image: ImageInput, height: int | None, width: int | None
) -> Tensor:
    """A real image's clean latents ``[1, C, h, w]`` (the posterior's mean, scaled), its sides
    floored to the VAE's multiple or resized to ``height`` × ``width`` (checked first)."""
    _check_size(p2p, height, width)
    loaded = load_image(image, argument="image")
    if height is not None and width is not None:
        loaded = loaded.resize((width, height))
    multiple = _side_multiple(p2p)
    pixels = pil_to_tensor([prepare_image(loaded, multiple=multiple)]).to(p2p.device, p2p.dtype)
    with torch.no_grad():
        latent = p2p.vae.encode(pixels).latent_dist.mean
    return latent * p2p.vae.config.scaling_factor


def ddim_inversion(
    p2p: PromptToPrompt,
    image: ImageInput,
    prompt: str,
    *,
    num_inference_steps: int = 50,
    height: int | None = None,
    width: int | None = None,
    cache_interval: int = 1,
    progress: bool = True,
) -> Inversion:
    """Inverts ``image`` to x_T by running DDIM backwards with the conditional prediction.

    ``cache_interval`` above 1 reuses the UNet's deep features between full steps
    (:class:`~instructedit.caching.DeepCacheUNet`).

    The image's sides are floored to multiples of 8, or it is resized to ``height`` × ``width``
    (both given, each a positive multiple of 8).
    """
    _check_layout(p2p)
    _check_prompt(prompt)
    check_positive_int(num_inference_steps, "num_inference_steps")
    _check_size(p2p, height, width)
    unet = DeepCacheUNet(p2p.unet, interval=cache_interval) if cache_interval != 1 else p2p.unet
    scheduler = scheduler_from_name("ddim", p2p.scheduler.config)
    scheduler.set_timesteps(num_inference_steps, device=p2p.device)
    cond = p2p.encode_text([prompt])
    latent = encode_real_image(p2p, image, height, width)
    trajectory = [latent]
    with torch.no_grad():
        for timestep in tqdm(
            scheduler.timesteps.flip(0), disable=not progress, desc="DDIM inversion"
        ):
            t = int(timestep)
            eps = unet(latent, t, encoder_hidden_states=cond, return_dict=False)[0]
            latent = _ddim_inverse_step(scheduler, eps, t, latent)
            trajectory.append(latent)
    return Inversion(
        latents=latent,
        trajectory=trajectory,
        uncond_embeddings=None,
        prompt=prompt,
        scheduler=scheduler,
        num_inference_steps=num_inference_steps,
        guidance_scale=1.0,
    )


def null_text_inversion(
    p2p: PromptToPrompt,
    inversion: Inversion,
    *,
    guidance_scale: float = 7.5,
    inner_steps: int = 10,
    learning_rate: float = 1e-2,
    early_stop: float = 1e-5,
    early_stop_slope: float = 2e-5,
    progress: bool = True,
) -> Inversion:
    """Optimises one unconditional embedding per step so guided DDIM sampling retraces the
    inversion trajectory (Mokady et al., *Null-text Inversion*, CVPR 2023).

    Per step i: Adam on the embedding with learning rate ``learning_rate·(1 − i/100)``, at most
    ``inner_steps`` updates, stopping once the loss is below ``early_stop + early_stop_slope·i``.
    The thresholds are the paper's, for Stable Diffusion latents (standard deviation ≈ 1); scale
    them with the square of your latents' magnitude.
    """
    if not isinstance(inversion, Inversion):
        raise TypeError(f"inversion must be an Inversion, got {type(inversion).__name__}")
    _check_layout(p2p)
    _check_null_text(guidance_scale, inner_steps, learning_rate, early_stop, early_stop_slope)
    scheduler = inversion.scheduler
    steps = inversion.num_inference_steps
    cond = p2p.encode_text([inversion.prompt])
    uncond = p2p.encode_text([""])
    latent = inversion.trajectory[-1]
    optimised: list[Tensor] = []
    for index, timestep in enumerate(
        tqdm(scheduler.timesteps, disable=not progress, desc="null-text inversion")
    ):
        t = int(timestep)
        target = inversion.trajectory[steps - index - 1]
        embedding = uncond.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([embedding], lr=learning_rate * (1.0 - index / 100.0))
        with torch.no_grad():
            eps_cond = p2p.unet(latent, t, encoder_hidden_states=cond, return_dict=False)[0]
        for _ in range(inner_steps):
            with torch.enable_grad():
                eps_uncond = p2p.unet(
                    latent, t, encoder_hidden_states=embedding, return_dict=False
                )[0]
                eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
                loss = torch.nn.functional.mse_loss(_ddim_step(scheduler, eps, t, latent), target)
                # Only the embedding's gradient: the UNet's parameters are left untouched.
                (gradient,) = torch.autograd.grad(loss, [embedding])
            embedding.grad = gradient
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if loss.item() < early_stop + index * early_stop_slope:
                break
        uncond = embedding.detach()
        optimised.append(uncond)
        with torch.no_grad():
            eps_uncond = p2p.unet(latent, t, encoder_hidden_states=uncond, return_dict=False)[0]
            latent = _ddim_step(
                scheduler, eps_uncond + guidance_scale * (eps_cond - eps_uncond), t, latent
            )
    return Inversion(
        latents=inversion.latents,
        trajectory=inversion.trajectory,
        uncond_embeddings=optimised,
        prompt=inversion.prompt,
        scheduler=scheduler,
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
    )


def invert(
    p2p: PromptToPrompt,
    image: ImageInput,
    prompt: str,
    *,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    null_text: bool = True,
    height: int | None = None,
    width: int | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> Inversion:
    """DDIM inversion, then (by default) null-text inversion: the recipe for editing real images.

    ``height`` and ``width`` resize the image as in :func:`ddim_inversion`; other keyword
    arguments go to :func:`null_text_inversion`.
    """
    if null_text:
        # Checked before the DDIM inversion runs, so that a typo does not cost it.
        tunable = {
            name: parameter.default
            for name, parameter in inspect.signature(null_text_inversion).parameters.items()
            if parameter.kind is parameter.KEYWORD_ONLY
            and name not in ("guidance_scale", "progress")
        }
        unknown = sorted(set(kwargs) - set(tunable))
        if unknown:
            raise TypeError(
                f"invert got unknown keyword argument(s) {unknown}; null_text_inversion takes "
                f"{sorted(tunable)}"
            )
        _check_null_text(guidance_scale, **{**tunable, **kwargs})
    elif kwargs:
        raise TypeError(f"keyword argument(s) {sorted(kwargs)} need null_text=True")
    inversion = ddim_inversion(
        p2p,
        image,
        prompt,
        num_inference_steps=num_inference_steps,
        height=height,
        width=width,
        progress=progress,
    )
    if not null_text:
        return inversion
    return null_text_inversion(
        p2p, inversion, guidance_scale=guidance_scale, progress=progress, **kwargs
    )
