"""The one denoising loop. Every sampler in instructedit (editing, Prompt-to-Prompt, inversion,
evaluation) runs through :func:`denoise`."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from instructedit.guidance import Guidance, fused_guided_step
from instructedit.guidance._fused import advance_scheduler, affine_update, draw_step_noise

__all__ = [
    "CALLBACK_TENSORS",
    "NO_SAMPLE_PREDICTION",
    "SCHEDULERS",
    "BranchConditioning",
    "LatentBlend",
    "StepAware",
    "StepCallback",
    "check_sampler",
    "denoise",
    "scheduler_from_name",
    "scheduler_step_kwargs",
]

logger = logging.getLogger(__name__)

StepCallback = Callable[[int, Tensor, dict[str, Tensor]], "Mapping[str, Any] | None"]
"""``callback(step_index, timestep, tensors) -> changes``: called after every step with the
tensors it asked for (``"latents"``, the new latents; ``"noise_pred"``, the guided prediction of
the step). It may return ``{"latents": new}`` to replace the latents and/or ``{"stop": True}`` to
end sampling after this step; ``None`` changes nothing."""

CALLBACK_TENSORS = ("latents", "noise_pred")


@dataclass(frozen=True)
class BranchConditioning:
    """How the UNet is conditioned in one guidance branch.

    Attributes:
        encoder_hidden_states: text embeddings ``[B, T, D]``.
        image_latents: latents concatenated to the noisy latents along channels ``[B, C_I, h, w]``
            (InstructPix2Pix), or ``None`` for a text-to-image UNet.
        added_cond_kwargs: the UNet's added conditioning, each ``[B, ...]``: SDXL's
            ``{"text_embeds": pooled, "time_ids": size and crop ids}``; ``None`` for UNets
            without it (SD 1.x/2.x).
    """

    encoder_hidden_states: Tensor
    image_latents: Tensor | None = None
    added_cond_kwargs: Mapping[str, Tensor] | None = None


@dataclass(frozen=True)
class LatentBlend:
    """Keeps the latents outside a mask on the input's own path (blended latent diffusion,
    Avrahami et al., 2022; diffusers' inpainting pipelines for 4-channel UNets).

    After each scheduler update the loop sets ``latents = mask · latents + (1 − mask) · source_t``
    with ``source_t = scheduler.add_noise(source, noise, t_next)``, the input's clean latents
    noised to the step the update reached (the clean latents themselves after the last step).

    Attributes:
        mask: ``[B, 1, h, w]`` in [0, 1]: 1 where the edit may act, 0 where the input is kept.
        source: the input's clean latents ``[B, C, h, w]``, in the latent space the loop samples
            (scaled by the VAE's ``scaling_factor``).
        noise: the noise ``[B, C, h, w]`` that ``source`` is noised with at every step.
    """

    mask: Tensor
    source: Tensor
    noise: Tensor

    def apply(self, scheduler: Any, latents: Tensor, index: int, timesteps: Tensor) -> Tensor:
        """Blends ``latents`` after update ``index`` of ``timesteps`` (see the class)."""
        if index + 1 < len(timesteps):
            following = timesteps[index + 1 : index + 2]
            kept = scheduler.add_noise(self.source, self.noise, following)
        else:
            kept = self.source
        return self.mask * latents + (1.0 - self.mask) * kept.to(latents.dtype)


@runtime_checkable
class StepAware(Protocol):
    """An attention controller (or any observer) told which step and branches come next."""

    def set_step(self, step: int, num_steps: int, branches: tuple[str, ...]) -> None:
        """Called before each UNet evaluation with the branches stacked in its batch, in order."""
        ...


SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "lms": ("LMSDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm_solver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    # diffusers refuses first-order DPM-Solver with its default final sigma of zero.
    "dpm_solver": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min"},
    ),
    "dpm_solver_sde": ("DPMSolverSDEScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "deis": ("DEISMultistepScheduler", {}),
    "kdpm2": ("KDPM2DiscreteScheduler", {}),
}
"""Scheduler names accepted by :func:`scheduler_from_name` (and ``--scheduler``)."""

NO_SAMPLE_PREDICTION: frozenset[str] = frozenset(
    {"euler_ancestral", "kdpm2", "dpm_solver_sde", "pndm"}
)
"""Names of :data:`SCHEDULERS` whose diffusers ``step`` cannot take a model that predicts the
clean latent (``prediction_type="sample"``)."""


def check_sampler(name: str | None, prediction_type: str | None, *, argument: str) -> None:
    """Refuses a scheduler name that is not in :data:`SCHEDULERS` (``None`` passes), or one that
    cannot sample a model predicting ``prediction_type``, naming ``argument`` in the error."""
    if name is None:
        return
    if name not in SCHEDULERS:
        raise ValueError(f"{argument} must be one of {sorted(SCHEDULERS)} or None, got {name!r}")
    if prediction_type == "sample" and name in NO_SAMPLE_PREDICTION:
        raise ValueError(
            f"{argument} {name!r} cannot sample a 'sample'-prediction model (diffusers' step needs "
            f"epsilon or v_prediction): use one of {sorted(set(SCHEDULERS) - NO_SAMPLE_PREDICTION)}"
        )


def scheduler_from_name(name: str, config: Mapping[str, Any]) -> Any:
    """Builds the named diffusers scheduler from another scheduler's config (same noise schedule).

    DDIM and DDPM default to clipping the predicted sample to [-1, 1], which ruins latent
    samples; unless ``config`` comes from the same class and says otherwise, clipping is off.

    Args:
        name: a key of :data:`SCHEDULERS`, e.g. ``"euler_ancestral"`` or ``"dpm_solver++"``.
        config: the config of the scheduler being replaced (``scheduler.config``).
    """
    if name not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {sorted(SCHEDULERS)}, got {name!r}")
    import diffusers

    class_name, overrides = SCHEDULERS[name]
    scheduler_class = getattr(diffusers, class_name)
    extra = dict(overrides)
    if class_name in ("DDIMScheduler", "DDPMScheduler") and config.get("_class_name") != class_name:
        extra["clip_sample"] = False
    return scheduler_class.from_config(dict(config), **extra)


def scheduler_step_kwargs(
    scheduler: Any, generator: torch.Generator | Sequence[torch.Generator] | None, eta: float = 0.0
) -> dict[str, Any]:
    """Returns the extra ``step`` arguments a scheduler accepts (``eta``, ``generator``), as
    diffusers' pipelines pass them."""
    accepted = set(inspect.signature(scheduler.step).parameters)
    kwargs: dict[str, Any] = {}
    if "eta" in accepted:
        kwargs["eta"] = eta
    if "generator" in accepted:
        kwargs["generator"] = generator
    return kwargs


Conditioning = Mapping[str, BranchConditioning] | Callable[[int], Mapping[str, BranchConditioning]]
"""Branch conditioning for every step, or a function of the step index (null-text inversion
optimises one unconditional embedding per step)."""


class _ModelInput:
    """Reuses one UNet input buffer per set of active branches; only the noisy part changes."""

    def __init__(self, conditioning: Mapping[str, BranchConditioning]) -> None:
        self._conditioning = conditioning
        self._cache: dict[tuple[str, ...], tuple[Tensor, Tensor]] = {}
        self._added: dict[tuple[str, ...], dict[str, Tensor] | None] = {}

    def added(self, active: tuple[str, ...]) -> dict[str, Tensor] | None:
        """The active branches' added conditioning, stacked like the batch (``None`` without)."""
        if active not in self._added:
            given = [self._conditioning[name].added_cond_kwargs for name in active]
            if any((item is None) != (given[0] is None) for item in given):
                raise ValueError("either every branch has added_cond_kwargs or none has")
            first = given[0]
            self._added[active] = (
                None
                if first is None
                else {key: torch.cat([item[key] for item in given]) for key in first}  # type: ignore[index]
            )
        return self._added[active]

    def build(self, scaled: Tensor, active: tuple[str, ...]) -> tuple[Tensor, Tensor]:
        if active not in self._cache:
            hidden = torch.cat([self._conditioning[name].encoder_hidden_states for name in active])
            images = [self._conditioning[name].image_latents for name in active]
            batch, channels = scaled.shape[:2]
            extra = 0 if images[0] is None else images[0].shape[1]
            buffer = scaled.new_empty((len(active) * batch, channels + extra, *scaled.shape[2:]))
            for index, image in enumerate(images):
                if (image is None) != (images[0] is None):
                    raise ValueError("either every branch has image_latents or none has")
                if image is not None:
                    buffer[index * batch : (index + 1) * batch, channels:] = image
            self._cache[active] = (buffer, hidden)
        buffer, hidden = self._cache[active]
        batch, channels = scaled.shape[:2]
        for index in range(len(active)):
            buffer[index * batch : (index + 1) * batch, :channels] = scaled
        return buffer, hidden


def _nonzero(weight: float | Tensor) -> bool:
    if isinstance(weight, Tensor):
        return bool((weight != 0).any())
    return weight != 0.0


def denoise(
    unet: Callable[..., Any],
    scheduler: Any,
    guidance: Guidance,
    latents: Tensor,
    conditioning: Conditioning,
    *,
    step_kwargs: Mapping[str, Any] | None = None,
    controller: StepAware | None = None,
    callback_on_step_end: StepCallback | None = None,
    callback_tensor_inputs: Sequence[str] = ("latents",),
    blend: LatentBlend | None = None,
    progress: bool = True,
) -> Tensor:
    """Runs the scheduler's timesteps from ``latents`` with guidance; returns the final latents.

    Each step evaluates, in one UNet call, only the branches whose guidance weight is non-zero
    (stacked along the batch in ``guidance.branch_names`` order), then either applies the fused
    guided step (when the scheduler update is affine and the guidance linear, see
    the scheduler's affine form) or combines the branches with
    ``guidance.combine`` and calls ``scheduler.step``. Both give the same result; the fused step
    does it in one pass and keeps the scheduler's state and random draws identical.

    Args:
        unet: a ``UNet2DConditionModel`` (or a compiled one): ``unet(x, t,
            encoder_hidden_states=..., return_dict=False)[0]``.
        scheduler: a diffusers scheduler on which ``set_timesteps`` has been called.
        guidance: which branches to run and how to combine them.
        latents: initial latents ``[B, C, h, w]``, already scaled by ``init_noise_sigma``.
        conditioning: one :class:`BranchConditioning` per branch name of ``guidance``, each with
            batch B; or a function returning them for a step index.
        step_kwargs: extra ``scheduler.step`` arguments (see :func:`scheduler_step_kwargs`).
        controller: told the step and branch layout before each UNet call.
        callback_on_step_end: see :data:`StepCallback`.
        callback_tensor_inputs: which tensors the callback receives: ``"latents"`` and/or
            ``"noise_pred"``. Asking for ``"noise_pred"`` turns the fused step off (the fused step
            never forms the guided prediction on its own).
        blend: keeps the latents outside a mask on the input's path after every update (see
            :class:`LatentBlend`); ``None`` leaves them alone.
        progress: show a tqdm progress bar.

    Returns:
        The denoised latents ``[B, C, h, w]``.
    """
    unknown = sorted(set(callback_tensor_inputs) - set(CALLBACK_TENSORS))
    if unknown:
        raise ValueError(f"callback_tensor_inputs may hold {list(CALLBACK_TENSORS)}, got {unknown}")
    fixed = None if callable(conditioning) else conditioning
    first = conditioning(0) if callable(conditioning) else conditioning
    missing = [name for name in guidance.branch_names if name not in first]
    if missing:
        raise ValueError(
            f"conditioning lacks branches {missing}; guidance needs {list(guidance.branch_names)}"
        )
    kwargs = dict(step_kwargs or {})
    timesteps = scheduler.timesteps
    num_steps = len(timesteps)
    model_input = _ModelInput(fixed) if fixed is not None else None
    fusable = guidance.guidance_rescale == 0.0 and "noise_pred" not in callback_tensor_inputs
    for index, timestep in enumerate(tqdm(timesteps, disable=not progress, desc="denoising")):
        weights = guidance.weights(index, num_steps)
        active = tuple(name for name in guidance.branch_names if _nonzero(weights[name]))
        scaled = scheduler.scale_model_input(latents, timestep)
        step_input = model_input if model_input is not None else _ModelInput(conditioning(index))  # type: ignore[operator]
        unet_input, hidden = step_input.build(scaled, active)
        if controller is not None:
            controller.set_step(index, num_steps, active)
        added = step_input.added(active)
        extra = {} if added is None else {"added_cond_kwargs": added}
        output = unet(
            unet_input, timestep, encoder_hidden_states=hidden, return_dict=False, **extra
        )[0]
        scalar = all(isinstance(weights[name], float) for name in active)
        update = affine_update(scheduler, timestep, kwargs) if fusable and scalar else None
        if update is not None:
            batch = latents.shape[0]
            noise = (
                draw_step_noise(output[:batch], kwargs.get("generator"))
                if update.draws_noise
                else None
            )
            latents = fused_guided_step(
                output,
                [float(weights[name]) for name in active],
                latents,
                update,
                noise,
                backend=guidance.backend,
            )
            advance_scheduler(scheduler)
            noise_pred: Tensor | None = None
        else:
            predictions = dict(zip(active, output.chunk(len(active)), strict=True))
            noise_pred = guidance.combine(predictions, index, num_steps)
            latents = scheduler.step(noise_pred, timestep, latents, **kwargs, return_dict=False)[0]
        if blend is not None:
            latents = blend.apply(scheduler, latents, index, timesteps)
        if callback_on_step_end is not None:
            available = {"latents": latents}
            if noise_pred is not None:
                available["noise_pred"] = noise_pred
            tensors = {name: available[name] for name in callback_tensor_inputs}
            changes = callback_on_step_end(index, timestep, tensors) or {}
            latents = changes.get("latents", latents)
            if changes.get("stop", False):
                logger.info(
                    "sampling stopped by the callback after step %d of %d", index + 1, num_steps
                )
                break
    return latents
