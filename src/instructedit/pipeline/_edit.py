"""EditPipeline: InstructPix2Pix image editing over the one denoising loop."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from instructedit._inputs import (
    OutputType,
    as_list,
    broadcast,
    check_output_type,
    check_positive_int,
    check_texts,
    pair_count,
)
from instructedit._memory import module_device
from instructedit.caching import DeepCacheUNet
from instructedit.checkpoints import write_json_atomic
from instructedit.components import (
    check_text_parts,
    decode_latents,
    is_sdxl_unet,
    load_components,
    move_models,
    run_vae,
    sdxl_time_ids,
    text_embeddings,
)
from instructedit.default import default_model_dir, names_default
from instructedit.guidance import (
    GUIDANCE_CONFIG_NAME,
    DualGuidance,
    check_scale,
    is_distilled,
    load_guidance_config,
    save_guidance_config,
)
from instructedit.images import (
    DEFAULT_MAX_PIXELS,
    ImageInput,
    ResizeMode,
    load_image,
    pil_to_tensor,
    prepare_image,
    tensor_to_output,
)
from instructedit.pipeline._config import (
    EDITING_CONFIG_NAME,
    EditingConfig,
    load_editing_config,
    save_editing_config,
)
from instructedit.pipeline._edit_checks import EditChecks
from instructedit.pipeline._masks import (
    MaskInput,
    MaskMethod,
    diffedit_mask,
    feather_mask,
    latent_mask,
    paste_outside,
)
from instructedit.sampling import (
    BranchConditioning,
    LatentBlend,
    denoise,
    scheduler_step_kwargs,
)

__all__ = ["SPEED_PRESETS", "EditOutput", "EditPipeline", "OutputType", "SpeedPreset"]

SpeedPreset = Literal["exact", "balanced", "fast"]
SPEED_PRESETS: dict[str, int] = {"exact": 1, "balanced": 2, "fast": 3}
"""Speed presets → the feature-caching interval they use (``"exact"``: the whole UNet every
step). Their measured speed and quality are in the "Memory and speed" guide."""

logger = logging.getLogger(__name__)

SDXL_TEXT_SCALE = 5.0
"""The instruction guidance an SDXL editor uses without a stored one (diffusers'
``StableDiffusionXLInstructPix2PixPipeline`` default)."""

PipelineCallback = Callable[
    ["EditPipeline", int, Tensor, dict[str, Tensor]], "Mapping[str, Any] | None"
]
"""``callback(pipe, step_index, timestep, tensors) -> changes``, diffusers' signature. ``tensors``
holds the names in ``callback_on_step_end_tensor_inputs``; return ``{"latents": ...}`` to replace
the latents, ``{"stop": True}`` to stop after this step."""


@dataclass
class EditOutput:
    """What :class:`EditPipeline` returns.

    Attributes:
        images: a list of PIL images, an ``[N, H, W, 3]`` float array in [0, 1], an
            ``[N, 3, H, W]`` tensor in [0, 1], or latents ``[N, 4, h, w]``, by ``output_type``.
            N = number of edits × ``num_images_per_instruction``, grouped by edit.
        masks: the masks the edit used, ``[N, 1, H, W]`` in [0, 1] at the edited image's size
            (given ones fitted to it, or the ones ``mask_image="auto"`` found); ``None`` without
            a mask.
    """

    images: list[Image.Image] | np.ndarray | Tensor
    masks: Tensor | None = None


def _hub_folder_with(
    hub_id: str, name: str, *, revision: str | None, cache_dir: str | Path | None
) -> Path | None:
    """The cached folder holding a hub repository's file ``name``, ``None`` if it has none."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        file = hf_hub_download(hub_id, name, revision=revision, cache_dir=cache_dir)
    except LocalEntryNotFoundError:  # offline, and the file is not in the cache
        logger.warning(
            "could not check %s for %s (offline, and not cached): using the defaults", hub_id, name
        )
        return None
    except EntryNotFoundError:  # the repository has no such file
        return None
    return Path(file).parent


def _with_added(forward: Callable[..., Any], added: dict[str, Tensor]) -> Callable[..., Any]:
    """``forward`` with fixed ``added_cond_kwargs`` (SDXL's pooled text and size ids)."""

    def call(sample: Tensor, timestep: Any, **kwargs: Any) -> Any:
        return forward(sample, timestep, added_cond_kwargs=added, **kwargs)

    return call


