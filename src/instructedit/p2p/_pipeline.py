"""PromptToPrompt: paired text-to-image generation with attention control (stage 2 of the paper)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from instructedit._checks import check_range
from instructedit._inputs import (
    OutputType,
    as_list,
    broadcast,
    check_output_type,
    check_positive_int,
    check_side,
    check_texts,
    pair_count,
    per_item,
)
from instructedit._memory import MemoryTools
from instructedit.attention import AttentionController, attention_control
from instructedit.caching import DeepCacheUNet
from instructedit.components import (
    check_text_parts,
    decode_latents,
    is_sdxl_unet,
    load_components,
    move_models,
    native_size,
    sdxl_time_ids,
    text_embeddings,
    vae_scale_factor,
)
from instructedit.guidance import ClassifierFreeGuidance, check_scale
from instructedit.images import ImageInput, load_image, prepared_size, tensor_to_output
from instructedit.p2p._controllers import (
    CrossAttentionEdit,
    LocalBlend,
    Refine,
    SelfAttentionInjection,
    WordSwap,
)
from instructedit.p2p._inversion import Inversion, encode_real_image, invert
from instructedit.p2p._schedules import CrossAttentionSchedule
from instructedit.p2p._unified import UnifiedAttentionControl
from instructedit.p2p._virtual import check_eta_and_strength, virtual_edit
from instructedit.sampling import BranchConditioning, denoise, scheduler_step_kwargs

__all__ = [
    "PAIR_CONTROLS",
    "REAL_EDIT_METHODS",
    "PairCandidate",
    "PairControl",
    "PairOutput",
    "PromptToPrompt",
    "RealEditMethod",
    "check_local_blend",
]

RealEditMethod = Literal["virtual", "null_text", "ddim"]
"""How :meth:`PromptToPrompt.edit_real` brings a real image into the model."""
REAL_EDIT_METHODS: tuple[RealEditMethod, ...] = ("virtual", "null_text", "ddim")

PairControl = Literal["self_attention", "cross_attention"]
"""What :meth:`PromptToPrompt.sample_pairs`' control strength p controls."""
PAIR_CONTROLS: tuple[PairControl, ...] = ("self_attention", "cross_attention")


def check_local_blend(local_blend: float | None, control: str, *, prefix: str = "") -> None:
    """Raises ``ValueError`` unless ``local_blend`` is ``None``, or a threshold in [0, 1) with the
    cross-attention ``control`` (:meth:`PromptToPrompt.sample_pairs`); ``prefix`` is put before
    both argument names in the message (``"pair_"`` for ``RecipeConfig``)."""
    if local_blend is None:
        return
    if control != "cross_attention":
        raise ValueError(
            f"{prefix}local_blend needs {prefix}control='cross_attention' (it blends with the "
            f"edit's cross-attention maps), got {prefix}control={control!r}"
        )
    if not 0.0 <= local_blend < 1.0:
        raise ValueError(f"{prefix}local_blend must be a threshold in [0, 1), got {local_blend!r}")


logger = logging.getLogger(__name__)


@dataclass
class PairOutput:
    """Images rendered from the same noise: ``source[i]`` and ``target[i]`` form pair i.

    Attributes:
        source: source-prompt images (PIL list, ``[N, H, W, 3]`` array, ``[N, 3, H, W]`` tensor or
            latents, by ``output_type``).
        target: target-prompt images, same type.
        seeds: the seed of each pair.
    """

    source: list[Image.Image] | np.ndarray | Tensor
    target: list[Image.Image] | np.ndarray | Tensor
    seeds: list[int]


@dataclass(frozen=True)
class PairCandidate:
    """One sampled pair of :meth:`PromptToPrompt.sample_pairs` with its random parameters.

    Attributes:
        source: the source-caption image.
        target: the edited-caption image.
        seed: seed of the shared initial and per-step noise.
        injection: p, the fraction of steps with self-attention injection.
        guidance_scale: the text guidance scale used.
    """

    source: Image.Image
    target: Image.Image
    seed: int
    injection: float
    guidance_scale: float


