"""Guidance distillation for instruction editors (Meng et al., *On Distillation of Guided
Diffusion Models*, CVPR 2023): one UNet pass a step instead of three.

A student editor learns the teacher's dual-guided prediction
``(1 − s_I)·ε(x, ∅, ∅) + (s_I − s_T)·ε(x, c_I, ∅) + s_T·ε(x, c_I, c_T)`` at scales drawn per
example from ranges, told the scales through the UNet's guidance embedding: diffusers'
``time_cond_proj_dim`` / ``timestep_cond`` (as its LCM UNets take the guidance scale), here two
sinusoidal embeddings side by side, one per scale. The student starts as the teacher with that
projection at zero, so before training it predicts the teacher's conditional branch. Its folder
loads in diffusers as a ``UNet2DConditionModel``;
:class:`~instructedit.pipeline.EditPipeline` recognises it from its config and runs one branch a
step at whatever scales are asked for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from instructedit.components import is_sdxl_unet
from instructedit.guidance import (
    SCALE_EMBEDDING_DIM,
    dual_guidance_weights,
    is_distilled,
    scale_embedding,
)
from instructedit.training._trainer import Trainer

__all__ = ["GuidanceDistiller", "guidance_target", "to_distilled_unet"]


def to_distilled_unet(teacher: Any, *, embedding_dim: int = SCALE_EMBEDDING_DIM) -> Any:
    """A student for guidance distillation: ``teacher``'s architecture and weights plus a
    guidance embedding (``time_cond_proj_dim = 2 × embedding_dim``) whose projection starts at
    zero, so the student predicts the teacher's conditional branch until trained."""
    from diffusers import UNet2DConditionModel

    if is_distilled(teacher):
        raise ValueError("teacher is already a guidance-distilled editor (time_cond_proj_dim set)")
    # Without the private keys: "_use_default_values" would reset the new setting.
    config = {key: value for key, value in teacher.config.items() if not key.startswith("_")}
    config["time_cond_proj_dim"] = 2 * embedding_dim
    student = UNet2DConditionModel.from_config(config)
    weights = teacher.state_dict()
    extra = sorted(set(student.state_dict()) - set(weights))
    if extra != ["time_embedding.cond_proj.weight"] or set(weights) - set(student.state_dict()):
        raise ValueError(
            f"the teacher's weights do not fit its own layout plus a guidance embedding "
            f"(new weights {extra})"
        )
    student.load_state_dict(weights, strict=False)
    with torch.no_grad():
        student.time_embedding.cond_proj.weight.zero_()
    parameter = next(teacher.parameters())
    return student.to(parameter.device, parameter.dtype)


def guidance_target(
    teacher: Any,
    noisy: Tensor,
    image_latents: Tensor,
    text: Tensor,
    empty: Tensor,
    timesteps: Tensor,
    text_scale: Tensor,
    image_scale: Tensor,
) -> Tensor:
    """The teacher's dual-guided prediction for each row at its own scales: its three branches
    (``full`` = (c_I, c_T), ``image`` = (c_I, ∅), ``uncond`` = (∅, ∅)) in one batched call,
    combined with :func:`~instructedit.guidance.dual_guidance_weights`."""
    batch = noisy.shape[0]
    blank = torch.zeros_like(image_latents)
    inputs = torch.cat(
        [
            torch.cat([noisy, image_latents], dim=1),
            torch.cat([noisy, image_latents], dim=1),
            torch.cat([noisy, blank], dim=1),
        ]
    )
    nothing = empty.expand(batch, -1, -1)
    hidden = torch.cat([text, nothing, nothing])
    full, image, uncond = teacher(inputs, timesteps.repeat(3), hidden).sample.float().chunk(3)
    weights = dual_guidance_weights(
        text_scale=text_scale.float().view(-1, 1, 1, 1),
        image_scale=image_scale.float().view(-1, 1, 1, 1),
    )
    return weights["full"] * full + weights["image"] * image + weights["uncond"] * uncond


def _scale_range(value: Any, name: str) -> tuple[float, float]:
    if (
        not isinstance(value, Sequence)
        or len(value) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        or not 0 <= value[0] <= value[1]
    ):
        raise ValueError(f"{name} must be a (low, high) pair with 0 <= low <= high, got {value!r}")
    return float(value[0]), float(value[1])


def _timestep_list(value: Sequence[int] | Tensor, parts: dict[str, Any]) -> Tensor:
    steps = torch.as_tensor(value)
    if steps.is_floating_point() and torch.isfinite(steps).all():
        steps = steps.round()  # e.g. an Euler scheduler's fractional timesteps
    scheduler = parts.get("noise_scheduler")
    limit = scheduler.config.num_train_timesteps if scheduler is not None else 1000
    if (
        steps.ndim != 1
        or steps.numel() == 0
        or not torch.isfinite(steps.float()).all()
        or int(steps.min()) < 0
        or int(steps.max()) >= limit
    ):
        raise ValueError(
            f"timesteps must be a non-empty list of integers in [0, {limit}), got {value!r}"
        )
    return steps.long()