class EditPipeline(EditChecks):
    """Edits images by instruction: InstructPix2Pix (Brooks, Holynski and Efros, CVPR 2023).

    Built from parts, like diffusers' ``StableDiffusionInstructPix2PixPipeline`` — and a drop-in
    for it (same call arguments) — but sampling through instructedit's one denoising loop:
    the three guidance branches are named (:class:`~instructedit.guidance.DualGuidance`), a branch
    whose weight is zero is not run (s_I = 1 costs two UNet evaluations a step, not three), and
    for DDIM, Euler and Euler ancestral the guidance and the scheduler update are one fused step
    (a Triton kernel on CUDA).

    The same class runs Stable Diffusion XL editors (``diffusers/sdxl-instructpix2pix-768``,
    CosXL Edit), recognised from the UNet's layout: two text encoders, the pooled embedding and
    the size and crop ids (``original_size``, ``crops_coords_top_left``, ``target_size``), and the
    VAE in float32 when float16 overflows it, as diffusers'
    ``StableDiffusionXLInstructPix2PixPipeline`` defines them.

    Args:
        unet: an InstructPix2Pix ``UNet2DConditionModel`` (8 input channels: noisy latents and
            image latents), of Stable Diffusion 1.x/2.x's layout or of SDXL's.
        vae: the ``AutoencoderKL``.
        text_encoder: the ``CLIPTextModel`` (SDXL: the first one; ``None`` for a model with
            only the second).
        tokenizer: its tokenizer.
        scheduler: any diffusers scheduler.
        text_encoder_2: SDXL's second text encoder, a ``CLIPTextModelWithProjection``;
            ``None`` for SD 1.x/2.x.
        tokenizer_2: its tokenizer.
        force_zeros_for_empty_prompt: SDXL: without a ``negative_instruction``, the ∅ branches
            take zero embeddings rather than the empty prompt's (diffusers' default, stored in
            ``model_index.json``).
        is_cosxl_edit: SDXL: the image condition is scaled by the VAE's ``scaling_factor`` (CosXL
            Edit's convention).
        guidance: default guidance scales and options (when ``None``: the paper's 7.5 and 1.5,
            or for SDXL diffusers' SDXL defaults, 5 and 1.5);
            the call's ``guidance_scale`` and ``image_guidance_scale`` override its scales.
            :meth:`save_pretrained` stores it with the weights and :meth:`from_pretrained` reads
            it back.
        editing: default masking (:class:`~instructedit.pipeline.EditingConfig`: the whole image
            when ``None``); the call's masking arguments override its fields. Stored and read
            back as ``editing_config.json``.

    Example:
        >>> pipe = EditPipeline.from_pretrained("timbrooks/instruct-pix2pix", torch_dtype=torch.float16)
        >>> edited = pipe(image, "make it snowy", generator=torch.Generator().manual_seed(0)).images[0]
    """

    def __init__(
        self,
        *,
        unet: Any,
        vae: Any,
        text_encoder: Any,
        tokenizer: Any,
        scheduler: Any,
        guidance: DualGuidance | None = None,
        editing: EditingConfig | None = None,
        text_encoder_2: Any = None,
        tokenizer_2: Any = None,
        force_zeros_for_empty_prompt: bool = True,
        is_cosxl_edit: bool = False,
    ) -> None:
        in_channels = getattr(getattr(unet, "config", None), "in_channels", None)
        latent_channels = getattr(getattr(vae, "config", None), "latent_channels", None)
        if in_channels is None or latent_channels is None:
            raise TypeError("unet and vae must be diffusers models with a .config")
        if in_channels != 2 * latent_channels:
            raise ValueError(
                f"unet.config.in_channels must be {2 * latent_channels} (noisy latents + image latents) "
                f"for editing, got {in_channels}; convert a text-to-image UNet with "
                "instructedit.training.to_edit_unet"
            )
        if not hasattr(scheduler, "set_timesteps") or not hasattr(scheduler, "step"):
            raise TypeError(
                f"scheduler must be a diffusers scheduler, got {type(scheduler).__name__}"
            )
        check_text_parts(unet, text_encoder, tokenizer, text_encoder_2, tokenizer_2)
        self.unet = unet
        self.vae = vae
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.text_encoder_2 = text_encoder_2
        self.tokenizer_2 = tokenizer_2
        self.force_zeros_for_empty_prompt = bool(force_zeros_for_empty_prompt)
        self.is_cosxl_edit = bool(is_cosxl_edit)
        self.scheduler = scheduler
        if guidance is None:  # diffusers' defaults: the paper's 7.5 and 1.5; SDXL's 5 and 1.5
            guidance = DualGuidance(text_scale=SDXL_TEXT_SCALE) if self.is_xl else DualGuidance()
        self.guidance = guidance
        if editing is not None and not isinstance(editing, EditingConfig):
            raise TypeError(f"editing must be an EditingConfig, got {type(editing).__name__}")
        self.editing = editing if editing is not None else EditingConfig()
        self._unet_forward: Callable[..., Any] = unet
        self._lora_restore: dict[str, Any] = {}  # what unload_lora_weights puts back

    @property
    def is_xl(self) -> bool:
        """Whether this is a Stable Diffusion XL editor (from its UNet's layout)."""
        return is_sdxl_unet(self.unet)

    # ----------------------------------------------------------------- construction and saving

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | Path,
        *,
        torch_dtype: torch.dtype | None = None,
        scheduler: str | Any | None = None,
        guidance: DualGuidance | None = None,
        editing: EditingConfig | None = None,
        allow_pickle: bool = False,
        variant: str | None = None,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        is_cosxl_edit: bool | None = None,
    ) -> EditPipeline:
        """Loads a pipeline in the diffusers layout (a local folder or a hub id), or the embedded
        default editor by the name ``"shapes"`` (see :func:`instructedit.default.load_default`).

        The layout is that of ``timbrooks/instruct-pix2pix``: ``model_index.json`` and the
        folders ``unet``, ``vae``, ``text_encoder``, ``tokenizer``, ``scheduler``; or that of
        ``diffusers/sdxl-instructpix2pix-768`` (SDXL), which adds ``text_encoder_2`` and
        ``tokenizer_2``. Weights are read from safetensors; pickle weights (``*.bin``) load only
        with ``allow_pickle=True``.

        Args:
            path_or_hub_id: a local folder, a hub repository id, or ``"shapes"``.
            torch_dtype: dtype of the models (e.g. ``torch.float16``).
            scheduler: a scheduler instance, a name from
                :data:`~instructedit.sampling.SCHEDULERS` (built from the saved scheduler's
                config), or ``None`` for the saved scheduler.
            guidance: default guidance, see :class:`EditPipeline`; ``None`` reads the folder's
                ``guidance_config.json`` (the scales the model was tuned for, written by
                :meth:`save_pretrained`), or the paper's scales without it.
            editing: default masking, see :class:`EditPipeline`; ``None`` reads the folder's
                ``editing_config.json``, or edits the whole image without it.
            allow_pickle: allow ``*.bin`` weights, which can run code when loaded.
            variant: weights variant, e.g. ``"fp16"``.
            revision: hub revision.
            cache_dir: hub cache folder.
            is_cosxl_edit: SDXL: scale the image condition as CosXL Edit does; ``None`` reads
                ``model_index.json`` (which :meth:`save_pretrained` writes it to; CosXL's own
                repository does not say, so pass ``True`` for it).
        """
        if is_cosxl_edit is not None and not isinstance(is_cosxl_edit, bool):
            raise TypeError(f"is_cosxl_edit must be True, False or None, got {is_cosxl_edit!r}")
        if names_default(path_or_hub_id):
            path_or_hub_id = default_model_dir()
            # Its weights are stored in float16; CPUs need float32 unless asked otherwise.
            torch_dtype = torch_dtype or torch.float32
        is_local = Path(path_or_hub_id).is_dir()
        if is_local:  # a bad file is refused before the weights load
            if guidance is None:
                guidance = load_guidance_config(path_or_hub_id)
            if editing is None:
                editing = load_editing_config(path_or_hub_id)
        parts = load_components(
            path_or_hub_id,
            torch_dtype=torch_dtype,
            scheduler=scheduler,
            allow_pickle=allow_pickle,
            variant=variant,
            revision=revision,
            cache_dir=cache_dir,
        )
        if not is_local:
            hub = str(path_or_hub_id)
            if guidance is None:
                folder = _hub_folder_with(
                    hub, GUIDANCE_CONFIG_NAME, revision=revision, cache_dir=cache_dir
                )
                guidance = None if folder is None else load_guidance_config(folder)
            if editing is None:
                folder = _hub_folder_with(
                    hub, EDITING_CONFIG_NAME, revision=revision, cache_dir=cache_dir
                )
                editing = None if folder is None else load_editing_config(folder)
        if is_cosxl_edit is not None:
            parts["is_cosxl_edit"] = is_cosxl_edit
        return cls(**parts, guidance=guidance, editing=editing)

    def to_diffusers(self, *, unet: Any = None) -> Any:
        """Returns diffusers' ``StableDiffusionInstructPix2PixPipeline`` (SDXL:
        ``StableDiffusionXLInstructPix2PixPipeline``) on the same modules (``unet`` instead of
        the pipeline's, if given)."""
        from diffusers import StableDiffusionInstructPix2PixPipeline

        unet = self.unet if unet is None else unet

        if self.is_xl:
            from diffusers import StableDiffusionXLInstructPix2PixPipeline

            return StableDiffusionXLInstructPix2PixPipeline(
                vae=self.vae,
                text_encoder=self.text_encoder,
                text_encoder_2=self.text_encoder_2,
                tokenizer=self.tokenizer,
                tokenizer_2=self.tokenizer_2,
                unet=unet,
                scheduler=self.scheduler,
                force_zeros_for_empty_prompt=self.force_zeros_for_empty_prompt,
                add_watermarker=False,
                is_cosxl_edit=self.is_cosxl_edit,
            )

        return StableDiffusionInstructPix2PixPipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=unet,
            scheduler=self.scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )

    def save_pretrained(self, directory: str | Path) -> Path:
        """Writes the pipeline in the diffusers layout (safetensors), which diffusers loads too,
        its default guidance as ``guidance_config.json`` and its default masking as
        ``editing_config.json``. A CosXL-style editor's ``is_cosxl_edit`` goes into
        ``model_index.json``, where diffusers' pipeline reads it too. With LoRA adapters loaded,
        the UNet is saved with them merged (the pipeline keeps them unmerged)."""
        from instructedit.lora import has_lora, merged_unet

        path = Path(directory)
        unet = merged_unet(self.unet) if has_lora(self.unet) else None
        self.to_diffusers(unet=unet).save_pretrained(path, safe_serialization=True)
        if self.is_cosxl_edit:  # diffusers does not store it
            index_file = path / "model_index.json"
            index = json.loads(index_file.read_text(encoding="utf-8"))
            write_json_atomic(index_file, {**index, "is_cosxl_edit": True})
        save_guidance_config(self.guidance, path)
        save_editing_config(self.editing, path)
        return path

    def to(
        self, device: str | torch.device | None = None, dtype: torch.dtype | None = None
    ) -> EditPipeline:
        """Moves the models to ``device`` and/or casts them to ``dtype``; returns ``self``."""
        if device is not None:
            self._check_not_offloaded(f"move it to {device}")
        move_models(self._models(), device, dtype)
        return self

    def compile(
        self, *, channels_last: bool = False, fuse_qkv: bool = False, **compile_kwargs: Any
    ) -> EditPipeline:
        """Compiles the UNet's forward with ``torch.compile`` (kwargs passed on, e.g.
        ``mode="reduce-overhead"`` to capture CUDA graphs, ``mode="max-autotune"``); returns
        ``self``.

        Only this pipeline's denoising calls go through the compiled function; saving and
        ``to_diffusers`` keep working on the module.

        Args:
            channels_last: store the UNet's weights channels-last first (faster convolutions on
                tensor cores).
            fuse_qkv: fuse each self-attention's query, key and value projections into one
                matrix multiplication first (diffusers' ``fuse_qkv_projections``; it replaces the
                attention processors, so attention controllers and slicing no longer apply).
            **compile_kwargs: ``torch.compile``'s arguments.
        """
        if channels_last:
            self.unet.to(memory_format=torch.channels_last)
        if fuse_qkv:
            self.unet.fuse_qkv_projections()
        self._unet_forward = torch.compile(self.unet, **compile_kwargs)
        return self

    def load_lora_weights(
        self, source: str | Path, *, adapter_name: str = "default"
    ) -> EditPipeline:
        """Loads a LoRA adapter onto the UNet: an adapter folder a LoRA training run exported
        (its ``lora`` subfolder; the trained input convolution too, when it holds one) or a
        diffusers-format ``.safetensors`` file. The adapter must fit this base model: one trained
        on another is refused, naming the first layer that differs. Returns ``self``.

        See :mod:`instructedit.lora`; :meth:`unload_lora_weights` takes it off again.
        """
        from instructedit.lora import load_lora

        restore = load_lora(self.unet, source, adapter_name=adapter_name)
        # The first loaded convolution is the base's: keep it for unloading.
        self._lora_restore = {**restore, **self._lora_restore}
        return self

    def unload_lora_weights(self) -> EditPipeline:
        """Removes every loaded LoRA adapter (and a loaded input convolution): the base model's
        weights come back exactly. Returns ``self``."""
        from instructedit.lora import unload_lora

        unload_lora(self.unet, self._lora_restore)
        self._lora_restore = {}
        return self

    # ----------------------------------------------------------------------------- encoding

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """Returns text embeddings ``[N, T, D]`` for ``texts`` (padded to the tokenizer's max;
        SDXL: both encoders' penultimate features side by side)."""
        return self.encode_prompt(texts)[0]

    def encode_prompt(self, texts: Sequence[str]) -> tuple[Tensor, Tensor | None]:
        """Returns the text embeddings ``[N, T, D]`` and, for SDXL, the pooled embedding
        ``[N, P]`` of the second encoder (``None`` for SD 1.x/2.x)."""
        return text_embeddings(self, texts)

    def encode_image(self, pixels: Tensor) -> Tensor:
        """Returns the image conditioning latents ``[N, 4, h, w]``: the VAE posterior's mode,
        *not* multiplied by ``scaling_factor`` (as the official code and diffusers do).

        Args:
            pixels: ``[N, 3, H, W]`` in [-1, 1].
        """

        def run(vae: Any, dtype: torch.dtype) -> Tensor:
            return vae.encode(pixels.to(module_device(vae), dtype)).latent_dist.mode()

        return run_vae(self.vae, run, "encoding", upcast=self.is_xl).to(self.dtype)

    def decode_latents(self, latents: Tensor) -> Tensor:
        """Decodes latents ``[N, 4, h, w]`` to pixels ``[N, 3, H, W]`` in about [-1, 1] (float32)."""
        return decode_latents(self.vae, latents, upcast=self.is_xl)

    # --------------------------------------------------------------------------------- call

    def __call__(
        self,
        image: ImageInput | Sequence[ImageInput],
        instruction: str | Sequence[str],
        num_inference_steps: int = 100,
        guidance_scale: float | None = None,
        image_guidance_scale: float | None = None,
        negative_instruction: str | Sequence[str] | None = None,
        num_images_per_instruction: int = 1,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        output_type: OutputType = "pil",
        callback_on_step_end: PipelineCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        *,
        latents: Tensor | None = None,
        image_latents: Tensor | None = None,
        eta: float = 0.0,
        resize: ResizeMode = "multiple_of_8",
        resolution: int = 512,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        mask_image: MaskInput | Sequence[MaskInput] | Literal["auto", "none"] | None = None,
        keep_unmasked_pixels: bool | None = None,
        mask_method: MaskMethod | None = None,
        mask_threshold: float | None = None,
        mask_feather: float | None = None,
        cache_interval: int | None = None,
        cache_depth: int = 1,
        speed: SpeedPreset | None = None,
        original_size: tuple[int, int] | None = None,
        crops_coords_top_left: tuple[int, int] = (0, 0),
        target_size: tuple[int, int] | None = None,
        progress: bool = True,
    ) -> EditOutput:
        """Edits ``image`` by ``instruction``.

        The argument names are diffusers' (``prompt`` is called ``instruction`` here), so
        switching from ``StableDiffusionInstructPix2PixPipeline`` is a one-line change.

        Args:
            image: one image or a list (see :data:`~instructedit.pipeline.ImageInput`). Sides are
                floored to a multiple of 8 (the VAE's factor) by default; see ``resize``.
            instruction: one instruction or a list. A list of images and a list of instructions
                pair up element-wise; a single one of either is broadcast.
            num_inference_steps: denoising steps (official default 100).
            guidance_scale: s_T, instruction guidance; ``None`` uses ``self.guidance`` (the
                model's stored scale, else the paper's 7.5; 5 for SDXL).
            image_guidance_scale: s_I, image guidance; ``None`` uses ``self.guidance`` (the
                model's stored scale, else the paper's 1.5).
                Unlike diffusers, which turns all guidance off when s_I < 1, the paper's formula
                is always applied.
            negative_instruction: text for the ∅ branches instead of the empty string.
            num_images_per_instruction: samples per (image, instruction) pair.
            generator: a generator, or one per output image, for reproducible sampling.
            output_type: ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"``.
            callback_on_step_end: called after each step, see :data:`PipelineCallback`.
            callback_on_step_end_tensor_inputs: tensors the callback receives
                (``"latents"``, ``"noise_pred"``).
            latents: initial noise ``[N, 4, h, w]`` instead of drawing it.
            image_latents: the image condition as latents ``[N, 4, h, w]``, unscaled (as
                :meth:`encode_image` returns them), instead of encoding ``image``; one per edit or
                one for all, at the prepared image's size divided by :attr:`vae_scale_factor`.
                ``image`` still gives the size and the pixels ``keep_unmasked_pixels`` pastes
                back. An :class:`~instructedit.pipeline.EditSession` chaining in latents passes
                the previous turn's final latents divided by ``vae.config.scaling_factor``.
            eta: DDIM's η (ignored by other schedulers).
            resize: ``"multiple_of_8"`` (diffusers: the input's own size, sides floored to a
                multiple of 8), ``"native"`` (the long side scaled to :attr:`native_size`, the
                aspect ratio kept) or ``"official"`` (the official CLI's resize and crop at
                ``resolution``). An image of more than 16× the native area logs a warning: the
                cost grows with the square of the area.
            resolution: target long side for ``resize="official"``.
            max_pixels: largest accepted input (width × height), checked before any model runs.
            mask_image: where the edit may act (white) and where the input is kept (black),
                one mask or one per image (see :data:`~instructedit.pipeline.MaskInput`; any
                size of the image's aspect ratio; soft masks allowed). After every step the
                latents outside the mask are reset to the input's latents noised to that step
                (blended latent diffusion). ``"auto"`` finds the mask from the instruction first
                (``mask_method``); ``"none"`` edits the whole image; ``None`` (default) uses the
                model's stored setting (``pipe.editing``, read from its ``editing_config.json``: the
                whole image for a model without one, ``"auto"`` for the embedded default).
            keep_unmasked_pixels: with a mask, also paste the input's pixels back outside it
                after decoding, along an edge feathered by ``mask_feather``; ``None``: the
                model's stored setting (default ``False``).
            mask_method: how ``"auto"`` finds the mask (see
                :data:`~instructedit.pipeline.MaskMethod`); ``None``: the stored setting.
            mask_threshold: for ``"auto"``, the share of the strongest response kept, in [0, 1];
                ``None``: the stored setting (default 0.5).
            mask_feather: Gaussian sigma, in pixels, of the pasted edge (0: a hard edge);
                ``None``: the stored setting (default 1).
            cache_interval: feature caching (DeepCache, :class:`~instructedit.caching.DeepCacheUNet`):
                one step in ``cache_interval`` runs the whole UNet, the steps between reuse its
                deep features; 1 (default) runs the whole UNet every step, exactly as before.
            cache_depth: how many of the UNet's shallowest blocks the cached steps run.
            speed: a named speed preset instead of ``cache_interval`` (see
                :data:`~instructedit.pipeline.SPEED_PRESETS`): ``"exact"``, ``"balanced"`` or
                ``"fast"``.
            original_size: SDXL's micro-conditioning, ``(height, width)``: the size the image
                is said to have had before resizing (default: the edited size).
            crops_coords_top_left: SDXL: the crop's top-left corner, ``(top, left)``.
            target_size: SDXL: the size asked for, ``(height, width)`` (default: the edited
                size).
            progress: show a progress bar.

        Returns:
            :class:`EditOutput` with the edited images (and the masks used, if any).
        """
        # Validate everything before any model runs.
        images_in = as_list(image, "image")
        instructions = check_texts(as_list(instruction, "instruction"), "instruction")
        check_positive_int(num_inference_steps, "num_inference_steps")
        check_positive_int(num_images_per_instruction, "num_images_per_instruction")
        for name, value in (
            ("guidance_scale", guidance_scale),
            ("image_guidance_scale", image_guidance_scale),
        ):
            if value is not None:
                check_scale(name, value)
        check_scale("eta", eta)
        check_output_type(output_type)
        micro = {
            "original_size": original_size,
            "crops_coords_top_left": crops_coords_top_left,
            "target_size": target_size,
        }
        for name, pair in micro.items():
            if pair is None and name != "crops_coords_top_left":
                continue
            if (
                not isinstance(pair, Sequence)
                or len(pair) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in pair)
            ):
                raise ValueError(f"{name} must be a pair of non-negative ints, got {pair!r}")
        if not self.is_xl and (
            original_size is not None
            or target_size is not None
            or tuple(crops_coords_top_left) != (0, 0)
        ):
            raise ValueError(
                "original_size, crops_coords_top_left and target_size are SDXL's "
                "micro-conditioning; this editor has Stable Diffusion 1.x/2.x's layout"
            )
        if speed is not None:
            if cache_interval is not None:
                raise ValueError("give speed or cache_interval, not both")
            if speed not in SPEED_PRESETS:
                raise ValueError(f"speed must be one of {list(SPEED_PRESETS)}, got {speed!r}")
            cache_interval = SPEED_PRESETS[speed]
        cache_interval = 1 if cache_interval is None else cache_interval
        forward = (
            DeepCacheUNet(self.unet, interval=cache_interval, depth=cache_depth)
            if cache_interval != 1
            else self._unet_forward
        )
        count = pair_count(images_in, "images", instructions, "instructions")
        negatives = broadcast(
            check_texts(
                as_list(
                    "" if negative_instruction is None else negative_instruction,
                    "negative_instruction",
                ),
                "negative_instruction",
                allow_empty=True,
            ),
            count,
            "negative_instruction",
        )
        guidance = self.guidance.with_scales(
            text_scale=guidance_scale, image_scale=image_guidance_scale
        )
        multiple = max(8, self.vae_scale_factor)
        if resize == "native":
            resolution = self.native_size
        loaded = [
            load_image(item, argument=f"image[{i}]", max_pixels=max_pixels)
            for i, item in enumerate(images_in)
        ]
        prepared = [
            prepare_image(
                item,
                resize=resize,
                multiple=multiple,
                resolution=resolution,
                argument=f"image[{i}]",
            )
            for i, item in enumerate(loaded)
        ]
        if len({item.size for item in prepared}) > 1:
            raise ValueError(
                f"images of one call must share a size after resizing, got {sorted({p.size for p in prepared})}; "
                "edit them in separate calls"
            )
        self._check_image_latents(image_latents, prepared[0].size, count)
        self._check_cost(
            prepared[0].size,
            count * num_images_per_instruction,
            num_inference_steps,
            guidance_scale,
            image_guidance_scale,
        )
        stored = self.editing
        if mask_image is None:
            mask_image = stored.mask_image
        elif isinstance(mask_image, str) and mask_image == "none":
            mask_image = None
        if keep_unmasked_pixels is None:
            keep_unmasked_pixels = stored.keep_unmasked_pixels
        mask_method = stored.mask_method if mask_method is None else mask_method
        mask_threshold = stored.mask_threshold if mask_threshold is None else mask_threshold
        mask_feather = stored.mask_feather if mask_feather is None else mask_feather
        pixel_masks = self._prepare_masks(
            mask_image, loaded, count, resize=resize, multiple=multiple, resolution=resolution
        )
        if mask_image is not None:
            if not isinstance(keep_unmasked_pixels, bool):
                raise TypeError(
                    f"keep_unmasked_pixels must be True or False, got {keep_unmasked_pixels!r}"
                )
            check_scale("mask_feather", mask_feather)
            if mask_method != "diffedit":
                raise ValueError(f"mask_method must be 'diffedit', got {mask_method!r}")
            check_scale("mask_threshold", mask_threshold)
            if mask_threshold > 1:
                raise ValueError(f"mask_threshold must be in [0, 1], got {mask_threshold}")
        prepared = broadcast(prepared, count, "image")
        instructions = broadcast(instructions, count, "instruction")
        total = count * num_images_per_instruction
        if isinstance(generator, Sequence) and len(generator) != total:
            raise ValueError(f"got {len(generator)} generators for {total} output images")

        # Conditioning: one embedding per output image, grouped by edit.
        repeat = num_images_per_instruction
        pixels = pil_to_tensor(prepared).to(self.device)
        if image_latents is None:
            image_latents = self.encode_image(pixels)
        else:
            image_latents = image_latents.to(self.device, self.dtype).expand(count, -1, -1, -1)
        if self.is_cosxl_edit:
            image_latents = image_latents * self.vae.config.scaling_factor
        image_latents = image_latents.repeat_interleave(repeat, dim=0)
        added: dict[str, dict[str, Tensor]] = {}
        if self.is_xl:
            zero_negative = negative_instruction is None and self.force_zeros_for_empty_prompt
            hidden, pooled = self.encode_prompt(
                instructions if zero_negative else instructions + negatives
            )
            assert pooled is not None
            if zero_negative:
                hidden = torch.cat([hidden, torch.zeros_like(hidden)])
                pooled = torch.cat([pooled, torch.zeros_like(pooled)])
            text, negative = hidden.repeat_interleave(repeat, dim=0).chunk(2)
            pooled_text, pooled_negative = pooled.repeat_interleave(repeat, dim=0).chunk(2)
            edited_size = (int(pixels.shape[2]), int(pixels.shape[3]))
            ids = (
                sdxl_time_ids(
                    tuple(original_size or edited_size),  # type: ignore[arg-type]
                    tuple(crops_coords_top_left),  # type: ignore[arg-type]
                    tuple(target_size or edited_size),  # type: ignore[arg-type]
                    unet=self.unet,
                    pooled_dim=int(pooled.shape[-1]),
                )
                .to(self.device, self.dtype)
                .expand(total, -1)
            )
            added = {
                "full": {"text_embeds": pooled_text, "time_ids": ids},
                "image": {"text_embeds": pooled_negative, "time_ids": ids},
                "uncond": {"text_embeds": pooled_negative, "time_ids": ids},
            }
        else:
            text, negative = (
                self.encode_text(instructions + negatives).repeat_interleave(repeat, dim=0).chunk(2)
            )
        conditioning = {
            "full": BranchConditioning(text, image_latents, added.get("full")),
            "image": BranchConditioning(negative, image_latents, added.get("image")),
            "uncond": BranchConditioning(
                negative, torch.zeros_like(image_latents), added.get("uncond")
            ),
        }

        if is_distilled(self.unet):  # one pass a step, told the scales
            forward, guidance = self._distilled(forward, guidance)
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        shape = (total, self.vae.config.latent_channels, *image_latents.shape[2:])
        if latents is None:
            from diffusers.utils.torch_utils import randn_tensor

            latents = randn_tensor(shape, generator=generator, device=self.device, dtype=self.dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
        noise = latents.to(self.device, self.dtype)
        latents = noise * self.scheduler.init_noise_sigma
        blend = None
        if mask_image is not None:
            # CosXL's image condition is already scaled.
            scale = 1.0 if self.is_cosxl_edit else self.vae.config.scaling_factor
            clean = image_latents * scale
            if pixel_masks is None:  # "auto"
                mask_forward: Callable[..., Any] = self._unet_forward
                if added:  # SDXL: the mask's passes stack (instruction, ∅) like the branches
                    mask_forward = _with_added(
                        self._unet_forward,
                        {
                            key: torch.cat([added["full"][key], added["image"][key]])
                            for key in added["full"]
                        },
                    )

                with torch.inference_mode():
                    cells = diffedit_mask(
                        mask_forward,
                        self.scheduler,
                        clean,
                        image_latents,
                        text,
                        negative,
                        threshold=mask_threshold,
                        generator=generator
                        if generator is None or isinstance(generator, torch.Generator)
                        else list(generator),
                    )
                pixel_masks = F.interpolate(cells, size=pixels.shape[2:], mode="bilinear")
            else:
                pixel_masks = pixel_masks.to(self.device).repeat_interleave(repeat, dim=0)
                cells = latent_mask(pixel_masks, (image_latents.shape[2], image_latents.shape[3]))
            blend = LatentBlend(mask=cells.to(self.dtype), source=clean, noise=noise)

        step_callback = None
        if callback_on_step_end is not None:
            pipeline_callback = callback_on_step_end

            def step_callback(
                index: int, timestep: Tensor, tensors: dict[str, Tensor]
            ) -> Mapping[str, Any] | None:
                return pipeline_callback(self, index, timestep, tensors)

        # inference_mode is measurably faster than no_grad for many small ops; results are
        # cloned on the way out so callers get ordinary tensors.
        with torch.inference_mode():
            final = denoise(
                forward,
                self.scheduler,
                guidance,
                latents,
                conditioning,
                step_kwargs=scheduler_step_kwargs(self.scheduler, generator, eta),
                callback_on_step_end=step_callback,
                callback_tensor_inputs=callback_on_step_end_tensor_inputs,
                blend=blend,
                progress=progress,
            )
        final = final.clone()
        self.maybe_free_model_hooks()
        masks = None if pixel_masks is None else pixel_masks.float().cpu()
        if output_type == "latent":
            return EditOutput(images=final, masks=masks)
        decoded = self.decode_latents(final)
        if masks is not None and keep_unmasked_pixels:
            source = pixels.float().repeat_interleave(repeat, dim=0).to(decoded.device)
            edge = feather_mask(masks.to(decoded.device), float(mask_feather))
            decoded = paste_outside(decoded, source, edge)
        return EditOutput(images=tensor_to_output(decoded, output_type), masks=masks)