class PromptToPrompt(MemoryTools):
    """Renders a caption and its edited caption from the same seed so that only the edit changes.

    Hertz et al., *Prompt-to-Prompt Image Editing with Cross Attention Control*, 2022; used by
    InstructPix2Pix (Brooks et al., CVPR 2023) to generate its training pairs. Built from a
    text-to-image Stable Diffusion model (4-channel UNet); any attention controller of
    :mod:`instructedit.p2p` edits the target while the source renders exactly as the plain
    model would.

    Stable Diffusion XL text-to-image models work the same way, recognised from the UNet's
    layout: two text encoders, the pooled embedding and the size ids, as diffusers'
    ``StableDiffusionXLPipeline`` computes them (so SDXL editing data can be generated).

    Args:
        unet: a text-to-image ``UNet2DConditionModel`` (SD 1.x/2.x or SDXL).
        vae: the ``AutoencoderKL``.
        text_encoder: the ``CLIPTextModel`` (SDXL: the first one).
        tokenizer: its tokenizer.
        scheduler: any diffusers scheduler.
        text_encoder_2: SDXL's second text encoder (``CLIPTextModelWithProjection``).
        tokenizer_2: its tokenizer.
        force_zeros_for_empty_prompt: SDXL: without a ``negative_prompt``, the unconditional
            branch takes zero embeddings (diffusers' default).
    """

    def __init__(
        self,
        *,
        unet: Any,
        vae: Any,
        text_encoder: Any,
        tokenizer: Any,
        scheduler: Any,
        text_encoder_2: Any = None,
        tokenizer_2: Any = None,
        force_zeros_for_empty_prompt: bool = True,
    ) -> None:
        in_channels = getattr(getattr(unet, "config", None), "in_channels", None)
        latent_channels = getattr(getattr(vae, "config", None), "latent_channels", None)
        if in_channels is None or latent_channels is None:
            raise TypeError("unet and vae must be diffusers models with a .config")
        if in_channels != latent_channels:
            raise ValueError(
                f"PromptToPrompt needs a text-to-image UNet (in_channels = {latent_channels}), got {in_channels}"
            )
        check_text_parts(unet, text_encoder, tokenizer, text_encoder_2, tokenizer_2)
        self.unet = unet
        self.vae = vae
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.text_encoder_2 = text_encoder_2
        self.tokenizer_2 = tokenizer_2
        self.force_zeros_for_empty_prompt = bool(force_zeros_for_empty_prompt)
        self.scheduler = scheduler

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path, **kwargs: Any) -> PromptToPrompt:
        """Loads a Stable Diffusion or SDXL pipeline folder or hub id (diffusers layout);
        keyword arguments as :func:`~instructedit.components.load_components`."""
        parts = load_components(path_or_hub_id, **kwargs)
        parts.pop("is_cosxl_edit", None)
        return cls(**parts)

    @property
    def is_xl(self) -> bool:
        """Whether this is a Stable Diffusion XL model (from its UNet's layout)."""
        return is_sdxl_unet(self.unet)

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent along each side."""
        return vae_scale_factor(self.vae)

    @property
    def native_size(self) -> int:
        """The side, in pixels, the model was trained at (the UNet's ``sample_size`` times
        :attr:`vae_scale_factor`: 512 for SD 1.5)."""
        return native_size(self.unet, self.vae)

    def to(
        self, device: str | torch.device | None = None, dtype: torch.dtype | None = None
    ) -> PromptToPrompt:
        """Moves the models; returns ``self``."""
        if device is not None:
            self._check_not_offloaded(f"move it to {device}")
        move_models(self._models(), device, dtype)
        return self

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """Returns text embeddings ``[N, T, D]`` (SDXL: both encoders' features side by side)."""
        return text_embeddings(self, texts)[0]

    def _check_prompts(self, prompts: Sequence[str], argument: str) -> None:
        tokenizer = self.tokenizer if self.tokenizer is not None else self.tokenizer_2
        limit = tokenizer.model_max_length
        for index, prompt in enumerate(prompts):
            length = len(tokenizer(prompt).input_ids)
            if length > limit:
                raise ValueError(
                    f"{argument}[{index}] has {length} tokens; the text encoder allows {limit} "
                    "(start and end tokens included)"
                )

    def _size(self, height: int | None, width: int | None) -> tuple[int, int]:
        default = int(self.unet.config.sample_size) * self.vae_scale_factor
        return (
            default if height is None else check_side(height, "height", self.vae_scale_factor),
            default if width is None else check_side(width, "width", self.vae_scale_factor),
        )

    def generate(
        self,
        source_prompt: str | Sequence[str],
        target_prompt: str | Sequence[str],
        controller: AttentionController | None = None,
        seed: int | Sequence[int] = 0,
        num_inference_steps: int = 50,
        guidance_scale: float | Sequence[float] = 7.5,
        height: int | None = None,
        width: int | None = None,
        output_type: OutputType = "pil",
        *,
        negative_prompt: str | None = None,
        latents: Tensor | None = None,
        uncond_embeddings: Sequence[Tensor] | None = None,
        scheduler: Any | None = None,
        cache_interval: int = 1,
        progress: bool = True,
    ) -> PairOutput:
        """Renders source and target prompts from the same noise, the target under ``controller``.

        Each pair starts from the initial noise diffusers' ``StableDiffusionPipeline`` draws for
        its seed, and ancestral samplers add the same per-step noise to both images, so with
        ``controller=None`` each image equals that pipeline's output for its prompt alone.

        Args:
            source_prompt: one prompt or one per pair.
            target_prompt: one prompt or one per pair (a single one of either is broadcast).
            controller: attention control applied to the targets (``None``: independent renders).
            seed: one seed, or one per pair.
            num_inference_steps: denoising steps.
            guidance_scale: classifier-free guidance scale, or one per pair.
            height: image height (default: the UNet's sample size × VAE factor).
            width: image width.
            output_type: ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"``.
            negative_prompt: text of the unconditional branch (default ``""``).
            latents: initial latents ``[pairs, 4, h, w]`` instead of drawing them (real-image
                editing starts from inverted latents).
            uncond_embeddings: one unconditional embedding ``[1, T, D]`` per step (null-text
                inversion), instead of the negative prompt's.
            scheduler: a scheduler for this call instead of ``self.scheduler``.
            cache_interval: feature caching (:class:`~instructedit.caching.DeepCacheUNet`): one
                step in ``cache_interval`` runs the whole UNet (1: every step, as without it).
            progress: show a progress bar.
        """
        forward = (
            DeepCacheUNet(self.unet, interval=cache_interval) if cache_interval != 1 else self.unet
        )
        sources = check_texts(
            as_list(source_prompt, "source_prompt"), "source_prompt", allow_empty=True
        )
        targets = check_texts(
            as_list(target_prompt, "target_prompt"), "target_prompt", allow_empty=True
        )
        pairs = pair_count(sources, "source prompts", targets, "target prompts")
        sources = broadcast(sources, pairs, "source_prompt")
        targets = broadcast(targets, pairs, "target_prompt")
        self._check_prompts(sources, "source_prompt")
        self._check_prompts(targets, "target_prompt")
        seeds = per_item(seed, pairs, "seed", int, "an int")
        scales = per_item(guidance_scale, pairs, "guidance_scale", (int, float), "a number")
        for index, scale in enumerate(scales):
            check_scale("guidance_scale" if len(scales) == 1 else f"guidance_scale[{index}]", scale)
        scales = [float(scale) for scale in scales]
        check_positive_int(num_inference_steps, "num_inference_steps")
        check_output_type(output_type)
        if uncond_embeddings is not None and len(uncond_embeddings) != num_inference_steps:
            raise ValueError(
                f"uncond_embeddings has {len(uncond_embeddings)} entries for {num_inference_steps} steps"
            )
        guidance = ClassifierFreeGuidance(
            scale=scales[0] if len(set(scales)) == 1 else tuple(scales + scales)
        )
        height, width = self._size(height, width)
        sampler = self.scheduler if scheduler is None else scheduler

        text, pooled = text_embeddings(self, sources + targets)
        negative_pooled: Tensor | None
        if pooled is not None and negative_prompt is None and self.force_zeros_for_empty_prompt:
            negative, negative_pooled = torch.zeros_like(text[:1]), torch.zeros_like(pooled[:1])
        else:
            negative, negative_pooled = text_embeddings(self, [negative_prompt or ""])
        negative = negative.expand(2 * pairs, -1, -1)
        added: dict[str, dict[str, Tensor] | None] = {"cond": None, "uncond": None}
        if pooled is not None and negative_pooled is not None:  # SDXL
            if uncond_embeddings is not None:
                raise ValueError(
                    "uncond_embeddings (null-text inversion) runs on SD 1.x/2.x models; this one "
                    "is SDXL"
                )
            ids = sdxl_time_ids(
                (height, width),
                (0, 0),
                (height, width),
                unet=self.unet,
                pooled_dim=pooled.shape[-1],
            ).to(self.device, self.dtype)
            ids = ids.expand(2 * pairs, -1)
            added = {
                "cond": {"text_embeds": pooled, "time_ids": ids},
                "uncond": {"text_embeds": negative_pooled.expand(2 * pairs, -1), "time_ids": ids},
            }
        sampler.set_timesteps(num_inference_steps, device=self.device)
        shape = (
            2 * pairs,
            self.vae.config.latent_channels,
            height // self.vae_scale_factor,
            width // self.vae_scale_factor,
        )
        # One generator per row, sources and targets seeded alike: each row draws exactly what a
        # single-prompt diffusers run draws for its seed, initial and per-step noise both.
        generators = [torch.Generator(self.device).manual_seed(s) for s in seeds + seeds]
        if latents is None:
            from diffusers.utils.torch_utils import randn_tensor

            start = randn_tensor(shape, generator=generators, device=self.device, dtype=self.dtype)
        else:
            if latents.shape[0] != pairs or tuple(latents.shape[1:]) != shape[1:]:
                raise ValueError(
                    f"latents must have shape {(pairs, *shape[1:])}, got {tuple(latents.shape)}"
                )
            start = latents.to(self.device, self.dtype).repeat(2, 1, 1, 1)
        start = start * sampler.init_noise_sigma

        conditioning: (
            Mapping[str, BranchConditioning] | Callable[[int], Mapping[str, BranchConditioning]]
        )
        if uncond_embeddings is None:
            conditioning = {
                "cond": BranchConditioning(text, added_cond_kwargs=added["cond"]),
                "uncond": BranchConditioning(negative, added_cond_kwargs=added["uncond"]),
            }
        else:
            per_step = [
                e.to(self.device, self.dtype).expand(2 * pairs, -1, -1) for e in uncond_embeddings
            ]

            def conditioning(step: int) -> Mapping[str, BranchConditioning]:
                return {
                    "cond": BranchConditioning(text),
                    "uncond": BranchConditioning(per_step[step]),
                }

        kwargs = scheduler_step_kwargs(sampler, generators)
        control = (
            attention_control(self.unet, controller, latent_size=shape[2:], num_pairs=pairs)
            if controller is not None
            else contextlib.nullcontext(None)
        )
        with torch.no_grad(), control as state:

            def blend(
                index: int, timestep: Tensor, tensors: dict[str, Tensor]
            ) -> Mapping[str, Any]:
                assert controller is not None
                return {
                    "latents": controller.step_end(tensors["latents"], index, num_inference_steps)
                }

            final = denoise(
                forward,
                sampler,
                guidance,
                start,
                conditioning,
                step_kwargs=kwargs,
                controller=state,
                callback_on_step_end=blend if controller is not None else None,
                progress=progress,
            )
        if output_type == "latent":
            return PairOutput(source=final[:pairs], target=final[pairs:], seeds=seeds)
        images = tensor_to_output(decode_latents(self.vae, final, upcast=self.is_xl), output_type)
        self.maybe_free_model_hooks()
        if isinstance(images, list):
            return PairOutput(source=images[:pairs], target=images[pairs:], seeds=seeds)
        return PairOutput(source=images[:pairs], target=images[pairs:], seeds=seeds)

    def invert(self, image: ImageInput, prompt: str, **kwargs: Any) -> Inversion:
        """Inverts a real image for editing; see :func:`~instructedit.p2p.invert`."""
        return invert(self, image, prompt, **kwargs)

    def edit_inverted(
        self,
        inversion: Inversion,
        target_prompt: str,
        controller: AttentionController | None = None,
        *,
        output_type: OutputType = "pil",
        progress: bool = True,
    ) -> PairOutput:
        """Renders the inverted image (``.source``, its reconstruction) and its edit (``.target``)."""
        return self.generate(
            inversion.prompt,
            target_prompt,
            controller=controller,
            num_inference_steps=inversion.num_inference_steps,
            guidance_scale=inversion.guidance_scale,
            height=inversion.latents.shape[2] * self.vae_scale_factor,
            width=inversion.latents.shape[3] * self.vae_scale_factor,
            output_type=output_type,
            latents=inversion.latents,
            uncond_embeddings=inversion.uncond_embeddings,
            scheduler=inversion.scheduler,
            progress=progress,
        )

    def edit_real(
        self,
        image: ImageInput,
        source_prompt: str,
        target_prompt: str,
        *,
        method: RealEditMethod = "virtual",
        controller: AttentionController | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        source_guidance_scale: float = 1.0,
        eta: float = 1.0,
        strength: float = 1.0,
        seed: int = 0,
        scheduler: Any | None = None,
        height: int | None = None,
        width: int | None = None,
        output_type: OutputType = "pil",
        progress: bool = True,
    ) -> PairOutput:
        """Edits a real image described by ``source_prompt`` into ``target_prompt``; returns the
        reconstruction (``.source``) and the edit (``.target``).

        ``method``:

        * ``"virtual"``: inversion-free editing (InfEdit's virtual inversion and DDCM sampler,
          :class:`~instructedit.p2p.VirtualInversion`): no inversion pass; three branches a
          step (source, target, mutual), with ``source_guidance_scale`` on the source prompt's
          and ``eta`` the share of fresh noise a step. ``strength`` < 1 starts partway down the
          schedule. The source comes back exactly: ``.source`` is the encoded image itself. The
          timesteps are ``scheduler``'s (default DDIM on the model's noise schedule; an
          ``LCMScheduler`` gives InfEdit's few-step consistency sampling).
        * ``"null_text"``: DDIM inversion then null-text inversion (:meth:`invert`), then
          :meth:`edit_inverted` with ``controller``.
        * ``"ddim"``: DDIM inversion alone, then :meth:`edit_inverted`.

        ``seed`` draws the virtual inversion's noise. ``controller``: with ``"virtual"``, a
        :class:`~instructedit.p2p.UnifiedAttentionControl` (InfEdit's cross-attention
        refinement, mutual self-attention and local blend) or ``None`` (none); with the
        inversion methods, a Prompt-to-Prompt controller of their two-branch batch.
        """
        if method not in REAL_EDIT_METHODS:
            raise ValueError(f"method must be one of {REAL_EDIT_METHODS}, got {method!r}")
        for name, prompt in (("source_prompt", source_prompt), ("target_prompt", target_prompt)):
            if not isinstance(prompt, str):
                raise TypeError(f"{name} must be a str, got {type(prompt).__name__}")
        check_positive_int(num_inference_steps, "num_inference_steps")
        check_scale("guidance_scale", guidance_scale)
        check_output_type(output_type)
        if method != "virtual":
            if isinstance(controller, UnifiedAttentionControl):
                raise ValueError(
                    "UnifiedAttentionControl runs with method='virtual' (three branches); the "
                    f"inversion methods take Prompt-to-Prompt's controllers, got method={method!r}"
                )
            inversion = self.invert(
                image,
                source_prompt,
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                null_text=method == "null_text",
                height=height,
                width=width,
                progress=progress,
            )
            inversion.guidance_scale = guidance_scale
            return self.edit_inverted(
                inversion,
                target_prompt,
                controller,
                output_type=output_type,
                progress=progress,
            )
        if controller is not None and not isinstance(controller, UnifiedAttentionControl):
            raise ValueError(
                "with method='virtual' the controller must be a UnifiedAttentionControl (its "
                "three branches: source, target, mutual); Prompt-to-Prompt's two-branch "
                f"controllers apply with method='ddim' or 'null_text', got {type(controller).__name__}"
            )
        if self.is_xl:
            raise ValueError("virtual inversion runs on Stable Diffusion 1.x/2.x models")
        check_scale("source_guidance_scale", source_guidance_scale)
        check_eta_and_strength(eta, strength)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, got {seed!r}")
        self._check_prompts([source_prompt], "source_prompt")
        self._check_prompts([target_prompt], "target_prompt")
        clean = encode_real_image(self, image, height, width)
        edited = virtual_edit(
            self,
            clean,
            source_prompt,
            target_prompt,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            source_guidance_scale=source_guidance_scale,
            eta=eta,
            strength=strength,
            seed=seed,
            scheduler=scheduler,
            progress=progress,
            controller=controller,
        )
        if output_type == "latent":
            return PairOutput(source=clean, target=edited, seeds=[seed])
        images = tensor_to_output(decode_latents(self.vae, torch.cat([clean, edited])), output_type)
        self.maybe_free_model_hooks()
        return PairOutput(source=images[:1], target=images[1:], seeds=[seed])

    def sample_real_pairs(
        self,
        image: ImageInput,
        source_prompt: str,
        target_prompt: str,
        num_samples: int = 100,
        *,
        method: RealEditMethod = "virtual",
        seed: int = 0,
        num_inference_steps: int = 100,
        injection_range: tuple[float, float] = (0.1, 0.9),
        guidance_range: tuple[float, float] = (7.5, 15.0),
        height: int | None = None,
        width: int | None = None,
        control: PairControl = "self_attention",
        local_blend: float | None = None,
        progress: bool = True,
    ) -> list[PairCandidate]:
        """Draws candidate pairs whose input is a real image: each candidate edits ``image``
        (described by ``source_prompt``) into ``target_prompt`` with :meth:`edit_real`; its
        ``source`` is the image through the autoencoder (whatever the method: an inversion's
        reconstruction drifts, the photograph does not) and its ``target`` the edit.

        Per sample, from ``seed``: a seed, a control strength p ~ U(``injection_range``) and a
        text guidance scale ~ U(``guidance_range``) (``method="virtual"``: each sample its own
        noise); with the inversion methods the image is inverted once and rendered at the
        guidance an edit uses, 7.5 (the scale null-text inversion is optimised for), whatever
        the drawn scale. A candidate's ``injection`` is p.

        What p controls, as in :meth:`sample_pairs`: with ``control="self_attention"`` the
        share of the steps whose target takes the source's self-attention; with
        ``"cross_attention"`` the share whose target refines its cross-attention from the
        source's. For virtual inversion both are InfEdit's
        :class:`~instructedit.p2p.UnifiedAttentionControl` (``self_replace_steps`` = p, no
        cross-attention control; or ``cross_replace_steps`` = p, ``self_replace_steps`` 0.3),
        and ``local_blend`` (cross-attention only) is its target blend around the edited words
        at that threshold. For the inversion methods they are :class:`SelfAttentionInjection`
        and :meth:`sample_pairs`' :class:`CrossAttentionEdit` with :class:`LocalBlend`.

        Without ``height`` and ``width`` the image is resized to the model's native size, its
        long side to :attr:`native_size` (aspect kept, sides floored to the VAE's multiple), so
        photographs of any size make pairs of the size the model draws.
        """
        if self.is_xl:
            raise ValueError("real-image pairs are made with Stable Diffusion 1.x/2.x models")
        if method not in REAL_EDIT_METHODS:
            raise ValueError(f"method must be one of {REAL_EDIT_METHODS}, got {method!r}")
        check_positive_int(num_samples, "num_samples")
        check_positive_int(num_inference_steps, "num_inference_steps")
        check_range("injection_range", injection_range, maximum=1.0)
        check_range("guidance_range", guidance_range)
        if control not in PAIR_CONTROLS:
            raise ValueError(f"control must be one of {PAIR_CONTROLS}, got {control!r}")
        check_local_blend(local_blend, control)
        rng = np.random.default_rng(seed)
        injections = rng.uniform(*injection_range, size=num_samples).tolist()
        scales = rng.uniform(*guidance_range, size=num_samples).tolist()
        seeds = rng.integers(0, 2**31 - 1, size=num_samples).tolist()
        if height is None and width is None:
            loaded = load_image(image, argument="image")
            width, height = prepared_size(
                *loaded.size,
                resize="native",
                multiple=max(8, self.vae_scale_factor),
                resolution=self.native_size,
            )
        clean = encode_real_image(self, image, height, width)
        decoded = tensor_to_output(decode_latents(self.vae, clean), "pil")
        assert isinstance(decoded, list)  # output_type="pil"
        real = decoded[0]
        inversion = None
        if method != "virtual":
            inversion = self.invert(
                image,
                source_prompt,
                num_inference_steps=num_inference_steps,
                null_text=method == "null_text",
                height=height,
                width=width,
                progress=progress,
            )
            inversion.guidance_scale = 7.5
        candidates: list[PairCandidate] = []
        cross = control == "cross_attention"
        # Virtual inversion: the prompts aligned once, each sample its own step shares.
        unified = (
            UnifiedAttentionControl.from_prompts(
                [source_prompt],
                [target_prompt],
                self.tokenizer,
                encode_text=self.encode_text,
                local_words="edits" if local_blend is not None else None,
                local_threshold=local_blend if local_blend is not None else 0.3,
            )
            if inversion is None
            else None
        )
        for index in range(num_samples):
            p = float(injections[index])
            if unified is not None:
                edited = virtual_edit(
                    self,
                    clean,
                    source_prompt,
                    target_prompt,
                    num_inference_steps=num_inference_steps,
                    guidance_scale=scales[index],
                    source_guidance_scale=1.0,
                    eta=1.0,
                    strength=1.0,
                    seed=int(seeds[index]),
                    scheduler=None,
                    progress=False,
                    controller=unified.replace(
                        cross_replace_steps=p if cross else 0.0,
                        self_replace_steps=0.3 if cross else p,
                    ),
                )
                target = tensor_to_output(decode_latents(self.vae, edited), "pil")
                scale = float(scales[index])
            else:
                assert inversion is not None
                controller: AttentionController = (
                    self._cross_attention_control(
                        source_prompt,
                        target_prompt,
                        [p],
                        num_inference_steps,
                        0.4,
                        None,
                        local_blend,
                    )
                    if cross
                    else SelfAttentionInjection(p)
                )
                target = self.edit_inverted(
                    inversion, target_prompt, controller, progress=False
                ).target
                scale = inversion.guidance_scale
            assert isinstance(target, list)  # output_type="pil"
            candidates.append(
                PairCandidate(
                    source=real,
                    target=target[0],
                    seed=int(seeds[index]),
                    injection=p,
                    guidance_scale=scale,
                )
            )
        return candidates

    def _cross_attention_control(
        self,
        source_prompt: str,
        target_prompt: str,
        fractions: Sequence[float],
        num_steps: int,
        self_replace_steps: float,
        max_resolution: int | None,
        blend_threshold: float | None,
    ) -> CrossAttentionEdit:
        """A :class:`CrossAttentionEdit` whose pair ``i`` replaces cross-attention for the first
        ``fractions[i]`` of the steps, blended locally around the edited words when
        ``blend_threshold`` is given."""
        count = len(fractions)
        sources, targets = [source_prompt] * count, [target_prompt] * count
        edit: WordSwap | Refine = (
            WordSwap.from_prompts(sources, targets, self.tokenizer)
            if len(source_prompt.split()) == len(target_prompt.split())
            else Refine.from_prompts(sources, targets, self.tokenizer)
        )
        length = self.tokenizer.model_max_length
        alphas = torch.stack(
            [
                CrossAttentionSchedule(fraction).alphas(
                    target_prompt, self.tokenizer, num_steps, length
                )
                for fraction in fractions
            ]
        )
        local_blend = (
            None
            if blend_threshold is None
            else LocalBlend.from_edits(sources, targets, self.tokenizer, threshold=blend_threshold)
        )
        return CrossAttentionEdit(
            edit,
            alphas,
            self_window=self_replace_steps,
            self_max_resolution=max_resolution,
            local_blend=local_blend,
        )

    def sample_pairs(
        self,
        source_prompt: str,
        target_prompt: str,
        num_samples: int = 100,
        *,
        seed: int = 0,
        batch_size: int = 4,
        num_inference_steps: int = 100,
        injection_range: tuple[float, float] = (0.1, 0.9),
        guidance_range: tuple[float, float] = (7.5, 15.0),
        height: int | None = None,
        width: int | None = None,
        max_resolution: int | None = None,
        control: PairControl = "self_attention",
        self_replace_steps: float = 0.4,
        local_blend: float | None = None,
        progress: bool = True,
    ) -> list[PairCandidate]:
        """Draws candidate pairs with the InstructPix2Pix recipe's random parameters.

        Per sample: a control strength p ~ U(injection_range), text guidance
        s ~ U(guidance_range), and a seed; all drawn from ``seed``, so the same arguments give
        the same candidates. Samples are rendered ``batch_size`` at a time.

        ``control`` chooses what p controls:

        * ``"self_attention"`` (the official data generator's): the target uses the source's
          self-attention for the first p of the steps (:class:`SelfAttentionInjection`);
        * ``"cross_attention"`` (google/prompt-to-prompt's edit): the target's cross-attention
          takes the source's maps for the first p of the steps — :class:`WordSwap` when both
          prompts have as many words, :class:`Refine` otherwise — and its self-attention the
          source's for the first ``self_replace_steps`` (:class:`CrossAttentionEdit`). Where the
          text decides the layout, as in ShapesWorld's small model, self-attention alone does
          not hold it: this keeps 3–4× more pairs correct (see the ShapesWorld research notes).

        ``local_blend`` (a mask threshold, 0.3 in google's notebooks; cross-attention control
        only) adds :class:`LocalBlend` around the words the edit changes
        (:meth:`LocalBlend.from_edits`): after each step from the first 20 %, the target's
        latents outside the edited words' cross-attention maps are reset to the source's, so
        what the caption does not mention cannot move.

        ``max_resolution`` limits the self-attention control to layers whose query side is at
        most that. The candidates' ``injection`` is p.

        Returns:
            ``num_samples`` candidates in order (filter them with CLIP afterwards).
        """
        for name, text in (("source_prompt", source_prompt), ("target_prompt", target_prompt)):
            if not isinstance(text, str):
                raise TypeError(
                    f"{name} must be a str (one caption pair per call), got {type(text).__name__}"
                )
        check_positive_int(num_samples, "num_samples")
        check_positive_int(batch_size, "batch_size")
        check_positive_int(num_inference_steps, "num_inference_steps")
        self._size(height, width)
        check_range("injection_range", injection_range, maximum=1.0)
        check_range("guidance_range", guidance_range)
        if control not in PAIR_CONTROLS:
            raise ValueError(f"control must be one of {PAIR_CONTROLS}, got {control!r}")
        if not 0.0 <= self_replace_steps <= 1.0:
            raise ValueError(f"self_replace_steps must be in [0, 1], got {self_replace_steps}")
        check_local_blend(local_blend, control)
        rng = np.random.default_rng(seed)
        injections = rng.uniform(*injection_range, size=num_samples).tolist()
        scales = rng.uniform(*guidance_range, size=num_samples).tolist()
        seeds = rng.integers(0, 2**31 - 1, size=num_samples).tolist()
        candidates: list[PairCandidate] = []
        for begin in range(0, num_samples, batch_size):
            chunk = slice(begin, min(begin + batch_size, num_samples))
            count = chunk.stop - chunk.start
            controller: AttentionController
            if control == "self_attention":
                controller = SelfAttentionInjection(
                    injections[chunk], max_resolution=max_resolution
                )
            else:
                controller = self._cross_attention_control(
                    source_prompt,
                    target_prompt,
                    injections[chunk],
                    num_inference_steps,
                    self_replace_steps,
                    max_resolution,
                    local_blend,
                )
            output = self.generate(
                [source_prompt] * count,
                [target_prompt] * count,
                controller=controller,
                seed=seeds[chunk],
                num_inference_steps=num_inference_steps,
                guidance_scale=scales[chunk],
                height=height,
                width=width,
                output_type="pil",
                progress=progress,
            )
            assert isinstance(output.source, list)  # output_type="pil"
            assert isinstance(output.target, list)
            for offset in range(count):
                index = chunk.start + offset
                candidates.append(
                    PairCandidate(
                        source=output.source[offset],
                        target=output.target[offset],
                        seed=int(seeds[index]),
                        injection=float(injections[index]),
                        guidance_scale=float(scales[index]),
                    )
                )
        return candidates
