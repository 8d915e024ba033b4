"""Stable Diffusion parts in the diffusers layout: loading them, and running their text and VAE halves.

Shared by :class:`~instructedit.pipeline.EditPipeline` and
:class:`~instructedit.p2p.PromptToPrompt` so both load, encode and decode the same way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from instructedit.clip_tokenizer import CLIP_CONTEXT_LENGTH, CLIP_VOCAB_SIZE
from instructedit.seeding import seeded

__all__ = [
    "COMPONENTS",
    "SD_SCHEDULER_CONFIG",
    "clip_text_encoder",
    "decode_latents",
    "encode_prompts",
    "load_components",
    "move_models",
    "native_size",
    "run_vae",
    "vae_scale_factor",
]

logger = logging.getLogger(__name__)

COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
_MODEL_COMPONENTS = ("unet", "vae", "text_encoder")

SD_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "prediction_type": "epsilon",
}
"""The noise schedule of Stable Diffusion v1 (every scheduler of the tiny components and the ShapesWorld models uses it)."""


def _check_weights_present(folder: Path, component: str, allow_pickle: bool) -> None:
    files = list((folder / component).iterdir())
    if any(file.name.endswith(".safetensors") for file in files):
        return
    pickled = [file.name for file in files if file.suffix in (".bin", ".pt", ".pth", ".ckpt")]
    if pickled and not allow_pickle:
        raise ValueError(
            f"{folder / component} holds only pickle weights ({', '.join(pickled)}); loading pickle "
            "can run arbitrary code: pass allow_pickle=True if you trust the source"
        )
    if not pickled:
        raise FileNotFoundError(
            f"{folder / component} holds no weights (*.safetensors or, with allow_pickle, *.bin)"
        )


def _transformers_dtype_kwargs(dtype: torch.dtype | None) -> dict[str, Any]:
    if dtype is None:
        return {}
    import transformers
    from packaging.version import Version

    key = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    return {key: dtype}


def load_components(
    path_or_hub_id: str | Path,
    *,
    torch_dtype: torch.dtype | None = None,
    scheduler: str | Any | None = None,
    allow_pickle: bool = False,
    variant: str | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Loads ``unet``, ``vae``, ``text_encoder``, ``tokenizer`` and ``scheduler`` from a pipeline
    folder or hub id in the diffusers layout.

    A local folder is checked first: every component folder must exist and hold safetensors
    weights (pickle ``*.bin`` only with ``allow_pickle=True``), or the error names what is
    missing before anything loads.

    Args:
        path_or_hub_id: a local folder or a hub repository id.
        torch_dtype: dtype of the models.
        scheduler: an instance, a name from :data:`~instructedit.sampling.SCHEDULERS` (built from
            the saved scheduler's config), or ``None`` for the saved scheduler.
        allow_pickle: allow pickle weights, which can run code when loaded.
        variant: weights variant, e.g. ``"fp16"``.
        revision: hub revision.
        cache_dir: hub cache folder.

    Raises:
        FileNotFoundError: ``path_or_hub_id`` is neither a folder nor a hub id, or a folder
            lacks a component or its weights.
        OSError: a hub id that is not a local folder could not be loaded (offline, or not a
            pipeline repository).
    """
    import diffusers
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    from instructedit.sampling import scheduler_from_name

    local = Path(path_or_hub_id)
    is_local = local.is_dir()
    text = str(path_or_hub_id)
    if not is_local and (local.is_absolute() or text.startswith(".") or local.exists()):
        raise FileNotFoundError(f"path_or_hub_id: no such folder: {path_or_hub_id}")
    if not is_local and not _is_hub_id(text):
        raise FileNotFoundError(
            f"path_or_hub_id: no such folder: {path_or_hub_id} (nor a hub id, which is 'name' "
            "or 'owner/name')"
        )
    if is_local:
        missing = [name for name in COMPONENTS if not (local / name).is_dir()]
        if missing:
            raise FileNotFoundError(
                f"{local} is not a complete pipeline folder: missing component folder(s) {missing}; "
                f"expected {list(COMPONENTS)} (the diffusers layout)"
            )
        for name in _MODEL_COMPONENTS:
            _check_weights_present(local, name, allow_pickle)
    source = str(local) if is_local else text
    common: dict[str, Any] = {"revision": revision, "cache_dir": cache_dir}
    weights: dict[str, Any] = {
        "use_safetensors": None if allow_pickle else True,
        "variant": variant,
    }
    try:
        unet = UNet2DConditionModel.from_pretrained(
            source, subfolder="unet", torch_dtype=torch_dtype, **weights, **common
        )
    except OSError as error:
        if is_local:
            raise
        raise OSError(
            f"path_or_hub_id: {text!r} is not a local folder, and loading it as a hub id failed "
            f"(offline, or not a pipeline repository?): {error}"
        ) from error
    vae = AutoencoderKL.from_pretrained(
        source, subfolder="vae", torch_dtype=torch_dtype, **weights, **common
    )
    text_encoder = CLIPTextModel.from_pretrained(
        source,
        subfolder="text_encoder",
        **_transformers_dtype_kwargs(torch_dtype),
        **weights,
        **common,
    )
    tokenizer = AutoTokenizer.from_pretrained(source, subfolder="tokenizer", **common)
    if scheduler is None or isinstance(scheduler, str):
        if is_local:
            config_path = local / "scheduler" / "scheduler_config.json"
        else:
            from huggingface_hub import hf_hub_download

            config_path = Path(
                hf_hub_download(
                    source,
                    "scheduler_config.json",
                    subfolder="scheduler",
                    revision=revision,
                    cache_dir=cache_dir,
                )
            )
        class_name = json.loads(config_path.read_text(encoding="utf-8"))["_class_name"]
        saved = getattr(diffusers, class_name).from_pretrained(
            source, subfolder="scheduler", **common
        )
        scheduler = saved if scheduler is None else scheduler_from_name(scheduler, saved.config)
    return {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": tokenizer,
        "scheduler": scheduler,
    }


