"""Inversion-free editing: the virtual inversion of InfEdit (Xu et al., *Inversion-Free Image
Editing with Natural Language*, CVPR 2024), its Denoising Diffusion Consistent Model (DDCM)
sampler, as a scheduler of the shared denoising loop.

No inversion pass runs. At each step the source branch sees the real image's clean latents
``x₀`` noised afresh, ``x_s = √ᾱ_t x₀ + √(1−ᾱ_t) ε``, so the noise it carries is known
(``ε_c``). The target's clean estimate keeps the source exact and moves only by what the
prompts change:

``x̂₀ = x₀ + ((x_t − x_s) − √(1−ᾱ_t) (ε_t − ε_s)) / √ᾱ_t``, then
``x_t ← √ᾱ_{t'} x̂₀ + √(1−ᾱ_{t'}−σ²) (ε_t − ε_s + ε_c) + σ z`` with ``σ² = η (1−ᾱ_{t'})``.

A third, *mutual* branch (the source prompt on its own latents) moves the source latents the
same way; every branch's noise ``z`` is shared. With the target prompt equal to the source
prompt (and equal guidance) every branch stays on the source's path and ``x̂₀ = x₀``: the image
comes back exactly. Any scheduler with ``alphas_cumprod`` serves for the timesteps: DDIM, or
LCM's (consistency) schedule.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from instructedit.attention import attention_control
from instructedit.guidance import ClassifierFreeGuidance
from instructedit.sampling import BranchConditioning, denoise, scheduler_from_name

if TYPE_CHECKING:
    from instructedit.p2p._unified import UnifiedAttentionControl

__all__ = ["SAMPLERS", "VirtualInversion", "virtual_edit"]

SAMPLERS = frozenset({"DDIMScheduler", "DDPMScheduler", "LCMScheduler"})
"""The diffusers schedulers whose timesteps virtual inversion steps through."""

STREAMS = ("source", "target", "mutual")
"""The row blocks of the latents the sampler steps, in order."""


def check_eta_and_strength(eta: float, strength: float) -> None:
    """Raises unless ``eta`` is in [0, 1] and ``strength`` in (0, 1] (NaN fails both)."""
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta!r}")
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength!r}")


class VirtualInversion:
    """The DDCM sampler of InfEdit for :func:`~instructedit.sampling.denoise` (see the module's
    docstring). The latents it steps stack three blocks of ``P`` rows: source, target, mutual.

    Args:
        scheduler: a ``DDIMScheduler``, ``DDPMScheduler`` or ``LCMScheduler`` of an
            ε-prediction model; its timesteps are used.
        clean_latents: the real images' latents ``x₀`` ``[P, C, h, w]`` (scaled).
        eta: η in [0, 1]: the share of fresh noise each step (InfEdit's default 1).
        strength: the share of the schedule run, from its noisiest end (1: all of it).
        generator: draws the shared noise ``z`` (and the start's noise).

    Attributes:
        pred_original: the target's last clean estimate ``x̂₀`` ``[P, C, h, w]``.
    """

    init_noise_sigma = 1.0

    def __init__(
        self,
        scheduler: Any,
        clean_latents: Tensor,
        *,
        eta: float = 1.0,
        strength: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        if type(scheduler).__name__ not in SAMPLERS:
            raise ValueError(
                f"virtual inversion takes the timesteps of {sorted(SAMPLERS)} (integer "
                f"timesteps on ᾱ); got {type(scheduler).__name__}"
            )
        prediction = scheduler.config.prediction_type
        if prediction != "epsilon":
            raise ValueError(
                f"virtual inversion combines noise predictions; this model predicts "
                f"{prediction!r} (prediction_type), use an ε-prediction model"
            )
        check_eta_and_strength(eta, strength)
        self.scheduler = scheduler
        self.clean = clean_latents
        self.eta = float(eta)
        self.strength = float(strength)
        self.generator = generator
        self.pred_original: Tensor | None = None
        self._timesteps: Tensor = torch.empty(0, dtype=torch.long)
        self.skipped_steps = 0
        """Steps of the schedule that ``strength`` leaves out (set by :meth:`set_timesteps`)."""
        self._index = 0

    # ------------------------------------------------------------------ the scheduler's face

    def set_timesteps(self, num_inference_steps: int, device: Any = None) -> None:
        """Takes the inner scheduler's timesteps, the last ``strength`` of them (diffusers'
        img2img rule: ``int(n · strength)`` steps, at least one)."""
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        full = self.scheduler.timesteps
        kept = max(1, min(int(len(full) * self.strength), len(full)))
        self._timesteps = full[len(full) - kept :]
        self.skipped_steps = len(full) - kept
        self._index = 0

    @property
    def timesteps(self) -> Tensor:
        return self._timesteps

    @property
    def step_alphas(self) -> list[float]:
        """ᾱ at each of :attr:`timesteps`."""
        return [float(self._alpha(t)) for t in self._timesteps]

    def scale_model_input(self, sample: Tensor, timestep: Any = None) -> Tensor:
        return sample

    def start(self, noise: Tensor) -> Tensor:
        """The first latents: ``x₀`` noised to the first timestep with ``noise`` ``[P, ...]``,
        the same in the three blocks."""
        alpha = self._alpha(self._timesteps[0]).to(self.clean.device, self.clean.dtype)
        noisy = alpha.sqrt() * self.clean + (1.0 - alpha).sqrt() * noise.to(self.clean)
        return noisy.repeat(len(STREAMS), 1, 1, 1)

    def _alpha(self, timestep: Tensor) -> Tensor:
        step = int(timestep)
        alphas = self.scheduler.alphas_cumprod
        if step >= 0:
            return alphas[step]
        return getattr(self.scheduler, "final_alpha_cumprod", alphas[0])

    def step(
        self,
        model_output: Tensor,
        timestep: Tensor | int,
        sample: Tensor,
        return_dict: bool = False,
    ) -> tuple[Tensor]:
        """One DDCM step of the three blocks (the module's docstring); the noise predictions
        ``model_output`` are the guided ones, stacked like ``sample``."""
        index = self._index
        timesteps = self._timesteps
        current = timesteps[index]
        following = timesteps[index + 1] if index + 1 < len(timesteps) else current
        dtype = torch.promote_types(sample.dtype, torch.float32)  # float64 stays float64
        alpha = self._alpha(current).to(sample.device, dtype)
        alpha_next = self._alpha(following).to(sample.device, dtype)
        variance = self.eta * (1.0 - alpha_next)
        x_s, x_t, x_m = sample.to(dtype).chunk(len(STREAMS))
        e_s, e_t, e_m = model_output.to(dtype).chunk(len(STREAMS))
        x_0 = self.clean.to(dtype)
        noise = torch.randn(x_s.shape, generator=self.generator).to(sample.device, dtype)
        carried = (x_s - alpha.sqrt() * x_0) / (1.0 - alpha).sqrt()  # ε_c: the known noise

        def estimate(x: Tensor, e: Tensor) -> tuple[Tensor, Tensor]:
            clean = x_0 + ((x - x_s) - (1.0 - alpha).sqrt() * (e - e_s)) / alpha.sqrt()
            return clean, (e - e_s) + carried

        target_clean, target_eps = estimate(x_t, e_t)
        mutual_clean, mutual_eps = estimate(x_m, e_m)
        self.pred_original = target_clean.to(sample.dtype)
        if len(timesteps) == 1:  # one step: the estimates themselves
            blocks = (x_0, target_clean, mutual_clean)
        else:
            direction = (1.0 - alpha_next - variance).clamp(min=0.0).sqrt()
            fresh = variance.sqrt() * noise
            blocks = (
                alpha_next.sqrt() * x_0 + direction * mutual_eps + fresh,
                alpha_next.sqrt() * target_clean + direction * target_eps + fresh,
                alpha_next.sqrt() * mutual_clean + direction * mutual_eps + fresh,
            )
        self._index += 1
        return (torch.cat(blocks).to(sample.dtype),)


def virtual_edit(
    p2p: Any,
    clean: Tensor,
    source_prompt: str,
    target_prompt: str,
    *,
    num_inference_steps: int,
    guidance_scale: float,
    source_guidance_scale: float,
    eta: float,
    strength: float,
    seed: int,
    scheduler: Any | None,
    progress: bool,
    controller: UnifiedAttentionControl | None = None,
) -> Tensor:
    """The target's clean latents of ``p2p``'s virtual-inversion edit of ``clean`` (checked
    arguments; :meth:`~instructedit.p2p.PromptToPrompt.edit_real`)."""
    base = scheduler if scheduler is not None else scheduler_from_name("ddim", p2p.scheduler.config)
    generator = torch.Generator().manual_seed(seed)
    sampler = VirtualInversion(base, clean, eta=eta, strength=strength, generator=generator)
    sampler.set_timesteps(num_inference_steps, device=p2p.device)
    start = sampler.start(torch.randn(clean.shape, generator=generator))
    text = p2p.encode_text([source_prompt, target_prompt, source_prompt])
    negative = p2p.encode_text([""]).expand(3, -1, -1)
    scales = (source_guidance_scale, guidance_scale, source_guidance_scale)
    guidance = ClassifierFreeGuidance(
        scale=float(guidance_scale) if len(set(scales)) == 1 else tuple(map(float, scales))
    )
    conditioning = {"cond": BranchConditioning(text), "uncond": BranchConditioning(negative)}
    steps = len(sampler.timesteps)

    def blend(index: int, timestep: Tensor, tensors: dict[str, Tensor]) -> Mapping[str, Any]:
        assert controller is not None
        return {"latents": controller.step_end(tensors["latents"], index, steps)}

    control: contextlib.AbstractContextManager[Any] = contextlib.nullcontext(None)
    if controller is not None:
        if controller.num_pairs != clean.shape[0]:
            raise ValueError(
                f"controller was made for {controller.num_pairs} pairs, the edit has "
                f"{clean.shape[0]}"
            )
        controller.prepare(sampler.step_alphas, sampler.skipped_steps)
        control = attention_control(
            p2p.unet,
            controller,
            latent_size=(clean.shape[2], clean.shape[3]),
            num_pairs=clean.shape[0],
        )
    with torch.no_grad(), control as state:
        denoise(
            p2p.unet,
            sampler,
            guidance,
            start,
            conditioning,
            controller=state,
            callback_on_step_end=blend if controller is not None else None,
            progress=progress,
        )
    assert sampler.pred_original is not None
    return sampler.pred_original
