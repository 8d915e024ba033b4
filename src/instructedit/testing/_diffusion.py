"""Tiny Stable Diffusion parts (text encoder, VAE, UNet, scheduler) for tests and examples."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from instructedit.clip_tokenizer import clip_tokenizer
from instructedit.components import SD_SCHEDULER_CONFIG, clip_text_encoder
from instructedit.seeding import seeded

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.schedulers.scheduling_utils import SchedulerMixin
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

__all__ = [
    "SchedulerName",
    "TinyComponents",
    "TinySDXLComponents",
    "save_tiny_pipeline",
    "tiny_components",
    "tiny_scheduler",
    "tiny_sdxl_components",
    "tiny_sdxl_unet",
    "tiny_text_encoder",
    "tiny_unet",
    "tiny_vae",
]

SchedulerName = Literal["ddim", "ddpm", "pndm", "euler", "euler_ancestral", "dpm_solver++"]


_SCHEDULER_CLASSES: dict[str, tuple[str, dict[str, Any]]] = {
    # clip_sample=False matters: DDIM/DDPM default to clipping x0 to [-1, 1], which ruins latents.
    "ddim": ("DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": False}),
    "ddpm": ("DDPMScheduler", {"clip_sample": False}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True, "set_alpha_to_one": False}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "dpm_solver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
}

TINY_CROSS_ATTENTION_DIM = 32
TINY_TIME_EMBED_DIM = 8


class TinyComponents(TypedDict):
    """The parts of a Stable Diffusion (or InstructPix2Pix) pipeline, by diffusers' names."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler: SchedulerMixin


def tiny_unet(*, in_channels: int = 8, seed: int = 0) -> UNet2DConditionModel:
    """Returns a ~0.8M-parameter UNet with cross-attention, in eval mode.

    Args:
        in_channels: 4 for text-to-image, 8 for editing (noisy latent + image latent).
        seed: weights are a pure function of the seed.
    """
    if in_channels not in (4, 8):
        raise ValueError(f"in_channels must be 4 (text-to-image) or 8 (editing), got {in_channels}")
    from diffusers import UNet2DConditionModel

    with seeded(seed):
        unet = UNet2DConditionModel(
            sample_size=16,
            in_channels=in_channels,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=TINY_CROSS_ATTENTION_DIM,
            attention_head_dim=8,
            norm_num_groups=16,
        )
    return unet.eval()


