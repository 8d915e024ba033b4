"""The recipe's first two stages, ``text_to_image`` and ``clip``: the models every later stage
uses, trained from scratch on rendered scenes, and the run's CLIP scorer."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from instructedit.data import write_json_atomic
from instructedit.worlds.recipe._config import RecipeConfig, _device

__all__ = ["autoencoder_sub_stage", "clip_scorer", "text_to_image_pipeline"]


def autoencoder_sub_stage(
    folder: Path, train: Callable[[], tuple[Any, list[float]]]
) -> tuple[Any, list[float]]:
    """The autoencoder saved in ``folder`` and its losses if that sub-stage finished (its
    ``losses.json`` marks it), else ``train()``'s, saved there first: the text-to-image stage's
    resumable steps."""
    from diffusers import AutoencoderKL

    if (folder / "losses.json").is_file():
        losses = json.loads((folder / "losses.json").read_text(encoding="utf-8"))
        return AutoencoderKL.from_pretrained(folder), losses
    vae, losses = train()
    vae.save_pretrained(folder, safe_serialization=True)
    write_json_atomic(folder / "losses.json", losses)  # marks the sub-stage done
    return vae, losses


def text_to_image_pipeline(unet: Any, text_encoder: Any, tokenizer: Any, vae: Any) -> Any:
    """The text-to-image stage's model as a diffusers ``StableDiffusionPipeline`` (Euler
    ancestral on the training schedule, no safety checker), as it is saved to
    ``text_to_image/model``."""
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline

    from instructedit.components import SD_SCHEDULER_CONFIG

    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=EulerAncestralDiscreteScheduler(**SD_SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _stage_text_to_image(config: RecipeConfig, folder: Path, progress: bool) -> dict[str, Any]:
    from diffusers import DDPMScheduler

    from instructedit.clip_tokenizer import clip_tokenizer
    from instructedit.components import SD_SCHEDULER_CONFIG, vae_scale_factor
    from instructedit.worlds._models import (
        finetune_decoder,
        shapes_autoencoder,
        shapes_text_encoder,
        shapes_unet,
        train_autoencoder,
        train_text_to_image,
    )

    device = _device(config)

    def autoencoder() -> tuple[Any, list[float]]:
        vae = shapes_autoencoder(config.seed, config.latent_downsampling)
        losses = train_autoencoder(
            vae,
            steps=config.autoencoder_steps,
            size=config.size,
            seed=config.seed,
            progress=progress,
            checkpoint=folder / "checkpoints" / "autoencoder.pt",
            device=device,
        )
        return vae, losses

    vae, ae_losses = autoencoder_sub_stage(folder / "autoencoder", autoencoder)

    def decoder() -> tuple[Any, list[float]]:
        losses = finetune_decoder(
            vae,
            steps=config.decoder_steps,
            shape_weight=config.decoder_shape_weight,
            size=config.size,
            seed=config.seed,
            progress=progress,
            checkpoint=folder / "checkpoints" / "decoder.pt",
            device=device,
        )
        return vae, losses

    vae, decoder_losses = autoencoder_sub_stage(folder / "decoder", decoder)
    factor = vae_scale_factor(vae)
    if factor != config.latent_downsampling:  # a run resumed with another latent_downsampling
        raise ValueError(
            f"latent_downsampling is {config.latent_downsampling} but the run's autoencoder in "
            f"{folder} downsamples {factor}x: use a new output_dir or latent_downsampling={factor}"
        )
    unet, text_encoder, tokenizer = (
        shapes_unet(config.seed, sample_size=config.size // config.latent_downsampling),
        shapes_text_encoder(config.seed),
        clip_tokenizer(),
    )
    scheduler = DDPMScheduler(**SD_SCHEDULER_CONFIG, clip_sample=False)
    losses = train_text_to_image(
        unet,
        text_encoder,
        tokenizer,
        vae,
        scheduler,
        steps=config.text_to_image_steps,
        schedule=config.text_to_image_schedule,
        ema_decay=config.text_to_image_ema,
        ema_warmup=config.text_to_image_ema_warmup,
        data_workers=config.loader_workers,
        size=config.size,
        seed=config.seed,
        progress=progress,
        checkpoint=folder / "checkpoints" / "text_to_image.pt",
        device=device,
    )
    pipe = text_to_image_pipeline(unet, text_encoder, tokenizer, vae)
    pipe.save_pretrained(folder / "model", safe_serialization=True)
    return {
        "autoencoder_loss": _tail(ae_losses),
        "decoder_loss": _tail(decoder_losses),
        "text_to_image_loss": _tail(losses),
    }


def _stage_clip(config: RecipeConfig, folder: Path, progress: bool) -> dict[str, Any]:
    import open_clip

    from instructedit.clip import save_open_clip
    from instructedit.worlds._models import SHAPES_CLIP_CONFIG, shapes_clip, train_clip

    model = shapes_clip(config.seed)
    losses = train_clip(
        model,
        open_clip.get_tokenizer("ViT-B-32"),
        steps=config.clip_steps,
        size=config.size,
        seed=config.seed,
        progress=progress,
        checkpoint=folder / "checkpoints" / "clip.pt",
        device=_device(config),
    )
    save_open_clip(model, SHAPES_CLIP_CONFIG, folder / "model")
    return {"clip_loss": _tail(losses)}


def clip_scorer(config: RecipeConfig) -> Any:
    """The :class:`~instructedit.clip.ClipScorer` of the run's ``clip`` stage, on its device."""
    from instructedit.clip import ClipScorer

    model = Path(config.output_dir) / "clip" / "model"
    return ClipScorer.from_open_clip(f"local-dir:{model}", device=_device(config))


def _tail(losses: list[float]) -> float:
    """The loss a stage records: the mean of the last tenth of ``losses`` (NaN for none)."""
    window = losses[-max(1, len(losses) // 10) :]
    return sum(window) / len(window) if window else float("nan")