class GuidanceDistiller(Trainer):
    """Trains a guidance-distilled student of an editor (see the module's docstring): a
    :class:`~instructedit.Trainer` whose loss is the student's one pass against the teacher's
    dual-guided prediction, with its checkpoints, exact resume, EMA, multi-process training
    and export. The teacher predicts ε (the InstructPix2Pix objective), and the text
    encoder stays frozen.

    Args:
        config: the run's :class:`~instructedit.TrainConfig` (``train_text_encoder`` off).
        teacher: the teacher editor's UNet (frozen).
        text_scales: the range s_T is drawn from, uniformly, per example.
        image_scales: the range s_I is drawn from.
        timesteps: the timesteps to train at, drawn uniformly per example (default: all of
            the noise scheduler's training timesteps). A sampler's own schedule, e.g.
            ``DDIMScheduler.timesteps`` after ``set_timesteps(20)``, spends the student's
            training on the steps it will take; fractional ones are rounded.
        unet: the student (default: :func:`to_distilled_unet` of ``teacher``).
        **parts: ``vae``, ``text_encoder``, ``tokenizer``, ``noise_scheduler``,
            ``train_dataset``, as :class:`~instructedit.Trainer` takes them.
    """

    def __init__(
        self,
        config: Any,
        *,
        teacher: Any,
        text_scales: tuple[float, float] = (3.0, 7.5),
        image_scales: tuple[float, float] = (1.0, 3.0),
        timesteps: Sequence[int] | Tensor | None = None,
        unet: Any = None,
        **parts: Any,
    ) -> None:
        if config.train_text_encoder:
            raise ValueError("guidance distillation keeps the text encoder frozen")
        if config.lora_rank is not None:
            raise ValueError(
                "guidance distillation trains the whole student (its new scale embedding "
                "included); config.lora_rank would freeze it"
            )
        if config.prediction_type not in (None, "epsilon"):
            raise ValueError(
                f"guidance distillation distils an ε-predicting teacher, got "
                f"config.prediction_type={config.prediction_type!r}"
            )
        if is_sdxl_unet(teacher):
            raise ValueError(
                "guidance distillation distils SD 1.x/2.x editors; the teacher is SDXL's"
            )
        self.text_scales = _scale_range(text_scales, "text_scales")
        self.image_scales = _scale_range(image_scales, "image_scales")
        self.timesteps = None if timesteps is None else _timestep_list(timesteps, parts)
        student = to_distilled_unet(teacher) if unet is None else unet
        if not is_distilled(student):
            raise ValueError("unet must take a guidance embedding (see to_distilled_unet)")
        super().__init__(config, unet=student, **parts)
        self.teacher = teacher.eval().requires_grad_(False)

    def _loss(
        self,
        unet: Any,
        text_encoder: Any,
        batch: dict[str, Any],
        micro: int,
        rank: int,
        empty: Tensor,
        accelerator: Any,
    ) -> Tensor:
        """One micro-batch: the student's single pass against the teacher's guided
        prediction, at scales drawn per row."""
        noisy_batch = self.noisy_batch(batch, micro, rank, None, accelerator)
        generator = noisy_batch.generator
        rows = noisy_batch.noisy.shape[0]
        if self.timesteps is not None:  # re-noise the same latents at the chosen timesteps
            picks = torch.randint(0, len(self.timesteps), (rows,), generator=generator)
            timesteps = self.timesteps[picks].to(noisy_batch.noisy.device)
            noisy = self.noise_scheduler.add_noise(
                noisy_batch.latents, noisy_batch.noise, timesteps
            )
            noisy_batch = dataclasses.replace(noisy_batch, timesteps=timesteps, noisy=noisy)
        draws = torch.rand(2, rows, generator=generator)
        (text_low, text_high), (image_low, image_high) = self.text_scales, self.image_scales
        text_scale = (text_low + (text_high - text_low) * draws[0]).to(noisy_batch.noisy.device)
        image_scale = (image_low + (image_high - image_low) * draws[1]).to(noisy_batch.noisy.device)
        teacher = self.teacher
        parameter = next(teacher.parameters())
        if parameter.device != noisy_batch.noisy.device:
            teacher.to(noisy_batch.noisy.device)
        with torch.no_grad():
            target = guidance_target(
                teacher,
                noisy_batch.noisy.to(parameter.dtype),
                noisy_batch.image_latents.to(parameter.dtype),
                noisy_batch.text.to(parameter.dtype),
                empty.to(parameter.dtype),
                noisy_batch.timesteps,
                text_scale,
                image_scale,
            )
        condition = scale_embedding(text_scale, image_scale, unet.config.time_cond_proj_dim)
        prediction = unet(
            torch.cat([noisy_batch.noisy, noisy_batch.image_latents], dim=1),
            noisy_batch.timesteps,
            noisy_batch.text,
            timestep_cond=condition.to(noisy_batch.noisy.dtype),
        ).sample
        return F.mse_loss(prediction.float(), target)