def _is_hub_id(text: str) -> bool:
    """Whether ``text`` could name a hub repository (``name`` or ``owner/name``, by
    huggingface_hub's own rules)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id  # type: ignore[attr-defined]

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def vae_scale_factor(vae: Any) -> int:
    """Pixels per latent along each side of an ``AutoencoderKL`` (8 for Stable Diffusion)."""
    return int(2 ** (len(vae.config.block_out_channels) - 1))


def native_size(unet: Any, vae: Any) -> int:
    """The side, in pixels, a UNet was trained at: its ``sample_size`` (latent cells) times the
    VAE's factor (512 for SD 1.5; 768 or 1024 for SDXL editors)."""
    sample = unet.config.sample_size
    if sample is None:  # a UNet built without one: the VAE's own, in pixels
        return int(vae.config.sample_size)
    if isinstance(sample, list | tuple):
        sample = max(sample)
    return int(sample) * vae_scale_factor(vae)


def move_models(
    models: Sequence[Any], device: str | torch.device | None, dtype: torch.dtype | None
) -> None:
    """Moves and/or casts every model."""
    for model in models:
        model.to(device=device, dtype=dtype)


def encode_prompts(
    tokenizer: Any,
    text_encoder: Any,
    texts: Sequence[str],
    *,
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor:
    """Returns text embeddings ``[N, T, D]`` (padded to the tokenizer's maximum, truncated with a
    warning), as diffusers' pipelines compute them."""
    tokens = tokenizer(
        list(texts),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    untruncated = tokenizer(list(texts), padding="longest", return_tensors="pt").input_ids
    if untruncated.shape[-1] > tokens.input_ids.shape[-1]:
        logger.warning("prompts longer than %d tokens were truncated", tokenizer.model_max_length)
    with torch.no_grad():
        from instructedit._memory import module_device

        hidden = text_encoder(tokens.input_ids.to(module_device(text_encoder)))[0]
    return hidden.to(dtype=dtype, device=device)


def run_vae(vae: Any, run: Callable[[Any, torch.dtype], Tensor], what: str) -> Tensor:
    """Runs ``run(vae, dtype)`` in the VAE's dtype; if half precision overflows (the "black
    image" bug), reruns it in float32."""
    dtype = vae.dtype
    with torch.no_grad():
        result = run(vae, dtype)
        if dtype in (torch.float16, torch.bfloat16) and not torch.isfinite(result).all():
            logger.warning("the VAE overflowed in %s while %s; recomputing in float32", dtype, what)
            vae.to(torch.float32)
            try:
                result = run(vae, torch.float32)
            finally:
                vae.to(dtype)
    return result


def decode_latents(vae: Any, latents: Tensor) -> Tensor:
    """Decodes latents ``[N, C, h, w]`` to pixels ``[N, 3, H, W]`` in about [-1, 1] (float32)."""

    def run(model: Any, dtype: torch.dtype) -> Tensor:
        from instructedit._memory import module_device

        scaled = latents.to(module_device(model), dtype) / model.config.scaling_factor
        return model.decode(scaled, return_dict=False)[0]

    return run_vae(vae, run, "decoding").float()


def clip_text_encoder(*, width: int, layers: int = 2, heads: int = 4, seed: int = 0) -> Any:
    """Returns a seeded ``CLIPTextModel`` over the real CLIP vocabulary (77 positions), in eval
    mode, with ``width``-dimensional outputs and a ``2 × width`` feed-forward layer."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=CLIP_VOCAB_SIZE,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=CLIP_CONTEXT_LENGTH,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        projection_dim=width,
    )
    with seeded(seed):
        encoder = CLIPTextModel(config)
    return encoder.eval()