class TinySDXLComponents(TypedDict):
    """The parts of a Stable Diffusion XL (or SDXL InstructPix2Pix) pipeline, by diffusers'
    names."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    text_encoder_2: CLIPTextModelWithProjection
    tokenizer: CLIPTokenizer
    tokenizer_2: CLIPTokenizer
    scheduler: SchedulerMixin


def tiny_sdxl_unet(*, in_channels: int = 8, seed: int = 0) -> UNet2DConditionModel:
    """Returns a small UNet of SDXL's layout, in eval mode: micro-conditioning by the pooled
    text embedding and six size/crop ids (``addition_embed_type="text_time"``), linear
    attention projections, two transformer layers in the deeper block, and cross-attention over
    both tiny text encoders' features side by side (64 wide).

    Args:
        in_channels: 4 for text-to-image, 8 for editing (noisy latent + image latent).
        seed: weights are a pure function of the seed.
    """
    if in_channels not in (4, 8):
        raise ValueError(f"in_channels must be 4 (text-to-image) or 8 (editing), got {in_channels}")
    from diffusers import UNet2DConditionModel

    with seeded(seed):
        unet = UNet2DConditionModel(
            sample_size=16,
            in_channels=in_channels,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=TINY_TIME_EMBED_DIM,
            projection_class_embeddings_input_dim=6 * TINY_TIME_EMBED_DIM
            + TINY_CROSS_ATTENTION_DIM,
            cross_attention_dim=2 * TINY_CROSS_ATTENTION_DIM,
            norm_num_groups=16,
        )
    return unet.eval()


def tiny_vae(*, seed: int = 0) -> AutoencoderKL:
    """Returns a small ``AutoencoderKL`` (2× downsampling, 4 latent channels), in eval mode."""
    from diffusers import AutoencoderKL

    with seeded(seed):
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            block_out_channels=(16, 32),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=16,
            sample_size=32,
        )
    return vae.eval()


def tiny_text_encoder(*, seed: int = 0) -> CLIPTextModel:
    """Returns a 2-layer, 32-wide ``CLIPTextModel`` over the real CLIP vocabulary, in eval mode."""
    return clip_text_encoder(width=TINY_CROSS_ATTENTION_DIM, seed=seed)


def tiny_scheduler(name: SchedulerName = "euler_ancestral") -> SchedulerMixin:
    """Returns a diffusers scheduler with Stable Diffusion v1's noise schedule.

    Args:
        name: the sampler. ``"euler_ancestral"`` is the one InstructPix2Pix uses.
    """
    if name not in _SCHEDULER_CLASSES:
        raise ValueError(f"name must be one of {sorted(_SCHEDULER_CLASSES)}, got {name!r}")
    import diffusers

    class_name, extra = _SCHEDULER_CLASSES[name]
    scheduler_class = getattr(diffusers, class_name)
    scheduler: SchedulerMixin = scheduler_class(**SD_SCHEDULER_CONFIG, **extra)
    return scheduler


def tiny_components(
    *,
    in_channels: int = 8,
    seed: int = 0,
    scheduler: SchedulerName = "euler_ancestral",
) -> TinyComponents:
    """Returns tiny, seeded parts of an editing (8 channels) or text-to-image (4) pipeline.

    Every part is built offline; the tokenizer is the real CLIP tokenizer. The result can be
    passed as keyword arguments to diffusers' pipelines (with ``safety_checker=None,
    feature_extractor=None``) and to instructedit's.

    Args:
        in_channels: 8 for an InstructPix2Pix UNet, 4 for a text-to-image one.
        seed: the same seed gives bit-identical weights. Each part draws from its own offset of it.
        scheduler: the sampler, see :func:`tiny_scheduler`.

    Example:
        >>> from diffusers import StableDiffusionInstructPix2PixPipeline
        >>> parts = tiny_components()
        >>> pipe = StableDiffusionInstructPix2PixPipeline(
        ...     **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        ... )
    """
    return TinyComponents(
        unet=tiny_unet(in_channels=in_channels, seed=seed),
        vae=tiny_vae(seed=seed + 1),
        text_encoder=tiny_text_encoder(seed=seed + 2),
        tokenizer=clip_tokenizer(),
        scheduler=tiny_scheduler(scheduler),
    )


def tiny_sdxl_components(
    *,
    in_channels: int = 8,
    seed: int = 0,
    scheduler: SchedulerName = "euler_ancestral",
) -> TinySDXLComponents:
    """Returns tiny, seeded parts of an SDXL editing (8 channels) or text-to-image (4) pipeline:
    :func:`tiny_sdxl_unet`, the tiny VAE, a ``CLIPTextModel`` and a
    ``CLIPTextModelWithProjection`` (32 wide each) with the real CLIP tokenizer twice. They pass
    as keyword arguments to diffusers' ``StableDiffusionXLInstructPix2PixPipeline`` /
    ``StableDiffusionXLPipeline`` and to instructedit's pipelines.
    """
    return TinySDXLComponents(
        unet=tiny_sdxl_unet(in_channels=in_channels, seed=seed),
        vae=tiny_vae(seed=seed + 1),
        text_encoder=clip_text_encoder(width=TINY_CROSS_ATTENTION_DIM, seed=seed + 2),
        text_encoder_2=clip_text_encoder(
            width=TINY_CROSS_ATTENTION_DIM, seed=seed + 3, projection=True
        ),
        tokenizer=clip_tokenizer(),
        tokenizer_2=clip_tokenizer(),
        scheduler=tiny_scheduler(scheduler),
    )


def save_tiny_pipeline(
    directory: str | Path,
    *,
    kind: Literal["edit", "text_to_image", "edit_xl", "text_to_image_xl"] = "edit",
    seed: int = 0,
    scheduler: SchedulerName = "euler_ancestral",
) -> Path:
    """Writes a tiny pipeline folder in the diffusers layout (safetensors weights).

    The folder has the layout of ``timbrooks/instruct-pix2pix`` (``kind="edit"``), of a Stable
    Diffusion v1 checkpoint (``kind="text_to_image"``), of ``diffusers/sdxl-instructpix2pix-768``
    (``kind="edit_xl"``, saved by ``StableDiffusionXLInstructPix2PixPipeline``) or of an SDXL
    checkpoint (``kind="text_to_image_xl"``): ``model_index.json`` and one subfolder per
    component. Loaders that accept a hub id or a local folder can be tested on it offline.

    Returns:
        The folder.
    """
    kinds = ("edit", "text_to_image", "edit_xl", "text_to_image_xl")
    if kind not in kinds:
        raise ValueError(f"kind must be one of {kinds}, got {kind!r}")
    from diffusers import StableDiffusionInstructPix2PixPipeline, StableDiffusionPipeline

    path = Path(directory)
    if kind.endswith("_xl"):
        from diffusers import StableDiffusionXLInstructPix2PixPipeline, StableDiffusionXLPipeline

        xl = tiny_sdxl_components(
            in_channels=8 if kind == "edit_xl" else 4, seed=seed, scheduler=scheduler
        )
        xl_class = (
            StableDiffusionXLInstructPix2PixPipeline
            if kind == "edit_xl"
            else StableDiffusionXLPipeline
        )
        xl_class(**xl, add_watermarker=False).save_pretrained(path, safe_serialization=True)
        return path
    parts = tiny_components(in_channels=8 if kind == "edit" else 4, seed=seed, scheduler=scheduler)
    pipeline_class = (
        StableDiffusionInstructPix2PixPipeline if kind == "edit" else StableDiffusionPipeline
    )
    pipeline = pipeline_class(
        **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipeline.save_pretrained(path, safe_serialization=True)
    return path
