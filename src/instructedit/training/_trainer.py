"""Trainer: InstructPix2Pix training on accelerate, with exact resume."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from instructedit._launch import use_cpu
from instructedit.checkpoints import check_settings, publish_dir, write_json_atomic
from instructedit.components import check_text_parts, encode_prompts_of, is_sdxl_unet
from instructedit.lora import add_lora, has_lora
from instructedit.sampling import check_sampler
from instructedit.training._cache import LatentCache, build_latent_cache
from instructedit.training._config import PREDICTION_TYPES, TrainConfig
from instructedit.training._data import (
    EditSource,
    RecordSource,
    StepBatches,
    TrainingExamples,
    _mix,
)
from instructedit.training._dropout import conditioning_dropout
from instructedit.training._outputs import TrainerOutputs, trained_parameters

__all__ = ["Trainer", "TrainingState"]

logger = logging.getLogger(__name__)

_STATE_FILE = "trainer_state.json"
_TEXT_EMA_FILE = "ema_text_encoder.pt"


def _tracker(choice: str) -> str | None:
    if choice == "none":
        return None
    if choice in ("tensorboard", "wandb"):
        return choice
    import importlib.util

    for name in ("tensorboard", "tensorboardX"):
        if importlib.util.find_spec(name) is not None:
            return "tensorboard"
    return None


@dataclass(frozen=True)
class NoisyBatch:
    """One micro-batch's training inputs (see :meth:`Trainer.noisy_batch`)."""

    latents: torch.Tensor
    """The edited images' latents (scaled), float32."""
    noise: torch.Tensor
    timesteps: torch.Tensor
    noisy: torch.Tensor
    """``latents`` noised to ``timesteps``."""
    image_latents: torch.Tensor
    """The input images' latents (unscaled, the image condition), float32."""
    text: torch.Tensor
    """The instructions' embeddings, or their token ids when the text encoder is trained."""
    generator: torch.Generator
    """The micro-batch's generator, for further draws."""
    pooled: torch.Tensor | None = None
    """SDXL: the instructions' pooled embeddings ``[B, P]`` (``None`` for SD 1.x/2.x)."""
    time_ids: torch.Tensor | None = None
    """SDXL: each example's micro-conditioning ``[B, 6]``: its original height and width, the
    crop's top and left, and the trained size twice."""


@dataclass
class TrainingState:
    """What one call of :meth:`Trainer.train` works with once :meth:`Trainer.setup` ran: the
    accelerate-prepared models, optimiser and schedule, and where the run stands."""

    accelerator: Any
    """The ``accelerate.Accelerator`` of the run."""
    tracker: str | None
    """The experiment tracker's name (``"tensorboard"``, ``"wandb"``) or ``None``."""
    unet: Any
    """The trained UNet as the accelerator prepared it (wrapped under DDP)."""
    text_encoder: Any
    """The trained text encoder as prepared, or ``None`` when it is frozen."""
    optimizer: Any
    """The optimiser over the trained parameters."""
    lr_scheduler: Any
    """Its learning-rate schedule."""
    weight_dtype: torch.dtype
    """The dtype of the frozen parts (the mixed precision's; float32 on a CPU)."""
    empty_prompt: Any = None
    """The empty instruction a dropped text condition becomes: its embedding ``[1, T, D]`` when
    the text encoder is frozen, its token ids ``[1, T]`` when it trains."""
    empty_pooled: Any = None
    """SDXL: the empty instruction's pooled embedding ``[1, P]``."""
    start: int = 0
    """The optimiser step this call starts from (the resumed checkpoint's)."""
    stop: int = 0
    """The step this call stops after."""
    interval_losses: list[float] = field(default_factory=list)
    """Losses of the steps since the metrics were last logged."""
    interval_start: float = field(default_factory=time.perf_counter)
    """When that interval began (``time.perf_counter``)."""

    @property
    def trained(self) -> list[Any]:
        """The prepared models whose parameters the optimiser updates."""
        return [self.unet] if self.text_encoder is None else [self.unet, self.text_encoder]


