"""TrainConfig: every setting of an InstructPix2Pix training run."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from numbers import Real
from pathlib import Path
from typing import Any, Literal

from instructedit._checks import check_counts
from instructedit._inputs import check_texts
from instructedit.sampling import check_sampler

__all__ = ["LORA_TARGETS", "PREDICTION_TYPES", "TrainConfig"]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
"""The UNet targets a :class:`TrainConfig` can train (diffusers' ``prediction_type`` names)."""


_NUMBERS = (
    "learning_rate",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "max_grad_norm",
    "ema_decay",
    "conditioning_dropout",
    "text_encoder_learning_rate",
)
"""The float fields (``None`` where the field allows it)."""

_FLAGS = (
    "random_flip",
    "train_text_encoder",
    "gradient_checkpointing",
    "use_8bit_adam",
    "cache_latents",
    "lora_train_conv_in",
)

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
"""The modules a LoRA run adapts by default: every attention's query, key, value and output
projections (diffusers' LoRA training scripts' choice)."""


@dataclass(frozen=True)
class TrainConfig:
    """Settings of :class:`~instructedit.training.Trainer` (the official recipe where one exists).

    The official run: AdamW at 1e-4 constant, 256² random crops with flips, batch 32 × 4
    accumulation × 8 GPUs, EMA 0.9999, conditioning dropout 0.05, ~10k steps. diffusers' example
    uses 5e-5, batch 4 × 4, 15k steps, fp16.
    """

    output_dir: str = "outputs/train"
    """Checkpoints, metrics, validation images and the exported pipeline go here."""
    resolution: int = 256
    """Training crop side (a multiple of 8)."""
    resize_resolution: int | None = None
    """Side images are resized to before cropping (default: ``resolution``)."""
    random_flip: bool = True
    """Flip input and edited image together with probability 0.5."""
    batch_size: int = 4
    """Examples per device per micro-step."""
    gradient_accumulation_steps: int = 1
    """Micro-steps per optimiser step."""
    learning_rate: float = 1e-4
    """Peak learning rate (official 1e-4; diffusers' example 5e-5)."""
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    """Learning-rate shape after warm-up."""
    warmup_steps: int = 0
    """Linear warm-up steps (official: none)."""
    weight_decay: float = 1e-2
    """AdamW weight decay."""
    adam_beta1: float = 0.9
    """AdamW β₁."""
    adam_beta2: float = 0.999
    """AdamW β₂."""
    max_grad_norm: float | None = 1.0
    """Gradient clipping norm (``None``: no clipping)."""
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    """Autocast precision of the UNet's forward (weights stay float32)."""
    ema_decay: float | None = 0.9999
    """EMA decay with warm-up ``min(d, (1 + n)/(10 + n))``; ``None`` disables EMA."""
    conditioning_dropout: float = 0.05
    """p of :func:`~instructedit.training.conditioning_dropout`."""
    prediction_type: Literal["epsilon", "v_prediction", "sample"] | None = None
    """What the UNet learns to predict: the noise (``"epsilon"``, the paper's and Stable Diffusion
    1.x's), the velocity α·ε − σ·x₀ (``"v_prediction"``, Stable Diffusion 2's) or the clean latent
    (``"sample"``); ``None``: the noise scheduler's own ``prediction_type``. The exported pipeline's
    scheduler carries it, so sampling follows (diffusers' text-to-image script's
    ``--prediction_type``), and a checkpoint records it: resuming with another target is refused.
    An ε-model's loss weighs the clean latent by the signal-to-noise ratio, under 0.005 at Stable
    Diffusion's last step; the velocity's by 1 + SNR."""
    sampler: str | None = None
    """The scheduler of the exported pipeline and of the validation edits, on the training noise
    schedule: a name of :data:`~instructedit.sampling.SCHEDULERS` (``"euler"``, ``"ddim"``, ...);
    ``None``: Euler ancestral, the paper's (plain Euler for ``"sample"`` prediction, which
    diffusers' ancestral step cannot take; nor can the others in
    :data:`~instructedit.sampling.NO_SAMPLE_PREDICTION`, refused for such a model). A user can
    still pick another at load time."""
    seed: int = 0
    """Every random draw of step n derives from (seed, n): resuming reproduces the run."""
    max_steps: int = 1000
    """Optimiser steps in total."""
    checkpoint_every: int = 500
    """Save a resumable checkpoint every this many steps (and at the end)."""
    checkpoints_to_keep: int | None = 2
    """Older checkpoints are deleted (``None``: keep all)."""
    validation_prompts: tuple[str, ...] = ()
    """Instructions edited on ``validation_image`` every ``validation_every`` steps."""
    validation_image: str | None = None
    """Input image of the validation edits."""
    validation_every: int = 500
    """Steps between validation edits."""
    validation_steps: int = 20
    """Sampler steps of the validation edits."""
    train_text_encoder: bool = False
    """Train the text encoder with the UNet (one optimiser, two parameter groups; the EMA, the
    checkpoints and the export cover both). The paper, the official code and diffusers' script
    keep it frozen; a text encoder trained on captions alone has never seen the instructions'
    verbs ("make", "remove", "turn"), which this lets the editor learn. Instructions are then
    encoded every step (``cache_latents`` still caches the latents and the tokens). One device or
    DDP; FSDP and DeepSpeed are refused. The text encoder must be in float32."""
    text_encoder_learning_rate: float | None = None
    """Peak learning rate of the text encoder when ``train_text_encoder`` (``None``:
    ``learning_rate``); it follows the same schedule."""
    gradient_checkpointing: bool = False
    """Trade compute for memory in the UNet (and the text encoder when it trains)."""
    use_8bit_adam: bool = False
    """bitsandbytes' 8-bit AdamW (CUDA; ``pip install bitsandbytes``)."""
    log_with: Literal["auto", "none", "tensorboard", "wandb"] = "auto"
    """Tracker besides ``metrics.jsonl``; ``"auto"`` uses TensorBoard when installed."""
    log_every: int = 10
    """Steps between metric records."""
    num_workers: int = 0
    """DataLoader worker processes."""
    cache_latents: bool = False
    """Encode every example once before training (both flips when ``random_flip``) and every
    distinct instruction once, then train from the stored VAE posteriors and text embeddings:
    a step no longer loads, augments or tokenises anything nor runs the VAE or the text encoder,
    and gives the same losses. A bad row is found before the first step. Needs a fixed crop
    (``resize_resolution`` unset or equal to ``resolution``); the cache lives on the training
    device (per example and flip, three latents; per instruction, one text embedding). With
    ``train_text_encoder`` it holds each instruction's tokens instead, and the encoder still runs
    every step."""
    lora_rank: int | None = None
    """Train a LoRA adapter of this rank (through ``peft``, ``pip install instructedit[lora]``)
    instead of the whole UNet: the base weights stay frozen, so the optimiser state and the
    gradients cover a few percent of the parameters. ``None``: full fine-tuning."""
    lora_alpha: float | None = None
    """LoRA's scale numerator (the update is ``alpha / rank · B A``); ``None``: ``lora_rank``."""
    lora_targets: tuple[str, ...] = LORA_TARGETS
    """Module names (or name suffixes) the adapter wraps: by default every attention's query,
    key, value and output projection."""
    lora_train_conv_in: bool = True
    """With LoRA, train the UNet's input convolution in full: it holds the image channels
    :func:`~instructedit.training.to_edit_unet` adds, which an adapter starting from zero could
    not learn. Its weights ship beside the adapter (``conv_in.safetensors``), which
    :meth:`EditPipeline.load_lora_weights <instructedit.EditPipeline.load_lora_weights>` reads;
    diffusers' ``load_lora_weights`` reads the adapter alone, so turn this off when fine-tuning
    an editor whose input convolution is already trained and the adapter must load in diffusers
    by itself."""

    def __post_init__(self) -> None:
        positive = (
            "resolution",
            "batch_size",
            "gradient_accumulation_steps",
            "max_steps",
            "checkpoint_every",
            "validation_every",
            "validation_steps",
            "log_every",
        )
        check_counts(self, positive)
        check_counts(self, ("warmup_steps", "num_workers"), minimum=0)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an int, got {self.seed!r}")
        for name in _NUMBERS:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, Real)):
                raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
        for name in _FLAGS:
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.resolution % 8:
            raise ValueError(f"resolution must be a multiple of 8, got {self.resolution}")
        if self.resize_resolution is not None and (
            isinstance(self.resize_resolution, bool) or not isinstance(self.resize_resolution, int)
        ):
            raise ValueError(
                f"resize_resolution must be an int or None, got {self.resize_resolution!r}"
            )
        if self.resize_resolution is not None and self.resize_resolution < self.resolution:
            raise ValueError(
                f"resize_resolution must be >= resolution ({self.resolution}), got {self.resize_resolution}"
            )
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.text_encoder_learning_rate is not None:
            if not self.train_text_encoder:
                raise ValueError("text_encoder_learning_rate needs train_text_encoder=True")
            if not (
                math.isfinite(self.text_encoder_learning_rate)
                and self.text_encoder_learning_rate > 0
            ):
                raise ValueError(
                    "text_encoder_learning_rate must be > 0 or None, got "
                    f"{self.text_encoder_learning_rate}"
                )
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay}")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:  # NaN fails too
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {self.ema_decay}")
        if not 0.0 <= self.conditioning_dropout <= 1.0 / 3.0:
            raise ValueError(
                f"conditioning_dropout must be in [0, 1/3], got {self.conditioning_dropout}"
            )
        for name, allowed in (
            ("mixed_precision", ("no", "fp16", "bf16")),
            ("lr_schedule", ("constant", "linear", "cosine")),
            ("log_with", ("auto", "none", "tensorboard", "wandb")),
            ("prediction_type", (None, *PREDICTION_TYPES)),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        check_sampler(self.sampler, self.prediction_type, argument="sampler")
        if isinstance(self.validation_prompts, list):  # frozen: keep an immutable copy
            object.__setattr__(self, "validation_prompts", tuple(self.validation_prompts))
        if not isinstance(self.validation_prompts, tuple):
            raise TypeError(
                "validation_prompts must be a list or tuple of instructions, got "
                f"{self.validation_prompts!r}"
            )
        check_texts(self.validation_prompts, "validation_prompts")
        if self.validation_prompts and self.validation_image is None:
            raise ValueError("validation_prompts need a validation_image")
        if self.validation_image is not None and not Path(self.validation_image).is_file():
            raise FileNotFoundError(f"validation_image: no such file: {self.validation_image}")
        if self.cache_latents and self.resize_resolution not in (None, self.resolution):
            raise ValueError(
                "cache_latents needs resize_resolution unset or equal to resolution "
                f"({self.resolution}): random crops cannot be cached, got {self.resize_resolution}"
            )
        self._check_lora()
        if self.checkpoints_to_keep is not None and (
            isinstance(self.checkpoints_to_keep, bool)
            or not isinstance(self.checkpoints_to_keep, int)
            or self.checkpoints_to_keep < 1
        ):
            raise ValueError(
                f"checkpoints_to_keep must be >= 1 or None, got {self.checkpoints_to_keep}"
            )

    def _check_lora(self) -> None:
        if isinstance(self.lora_targets, list):  # frozen: keep an immutable copy
            object.__setattr__(self, "lora_targets", tuple(self.lora_targets))
        if (
            not isinstance(self.lora_targets, tuple)
            or not self.lora_targets
            or not all(isinstance(t, str) and t.strip() for t in self.lora_targets)
        ):
            raise ValueError(
                f"lora_targets must be a non-empty list of module names, got {self.lora_targets!r}"
            )
        if self.lora_rank is None:
            if self.lora_alpha is not None:
                raise ValueError("lora_alpha needs lora_rank")
            return
        if isinstance(self.lora_rank, bool) or not isinstance(self.lora_rank, int):
            raise ValueError(f"lora_rank must be a positive int or None, got {self.lora_rank!r}")
        if self.lora_rank < 1:
            raise ValueError(f"lora_rank must be a positive int or None, got {self.lora_rank}")
        if self.lora_alpha is not None and (
            isinstance(self.lora_alpha, bool)
            or not isinstance(self.lora_alpha, Real)
            or not (math.isfinite(self.lora_alpha) and self.lora_alpha > 0)
        ):
            raise ValueError(f"lora_alpha must be a number > 0 or None, got {self.lora_alpha!r}")
        if self.train_text_encoder:
            raise ValueError(
                "lora_rank adapts the UNet; train_text_encoder trains the text encoder in full, "
                "which defeats the adapter's memory saving: use one or the other"
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Builds a config from a mapping; unknown keys are an error naming them."""
        if not isinstance(values, Mapping):
            raise TypeError(
                f"training settings must be a mapping of field names to values, got "
                f"{type(values).__name__}"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training settings {unknown}; allowed: {sorted(known)}")
        prepared = dict(values)
        for name in ("validation_prompts", "lora_targets"):
            if isinstance(prepared.get(name), list):
                prepared[name] = tuple(prepared[name])
        return cls(**prepared)

    @property
    def path(self) -> Path:
        """``output_dir`` as a path."""
        return Path(self.output_dir)