class Trainer(TrainerOutputs):
    """Trains an InstructPix2Pix editor (Brooks et al. 2023, §3.2) with accelerate.

    The UNet (8 input channels, see :func:`~instructedit.training.to_edit_unet`) learns to
    predict the noise of the edited image's latent given the instruction and the input image's
    latent: targets are ``vae.encode(edited).sample() × scaling_factor``, the image condition is
    ``vae.encode(input).mode()`` unscaled, and both conditions are dropped per example for
    classifier-free guidance (:func:`~instructedit.training.conditioning_dropout`). The VAE stays
    frozen; so does the text encoder, as in the paper, unless ``config.train_text_encoder``.

    One GPU, many GPUs or many nodes: run the same script under ``accelerate launch`` (DDP; FSDP
    or DeepSpeed through the accelerate config; ``train_text_encoder`` runs on one device or under
    DDP). Every random draw of micro-step u on rank p is a
    pure function of (seed, u, p) and checkpoints hold model, optimiser, scheduler and EMA state,
    so resuming reproduces the uninterrupted run exactly.

    Args:
        config: the run's settings.
        unet: the editing UNet (trained in place).
        vae: the ``AutoencoderKL`` (frozen).
        text_encoder: the ``CLIPTextModel`` (frozen unless ``config.train_text_encoder``, then
            trained in place).
        tokenizer: its tokenizer.
        noise_scheduler: the training noise schedule (e.g. ``DDPMScheduler``); with
            ``config.prediction_type`` set, a copy predicting that is used.
        train_dataset: an :class:`~instructedit.training.EditSource` (folder, parquet, records)
            or a sequence of :class:`~instructedit.data.EditRecord`.
        text_encoder_2: SDXL's second text encoder (frozen), for an SDXL UNet.
        tokenizer_2: its tokenizer.

    An SDXL editor (recognised from its UNet) trains with both text encoders' features, the
    pooled embedding and, per example, the size ids SDXL is conditioned on: the original
    image's height and width, the crop's top-left corner and the trained size. Conditioning
    dropout replaces the pooled embedding with the empty instruction's too (diffusers' SDXL
    script keeps it), so the exported editor's ∅ branches take the empty instruction
    (``force_zeros_for_empty_prompt`` off). A float16 SDXL VAE whose config asks for it encodes
    in float32.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        unet: Any,
        vae: Any,
        text_encoder: Any,
        tokenizer: Any,
        noise_scheduler: Any,
        train_dataset: EditSource | Sequence[Any],
        text_encoder_2: Any = None,
        tokenizer_2: Any = None,
    ) -> None:
        check_text_parts(unet, text_encoder, tokenizer, text_encoder_2, tokenizer_2)
        self.xl = is_sdxl_unet(unet)
        if self.xl and config.train_text_encoder:
            raise ValueError(
                "config.train_text_encoder trains SD 1.x/2.x text encoders; this UNet is SDXL's"
            )
        if unet.config.in_channels != 2 * vae.config.latent_channels:
            raise ValueError(
                f"unet.config.in_channels must be {2 * vae.config.latent_channels}; convert a text-to-image "
                "UNet with instructedit.training.to_edit_unet"
            )
        if config.train_text_encoder and text_encoder.dtype != torch.float32:
            raise ValueError(
                "config.train_text_encoder needs text_encoder's weights in float32 (mixed_precision "
                f"autocasts the forward), got {text_encoder.dtype}"
            )
        self.config = config
        self.unet = unet
        self.vae = vae
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.text_encoder_2 = text_encoder_2
        self.tokenizer_2 = tokenizer_2
        self._empty_pooled: torch.Tensor | None = None  # SDXL: set up by setup()
        self.noise_scheduler = _with_prediction_type(noise_scheduler, config.prediction_type)
        # A target left to the noise scheduler is known only now: refuse a sampler that cannot
        # take it before training, not at the first validation edit or export.
        check_sampler(
            config.sampler, self.noise_scheduler.config.prediction_type, argument="config.sampler"
        )
        self.source: EditSource = (
            train_dataset
            if isinstance(train_dataset, EditSource)
            else RecordSource(list(train_dataset))
        )
        if len(self.source) == 0:
            raise ValueError("train_dataset is empty")
        self.losses: list[float] = []
        self.ema: Any = None
        self.text_encoder_ema: Any = None

    # ------------------------------------------------------------------ checkpoints

    @property
    def checkpoint_root(self) -> Path:
        """Folder of the checkpoints."""
        return self.config.path / "checkpoints"

    def latest_checkpoint(self) -> Path | None:
        """The most recent complete checkpoint, if any."""
        if not self.checkpoint_root.is_dir():
            return None
        complete = sorted(
            p for p in self.checkpoint_root.glob("step-*") if (p / _STATE_FILE).is_file()
        )
        return complete[-1] if complete else None

    def _save_checkpoint(self, accelerator: Any, step: int) -> None:
        """Writes checkpoint ``step`` as one job: every process saves its share of accelerate's
        state (its random states; shards under FSDP or DeepSpeed) into the staging folder, then
        the main process adds the EMA and ``trainer_state.json`` and publishes the folder."""
        final = self.checkpoint_root / f"step-{step:07d}"
        staging = self.checkpoint_root / f".step-{step:07d}.partial"
        accelerator.wait_for_everyone()
        if accelerator.is_main_process and staging.exists():
            shutil.rmtree(staging)  # a killed job's leftovers
        accelerator.wait_for_everyone()
        accelerator.save_state(str(staging))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if self.ema is not None:
                torch.save(self.ema.state_dict(), staging / "ema.pt")
            if self.text_encoder_ema is not None:
                torch.save(self.text_encoder_ema.state_dict(), staging / _TEXT_EMA_FILE)
            state = {
                "step": step,
                "prediction_type": self.noise_scheduler.config.prediction_type,
                "train_text_encoder": self.config.train_text_encoder,
                "lora_rank": self.config.lora_rank,
                "lora_alpha": self.config.lora_alpha,
                **self._job_settings(accelerator),
            }
            write_json_atomic(staging / _STATE_FILE, state)
            publish_dir(staging, final)
            keep = self.config.checkpoints_to_keep
            if keep is not None:
                for old in sorted(self.checkpoint_root.glob("step-*"))[:-keep]:
                    shutil.rmtree(old, ignore_errors=True)
            logger.info("saved checkpoint %s", final)
        accelerator.wait_for_everyone()

    def _job_settings(self, accelerator: Any) -> dict[str, Any]:
        """The settings that decide which examples and random draws each step uses: a checkpoint
        resumes exactly only under the same ones."""
        config = self.config
        return {
            "num_processes": accelerator.num_processes,
            "batch_size": config.batch_size,
            "gradient_accumulation_steps": config.gradient_accumulation_steps,
            "seed": config.seed,
        }

    # ------------------------------------------------------------------ training

    def _token_ids(self, prompts: list[str], device: torch.device) -> torch.Tensor:
        return self.tokenizer(
            prompts,
            padding="max_length",
            truncation=True,
            max_length=self.tokenizer.model_max_length,
            return_tensors="pt",
        ).input_ids.to(device)

    def _encode_prompts(self, prompts: list[str], device: torch.device) -> torch.Tensor:
        with torch.no_grad():
            return self.text_encoder(self._token_ids(prompts, device))[0]

    def _encode_xl(
        self, prompts: list[str], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SDXL's text conditioning: both encoders' penultimate features and the pooled
        embedding."""
        return encode_prompts_of(self, prompts, device=device, dtype=self.text_encoder_2.dtype)

    def _build_cache(self, device: torch.device, *, progress: bool = True) -> LatentCache:
        encode: Any = self._token_ids if self.config.train_text_encoder else self._encode_prompts
        if self.xl:
            encode = self._encode_xl
        return build_latent_cache(
            self.source, self.vae, self.config, encode, device, progress=progress
        )

    def noisy_batch(
        self,
        batch: dict[str, Any],
        micro: int,
        rank: int,
        text_encoder: Any,
        accelerator: Any,
    ) -> NoisyBatch:
        """Micro-batch ``micro``'s training inputs: the edited images' latents noised at random
        timesteps, the input images' latents and the instructions (embeddings, or token ids when
        ``text_encoder`` is trained), from the latent cache or encoded here; its random draws
        depend on the seed, ``micro`` and ``rank`` only."""
        device = accelerator.device
        generator = torch.Generator().manual_seed(_mix(self.config.seed, micro, rank, 3))
        pooled: torch.Tensor | None = None
        with torch.no_grad():
            if "edited_mean" in batch:  # from the latent cache
                mean, std = batch["edited_mean"], batch["edited_std"]
                image_latents, text = batch["image_latents"], batch["text"]
                pooled = batch.get("pooled")
            else:
                weight_dtype = self.vae.dtype
                edited = batch["edited_pixels"].to(device, weight_dtype)
                source = batch["input_pixels"].to(device, weight_dtype)
                posterior = self.vae.encode(edited).latent_dist
                mean, std = posterior.mean, posterior.std
                image_latents = self.vae.encode(source).latent_dist.mode()
                prompts = list(batch["edit_prompt"])
                if self.xl:
                    text, pooled = self._encode_xl(prompts, device)
                elif text_encoder is not None:
                    text = self._token_ids(prompts, device)
                else:
                    text = self._encode_prompts(prompts, device)
            noise_for_sample = torch.randn(mean.shape, generator=generator).to(device, mean.dtype)
            latents = (mean + std * noise_for_sample) * self.vae.config.scaling_factor
        latents, image_latents = latents.float(), image_latents.float()
        noise = torch.randn(latents.shape, generator=generator).to(device)
        steps = self.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, steps, (latents.shape[0],), generator=generator).to(device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        time_ids = None
        if self.xl:
            size = self.config.resolution
            rows = latents.shape[0]
            time_ids = torch.cat(
                [
                    batch["original_size"].to(device),
                    batch["crop"].to(device),
                    torch.full((rows, 2), size, device=device),
                ],
                dim=1,
            ).float()
        return NoisyBatch(
            latents, noise, timesteps, noisy, image_latents, text, generator, pooled, time_ids
        )

    def _loss(
        self,
        unet: Any,
        text_encoder: Any,
        batch: dict[str, Any],
        micro: int,
        rank: int,
        empty: torch.Tensor,
        accelerator: Any,
    ) -> torch.Tensor:
        """One micro-batch's loss. ``text_encoder`` is the trained one or ``None`` (frozen);
        ``empty`` is the empty prompt's embedding when frozen, its token ids when trained."""
        inputs = self.noisy_batch(batch, micro, rank, text_encoder, accelerator)
        text = inputs.text
        if text_encoder is not None:  # token ids: encode them with gradients, in one call (DDP
            # with reentrant checkpointing refuses a weight reached by two backward passes)
            encoded = text_encoder(torch.cat([text, empty]))[0]
            text, empty = encoded[:-1], encoded[-1:]
        dropped = conditioning_dropout(
            text.float(),
            inputs.image_latents,
            empty.float(),
            self.config.conditioning_dropout,
            generator=inputs.generator,
        )
        extra: dict[str, Any] = {}
        if inputs.pooled is not None:  # SDXL: a dropped instruction's pooled embedding too
            assert self._empty_pooled is not None  # setup() ran
            pooled = torch.where(
                dropped.text_dropped.view(-1, 1),
                self._empty_pooled.to(inputs.pooled),
                inputs.pooled,
            )
            extra["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": inputs.time_ids}
        prediction = unet(
            torch.cat([inputs.noisy, dropped.image], dim=1),
            inputs.timesteps,
            dropped.text,
            **extra,
        ).sample
        prediction_type = self.noise_scheduler.config.prediction_type
        if prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(
                inputs.latents, inputs.noise, inputs.timesteps
            )
        elif prediction_type == "sample":
            target = inputs.latents
        else:
            target = inputs.noise
        return F.mse_loss(prediction.float(), target.float())

    def train(
        self, *, until: int | None = None, resume: bool = True, progress: bool = True
    ) -> list[float]:
        """Trains to ``config.max_steps`` (or stops after step ``until``); returns the losses of the
        optimiser steps run by this call.

        Resumes from the latest checkpoint in ``output_dir`` unless ``resume=False``. Saves a
        checkpoint every ``checkpoint_every`` steps and at the end, validation edits every
        ``validation_every`` steps, and metrics to ``metrics.jsonl`` (and TensorBoard or wandb).
        Progress bars (caching, training) show on the local main process unless
        ``progress=False``.

        The run reads as named steps a subclass can override: :meth:`setup` (accelerator, frozen
        parts, optimiser, EMA), :meth:`resume`, :meth:`training_batches`, :meth:`training_step`
        (one optimiser step) and :meth:`end_of_step` (metrics, validation, checkpoint).
        """
        config = self.config
        # 1. Set up the accelerator, the models, the optimiser and the EMA.
        state = self.setup()
        # 2. Resume where the latest checkpoint stopped.
        state.start = self.resume(state) if resume else 0
        state.stop = min(config.max_steps, until if until is not None else config.max_steps)
        self._truncate_metrics(state.start, state.accelerator)
        if state.tracker is not None and state.accelerator.is_main_process:
            state.accelerator.init_trackers(
                "instructedit", config={k: str(v) for k, v in vars(config).items()}
            )
        # 3. The batches of the remaining steps, drawn as the uninterrupted run draws them.
        batches = self.training_batches(state, progress=progress)
        # 4. Train.
        losses: list[float] = []
        bar = tqdm(
            total=state.stop,
            initial=state.start,
            disable=not (progress and state.accelerator.is_local_main_process),
            desc="training",
        )
        state.interval_start = time.perf_counter()  # the cache's encoding is not training time
        for step in range(state.start, state.stop):
            loss = self.training_step(state, step, batches)
            losses.append(loss)
            bar.update()
            bar.set_postfix(loss=f"{loss:.4f}")
            self.end_of_step(state, step + 1, loss)
        bar.close()
        # 5. Hand the trained models back.
        if state.tracker is not None:
            state.accelerator.end_training()
        self.unet = state.accelerator.unwrap_model(state.unet)
        if state.text_encoder is not None:
            self.text_encoder = state.accelerator.unwrap_model(state.text_encoder).eval()
        self.losses.extend(losses)
        return losses

    def setup(self) -> TrainingState:
        """Creates the accelerator, freezes and places the untrained parts, builds the optimiser,
        its schedule and the EMA, and prepares the trained models for the accelerator."""
        from accelerate import Accelerator

        config = self.config
        tracker = _tracker(config.log_with)
        accelerator = Accelerator(
            mixed_precision=config.mixed_precision,
            log_with=tracker,
            project_dir=str(config.path),
            cpu=use_cpu(),
        )
        self._check_distribution(accelerator)
        config.path.mkdir(parents=True, exist_ok=True)
        weight_dtype = self._place_models(accelerator)
        if config.lora_rank is not None and not has_lora(self.unet):
            wrapped = add_lora(
                self.unet,
                rank=config.lora_rank,
                alpha=config.lora_alpha,
                targets=config.lora_targets,
                seed=config.seed,
                train_conv_in=config.lora_train_conv_in,
            )
            trained = sum(p.numel() for p in self.unet.parameters() if p.requires_grad)
            total = sum(p.numel() for p in self.unet.parameters())
            logger.info(
                "LoRA rank %d on %d modules: %d of %d UNet parameters train (%.1f %%)",
                config.lora_rank,
                len(wrapped),
                trained,
                total,
                100 * trained / total,
            )
        optimizer, lr_scheduler = self.create_optimizer()
        text_encoder: Any = None
        if config.train_text_encoder:
            unet, text_encoder, optimizer, lr_scheduler = accelerator.prepare(
                self.unet, self.text_encoder, optimizer, lr_scheduler
            )
        else:
            unet, optimizer, lr_scheduler = accelerator.prepare(self.unet, optimizer, lr_scheduler)
        state = TrainingState(
            accelerator=accelerator,
            tracker=tracker,
            unet=unet,
            text_encoder=text_encoder,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            weight_dtype=weight_dtype,
        )
        if config.ema_decay is not None:
            self._create_ema(state)
        if self.xl:
            empty, pooled = self._encode_xl([""], accelerator.device)
            state.empty_prompt, state.empty_pooled = empty.to(weight_dtype), pooled
            self._empty_pooled = pooled
        else:
            state.empty_prompt = (
                self._token_ids([""], accelerator.device)
                if config.train_text_encoder
                else self._encode_prompts([""], accelerator.device).to(weight_dtype)
            )
        return state

    def _check_distribution(self, accelerator: Any) -> None:
        from accelerate.utils import DistributedType

        sharded = (DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM)
        if self.config.train_text_encoder and accelerator.distributed_type in sharded:
            raise ValueError(
                "config.train_text_encoder supports one device or DDP, not "
                f"{accelerator.distributed_type.value}: its "
                "gradients are clipped over both models at once, which a sharded run cannot do"
            )

    def _place_models(self, accelerator: Any) -> torch.dtype:
        """Sets which parts train, enables gradient checkpointing, and moves the frozen parts to
        the device in the weight dtype of the mixed precision; returns that dtype."""
        config = self.config
        train_text = config.train_text_encoder
        if config.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
            if train_text:
                # transformers 5 renamed it; the old name warns there. Not reentrant either way.
                enable = getattr(
                    self.text_encoder,
                    "activation_checkpointing_enable",
                    self.text_encoder.gradient_checkpointing_enable,
                )
                enable({"use_reentrant": False})
        self.vae.requires_grad_(False).eval()
        if self.text_encoder is not None:
            self.text_encoder.requires_grad_(train_text).train(train_text)
        weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
            config.mixed_precision, torch.float32
        )
        if accelerator.device.type == "cpu":
            weight_dtype = torch.float32
        frozen_models = [self.vae] if train_text else [self.vae, self.text_encoder]
        if self.text_encoder_2 is not None:  # SDXL's
            self.text_encoder_2.requires_grad_(False).eval()
            frozen_models.append(self.text_encoder_2)
        # SDXL's VAE overflows in float16: it stays in float32 where its config says so.
        upcast = self.xl and getattr(self.vae.config, "force_upcast", False)
        for frozen in frozen_models:
            if frozen is None:  # an SDXL model without the first text encoder
                continue
            frozen.to(accelerator.device)
            dtype = torch.float32 if (upcast and frozen is self.vae) else weight_dtype
            if frozen.dtype != dtype:
                frozen.to(dtype=dtype)
        self.unet.train()
        return weight_dtype

    def create_optimizer(self) -> tuple[Any, Any]:
        """Returns the optimiser over the trained parameters (AdamW, or bitsandbytes' 8-bit AdamW
        with ``config.use_8bit_adam``) and its learning-rate schedule."""
        from diffusers.optimization import get_scheduler

        config = self.config
        optimizer_class: Any = torch.optim.AdamW
        if config.use_8bit_adam:
            try:
                import bitsandbytes as bnb
            except ImportError as error:
                raise ImportError(
                    "use_8bit_adam needs bitsandbytes: pip install bitsandbytes"
                ) from error
            optimizer_class = bnb.optim.AdamW8bit
        groups: list[dict[str, Any]] = [{"params": trained_parameters(self.unet)}]
        if config.train_text_encoder:
            groups.append(
                {
                    "params": list(self.text_encoder.parameters()),
                    "lr": config.text_encoder_learning_rate or config.learning_rate,
                }
            )
        optimizer = optimizer_class(
            groups,
            lr=config.learning_rate,
            betas=(config.adam_beta1, config.adam_beta2),
            weight_decay=config.weight_decay,
        )
        schedule = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}[
            config.lr_schedule
        ]
        lr_scheduler = get_scheduler(
            schedule,
            optimizer,
            num_warmup_steps=config.warmup_steps,
            num_training_steps=config.max_steps,
        )
        return optimizer, lr_scheduler

    def _create_ema(self, state: TrainingState) -> None:
        from diffusers import UNet2DConditionModel
        from diffusers.training_utils import EMAModel

        accelerator = state.accelerator
        # One fused update instead of a few kernels per parameter: on a GPU the per-parameter
        # loop costs more than a small UNet's step.
        foreach = accelerator.device.type == "cuda"
        base = accelerator.unwrap_model(state.unet)
        self.ema = EMAModel(
            trained_parameters(base),
            decay=self.config.ema_decay,
            model_cls=UNet2DConditionModel,
            model_config=base.config,
            foreach=foreach,
        )
        self.ema.to(accelerator.device)
        if state.text_encoder is not None:
            self.text_encoder_ema = EMAModel(
                accelerator.unwrap_model(state.text_encoder).parameters(),
                decay=self.config.ema_decay,
                foreach=foreach,
            )
            self.text_encoder_ema.to(accelerator.device)

    def resume(self, state: TrainingState) -> int:
        """Loads the latest checkpoint (models, optimiser, schedule, EMA) into ``state`` and
        returns its step; 0 when there is none. Refuses a checkpoint trained for another target or
        text-encoder setting."""
        from accelerate.utils import broadcast_object_list

        # The main process chooses and every process follows, so all resume from one step even
        # if a checkpoint is published while they look.
        found = self.latest_checkpoint() if state.accelerator.is_main_process else None
        chosen = broadcast_object_list([None if found is None else str(found)])[0]
        if chosen is None:
            return 0
        checkpoint = Path(chosen)
        record = json.loads((checkpoint / _STATE_FILE).read_text(encoding="utf-8"))
        check_settings(
            {key: record[key] for key in self._job_settings(state.accelerator) if key in record},
            self._job_settings(state.accelerator),
            checkpoint=checkpoint,
            remedy=(
                "resume it with the same settings and process count (torchrun --nproc_per_node, "
                "accelerate launch --num_processes), or train into a new output_dir"
            ),
        )
        target = record.get("prediction_type")  # older checkpoints do not say
        if target not in (None, self.noise_scheduler.config.prediction_type):
            raise ValueError(
                f"{checkpoint} trained the UNet to predict {target!r}, this run asks for "
                f"{self.noise_scheduler.config.prediction_type!r} (config.prediction_type): "
                "use that target, or a new output_dir"
            )
        train_text = self.config.train_text_encoder
        if record.get("train_text_encoder", False) != train_text:
            raise ValueError(
                f"{checkpoint} was trained with train_text_encoder="
                f"{record.get('train_text_encoder', False)}, this run asks for {train_text} "
                "(config.train_text_encoder): use that setting, or a new output_dir"
            )
        for name in ("lora_rank", "lora_alpha"):  # an adapter's shape and scale
            if record.get(name) != getattr(self.config, name):
                raise ValueError(
                    f"{checkpoint} was trained with {name}={record.get(name)}, this run asks for "
                    f"{getattr(self.config, name)} (config.{name}): use that setting, or a new "
                    "output_dir"
                )
        device = state.accelerator.device
        state.accelerator.load_state(str(checkpoint))
        if self.ema is not None and (checkpoint / "ema.pt").is_file():
            self.ema.load_state_dict(torch.load(checkpoint / "ema.pt", weights_only=True))
            self.ema.to(device)
        if self.text_encoder_ema is not None and (checkpoint / _TEXT_EMA_FILE).is_file():
            self.text_encoder_ema.load_state_dict(
                torch.load(checkpoint / _TEXT_EMA_FILE, weights_only=True)
            )
            self.text_encoder_ema.to(device)
        logger.info("resumed from %s at step %d", checkpoint, record["step"])
        return int(record["step"])

    def training_batches(
        self, state: TrainingState, *, progress: bool = True
    ) -> Iterator[dict[str, Any]]:
        """The micro-batches of steps ``state.start`` to ``state.stop``, this process's share:
        from the latent cache (built first) with ``config.cache_latents``, else loaded and
        augmented by a ``DataLoader``."""
        config = self.config
        accelerator = state.accelerator
        accumulation = config.gradient_accumulation_steps
        sampler = StepBatches(
            len(self.source),
            config.batch_size,
            seed=config.seed,
            start=state.start * accumulation,
            stop=state.stop * accumulation,
            rank=accelerator.process_index,
            ranks=accelerator.num_processes,
        )
        if config.cache_latents:
            cache = self._build_cache(
                accelerator.device, progress=progress and accelerator.is_local_main_process
            )
            return (cache.batch(keys, config, accelerator.device) for keys in sampler)
        examples = TrainingExamples(
            self.source,
            resolution=config.resolution,
            resize=config.resize_resolution or config.resolution,
            flip=config.random_flip,
        )
        return iter(
            torch.utils.data.DataLoader(
                examples,
                batch_sampler=sampler,
                num_workers=config.num_workers,
                collate_fn=_collate,
            )
        )

    def training_step(
        self, state: TrainingState, step: int, batches: Iterator[dict[str, Any]]
    ) -> float:
        """Runs optimiser step ``step`` (0-based) over ``config.gradient_accumulation_steps``
        micro-batches, then the EMA update; returns the step's mean loss."""
        accelerator = state.accelerator
        accumulation = self.config.gradient_accumulation_steps
        step_loss = 0.0
        for part in range(accumulation):
            micro = step * accumulation + part
            batch = next(batches)
            with contextlib.ExitStack() as context:
                # Gradients are all-reduced once per optimiser step, not per micro-step.
                if part < accumulation - 1:
                    for model in state.trained:
                        context.enter_context(accelerator.no_sync(model))
                context.enter_context(accelerator.autocast())
                loss = self._loss(
                    state.unet,
                    state.text_encoder,
                    batch,
                    micro,
                    accelerator.process_index,
                    state.empty_prompt,
                    accelerator,
                )
                accelerator.backward(loss / accumulation)
            step_loss += loss.detach().item() / accumulation
        if self.config.max_grad_norm is not None:
            accelerator.clip_grad_norm_(
                [p for model in state.trained for p in model.parameters()],
                self.config.max_grad_norm,
            )
        state.optimizer.step()
        state.lr_scheduler.step()
        state.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.step(trained_parameters(accelerator.unwrap_model(state.unet)))
        if self.text_encoder_ema is not None:
            self.text_encoder_ema.step(accelerator.unwrap_model(state.text_encoder).parameters())
        return step_loss

    def end_of_step(self, state: TrainingState, done: int, loss: float) -> None:
        """After optimiser step ``done`` (1-based) with loss ``loss``: logs the metrics of the
        last ``config.log_every`` steps, runs the validation edits and saves a checkpoint when
        they are due."""
        config = self.config
        accelerator = state.accelerator
        state.interval_losses.append(loss)
        if done % config.log_every == 0 or done == state.stop:
            elapsed = time.perf_counter() - state.interval_start
            images = (
                len(state.interval_losses)
                * config.batch_size
                * config.gradient_accumulation_steps
                * accelerator.num_processes
            )
            record = {
                "step": done,
                "loss": sum(state.interval_losses) / len(state.interval_losses),
                "lr": state.lr_scheduler.get_last_lr()[0],
                "images_per_s": images / max(elapsed, 1e-9),
            }
            self._log(record, accelerator, state.tracker)
            state.interval_losses, state.interval_start = [], time.perf_counter()
        if config.validation_prompts and done % config.validation_every == 0:
            self.validate(
                done,
                accelerator.unwrap_model(state.unet),
                accelerator,
                text_encoder=(
                    accelerator.unwrap_model(state.text_encoder)
                    if state.text_encoder is not None
                    else None
                ),
            )
        if done % config.checkpoint_every == 0 or done == state.stop:
            self._save_checkpoint(accelerator, done)


def _with_prediction_type(noise_scheduler: Any, prediction_type: str | None) -> Any:
    """``noise_scheduler``, rebuilt to predict ``prediction_type`` unless that is ``None``;
    refuses a target the training loss does not know."""
    if prediction_type is not None and noise_scheduler.config.prediction_type != prediction_type:
        noise_scheduler = type(noise_scheduler).from_config(
            noise_scheduler.config, prediction_type=prediction_type
        )
    if noise_scheduler.config.prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"noise_scheduler.config.prediction_type must be one of {PREDICTION_TYPES}, got "
            f"{noise_scheduler.config.prediction_type!r}"
        )
    return noise_scheduler


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "input_pixels": torch.stack([item["input_pixels"] for item in items]),
        "edited_pixels": torch.stack([item["edited_pixels"] for item in items]),
        "edit_prompt": [item["edit_prompt"] for item in items],
        "original_size": torch.stack([item["original_size"] for item in items]),
        "crop": torch.stack([item["crop"] for item in items]),
    }
