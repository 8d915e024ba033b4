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
    "COMPONENTS_XL",
    "SD_SCHEDULER_CONFIG",
    "check_text_parts",
    "clip_text_encoder",
    "decode_latents",
    "encode_prompts",
    "encode_prompts_of",
    "encode_prompts_xl",
    "is_sdxl_unet",
    "load_components",
    "move_models",
    "native_size",
    "run_vae",
    "sdxl_time_ids",
    "text_embeddings",
    "vae_scale_factor",
]

logger = logging.getLogger(__name__)

COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
COMPONENTS_XL = (*COMPONENTS, "text_encoder_2", "tokenizer_2")
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
    folder or hub id in the diffusers layout; for an SDXL pipeline (recognised by its second text
    encoder) also ``text_encoder_2``, ``tokenizer_2`` and the ``model_index.json`` settings
    ``force_zeros_for_empty_prompt`` and ``is_cosxl_edit``.

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
    from transformers import AutoTokenizer, CLIPTextModel, CLIPTextModelWithProjection

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
    common: dict[str, Any] = {"revision": revision, "cache_dir": cache_dir}
    index = _model_index(local if is_local else text, is_local, common)
    xl = _is_xl_layout(local, is_local, index)
    expected = COMPONENTS_XL if xl else COMPONENTS
    # An SDXL refiner has no first text encoder: model_index.json names it null.
    absent = {name for name in expected if name in index and index[name][0] is None}
    if is_local:
        missing = [name for name in expected if name not in absent and not (local / name).is_dir()]
        if missing:
            found = sorted(entry.name for entry in local.iterdir() if entry.is_dir())
            raise FileNotFoundError(
                f"{local} is not a complete {'SDXL' if xl else 'Stable Diffusion'} pipeline "
                f"folder: missing component folder(s) {missing}; expected {list(expected)} (the "
                f"diffusers layout of Stable Diffusion 1.x/2.x {list(COMPONENTS)}, or of SDXL "
                f"{list(COMPONENTS_XL)}), found {found}"
            )
        for name in expected:
            if name in (*_MODEL_COMPONENTS, "text_encoder_2") and name not in absent:
                _check_weights_present(local, name, allow_pickle)
    source = str(local) if is_local else text
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
    if is_sdxl_unet(unet) != xl:
        raise ValueError(
            f"{source}: the folder has the {'SDXL' if xl else 'Stable Diffusion 1.x/2.x'} layout "
            f"but its UNet has addition_embed_type={unet.config.addition_embed_type!r} "
            f"(SDXL's UNets have 'text_time', SD 1.x/2.x ones none)"
        )
    vae = AutoencoderKL.from_pretrained(
        source, subfolder="vae", torch_dtype=torch_dtype, **weights, **common
    )
    text_kwargs = {**_transformers_dtype_kwargs(torch_dtype), **weights, **common}
    parts: dict[str, Any] = {"unet": unet.eval(), "vae": vae.eval()}
    if "text_encoder" in absent:
        parts["text_encoder"], parts["tokenizer"] = None, None
    else:
        parts["text_encoder"] = CLIPTextModel.from_pretrained(
            source, subfolder="text_encoder", **text_kwargs
        ).eval()
        parts["tokenizer"] = AutoTokenizer.from_pretrained(source, subfolder="tokenizer", **common)
    if xl:
        parts["text_encoder_2"] = CLIPTextModelWithProjection.from_pretrained(
            source, subfolder="text_encoder_2", **text_kwargs
        ).eval()
        parts["tokenizer_2"] = AutoTokenizer.from_pretrained(
            source, subfolder="tokenizer_2", **common
        )
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
    parts["scheduler"] = scheduler
    if xl:
        parts["force_zeros_for_empty_prompt"] = bool(
            index.get("force_zeros_for_empty_prompt", True)
        )
        parts["is_cosxl_edit"] = bool(index.get("is_cosxl_edit", False))
    return parts


def _model_index(source: Path | str, is_local: bool, common: dict[str, Any]) -> dict[str, Any]:
    """A pipeline's ``model_index.json`` (``{}`` for a local folder without one)."""
    if is_local:
        file = Path(source) / "model_index.json"
        if not file.is_file():
            return {}
    else:
        from huggingface_hub import hf_hub_download

        try:
            file = Path(hf_hub_download(str(source), "model_index.json", **common))
        except Exception:  # offline or not a pipeline: the UNet's loading says why
            return {}
    try:
        index = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{file} is not valid JSON: {error}") from error
    if not isinstance(index, dict):
        raise ValueError(f"{file} must hold a JSON object, got {type(index).__name__}")
    return index


def _is_xl_layout(local: Path, is_local: bool, index: dict[str, Any]) -> bool:
    """Whether a pipeline folder has SDXL's layout (a second text encoder)."""
    if "text_encoder_2" in index:
        return True
    return is_local and (local / "text_encoder_2").is_dir()


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
    from instructedit._memory import module_device

    ids = _token_ids(tokenizer, texts)
    with torch.no_grad():
        hidden = text_encoder(ids.to(module_device(text_encoder)))[0]
    return hidden.to(dtype=dtype, device=device)


def _token_ids(tokenizer: Any, texts: Sequence[str]) -> Tensor:
    """Token ids ``[N, T]`` padded to the tokenizer's maximum; longer texts are truncated with
    a warning."""
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
    ids: Tensor = tokens.input_ids
    return ids


def is_sdxl_unet(unet: Any) -> bool:
    """Whether ``unet`` has Stable Diffusion XL's micro-conditioning (``addition_embed_type``
    ``"text_time"``: the pooled text embedding and six size/crop ids beside the timestep)."""
    return getattr(unet.config, "addition_embed_type", None) == "text_time"


def encode_prompts_xl(
    tokenizers: Sequence[Any],
    text_encoders: Sequence[Any],
    texts: Sequence[str],
    *,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    """Stable Diffusion XL's text conditioning, as diffusers' SDXL pipelines compute it: each
    encoder's penultimate hidden states (``[N, T, D_k]``), side by side (``[N, T, ΣD_k]``), and
    the pooled, projected embedding of the last encoder (``[N, P]``)."""
    hidden_states = []
    pooled: Tensor | None = None
    from instructedit._memory import module_device

    for tokenizer, text_encoder in zip(tokenizers, text_encoders, strict=True):
        ids = _token_ids(tokenizer, texts)
        with torch.no_grad():
            output = text_encoder(ids.to(module_device(text_encoder)), output_hidden_states=True)
        if output[0].ndim == 2:  # a CLIPTextModelWithProjection's text_embeds
            pooled = output[0]
        hidden_states.append(output.hidden_states[-2])
    if pooled is None:
        raise ValueError(
            "no text encoder gives a pooled embedding: SDXL's last text encoder must be a "
            "CLIPTextModelWithProjection"
        )
    hidden = torch.cat(hidden_states, dim=-1)
    return hidden.to(dtype=dtype, device=device), pooled.to(dtype=dtype, device=device)


def check_text_parts(
    unet: Any, text_encoder: Any, tokenizer: Any, text_encoder_2: Any, tokenizer_2: Any
) -> None:
    """Refuses text parts that do not fit the UNet's layout: SD 1.x/2.x take one text encoder
    and tokenizer; SDXL takes a ``CLIPTextModelWithProjection`` as ``text_encoder_2`` (and,
    unless it is a refiner-style model, a first encoder), their features as wide together as
    the UNet's cross-attention, and its pooled embedding as wide as its added embedding wants."""
    if not is_sdxl_unet(unet):
        if text_encoder_2 is not None or tokenizer_2 is not None:
            raise ValueError(
                "text_encoder_2 and tokenizer_2 are SDXL's, but the UNet has Stable "
                "Diffusion 1.x/2.x's layout (no addition_embed_type 'text_time')"
            )
        if text_encoder is None or tokenizer is None:
            raise ValueError("text_encoder and tokenizer are required")
        return
    if text_encoder_2 is None or tokenizer_2 is None:
        raise ValueError(
            "the UNet has SDXL's layout (addition_embed_type 'text_time'): text_encoder_2 "
            "(a CLIPTextModelWithProjection) and tokenizer_2 are required"
        )
    if (text_encoder is None) != (tokenizer is None):
        raise ValueError("give text_encoder and tokenizer together, or neither")
    width = sum(
        encoder.config.hidden_size
        for encoder in (text_encoder, text_encoder_2)
        if encoder is not None
    )
    if unet.config.cross_attention_dim != width:
        raise ValueError(
            f"the UNet attends to {unet.config.cross_attention_dim}-wide text features "
            f"(cross_attention_dim), but the text encoders give {width}"
        )
    sdxl_time_ids(
        (0, 0), (0, 0), (0, 0), unet=unet, pooled_dim=text_encoder_2.config.projection_dim
    )


def encode_prompts_of(
    parts: Any, texts: Sequence[str], *, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """:func:`encode_prompts_xl` with the text parts an object holds (``tokenizer``,
    ``text_encoder``, ``tokenizer_2``, ``text_encoder_2``; the first pair may be ``None``)."""
    pairs = [
        (tokenizer, encoder)
        for tokenizer, encoder in (
            (parts.tokenizer, parts.text_encoder),
            (parts.tokenizer_2, parts.text_encoder_2),
        )
        if encoder is not None
    ]
    return encode_prompts_xl(
        [pair[0] for pair in pairs], [pair[1] for pair in pairs], texts, device=device, dtype=dtype
    )


def text_embeddings(pipe: Any, texts: Sequence[str]) -> tuple[Tensor, Tensor | None]:
    """A pipeline's text conditioning for ``texts``, on its device and in its dtype: the
    embeddings ``[N, T, D]`` and, for SDXL (:func:`is_sdxl_unet` of ``pipe.unet``), the pooled
    embedding ``[N, P]`` (``None`` otherwise). ``pipe`` holds ``unet``, ``tokenizer``,
    ``text_encoder`` and, for SDXL, ``tokenizer_2`` and ``text_encoder_2``."""
    if is_sdxl_unet(pipe.unet):
        return encode_prompts_of(pipe, texts, device=pipe.device, dtype=pipe.dtype)
    hidden = encode_prompts(
        pipe.tokenizer, pipe.text_encoder, texts, device=pipe.device, dtype=pipe.dtype
    )
    return hidden, None


def sdxl_time_ids(
    original_size: tuple[int, int],
    crops_coords_top_left: tuple[int, int],
    target_size: tuple[int, int],
    *,
    unet: Any,
    pooled_dim: int,
) -> Tensor:
    """SDXL's micro-conditioning ids ``[1, 6]`` (original height and width, crop top and left,
    target height and width), checked against the UNet's added-embedding width: it must equal
    ``addition_time_embed_dim × 6 + pooled_dim``."""
    ids = [*original_size, *crops_coords_top_left, *target_size]
    expected = unet.add_embedding.linear_1.in_features
    given = unet.config.addition_time_embed_dim * len(ids) + pooled_dim
    if expected != given:
        raise ValueError(
            f"the UNet's added embedding takes {expected} features "
            f"(projection_class_embeddings_input_dim), but SDXL's micro-conditioning gives "
            f"{given}: {len(ids)} ids × addition_time_embed_dim "
            f"{unet.config.addition_time_embed_dim} + the pooled text embedding's {pooled_dim}; "
            "the UNet does not fit these text encoders"
        )
    return torch.tensor([ids], dtype=torch.float32)


def run_vae(
    vae: Any, run: Callable[[Any, torch.dtype], Tensor], what: str, *, upcast: bool = False
) -> Tensor:
    """Runs ``run(vae, dtype)`` in the VAE's dtype; if half precision overflows (the "black
    image" bug), reruns it in float32. With ``upcast`` (SDXL's rule: a float16 VAE whose config
    says ``force_upcast``), a float16 VAE runs in float32 from the start."""
    dtype = vae.dtype
    with torch.no_grad():
        if upcast and dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
            vae.to(torch.float32)
            try:
                return run(vae, torch.float32)
            finally:
                vae.to(dtype)
        result = run(vae, dtype)
        if dtype in (torch.float16, torch.bfloat16) and not torch.isfinite(result).all():
            logger.warning("the VAE overflowed in %s while %s; recomputing in float32", dtype, what)
            vae.to(torch.float32)
            try:
                result = run(vae, torch.float32)
            finally:
                vae.to(dtype)
    return result


def decode_latents(vae: Any, latents: Tensor, *, upcast: bool = False) -> Tensor:
    """Decodes latents ``[N, C, h, w]`` to pixels ``[N, 3, H, W]`` in about [-1, 1] (float32):
    divided by the VAE's ``scaling_factor`` (and de-normalised by its ``latents_mean`` and
    ``latents_std`` where its config has them). ``upcast``: see :func:`run_vae`."""

    def run(model: Any, dtype: torch.dtype) -> Tensor:
        from instructedit._memory import module_device

        scaled = latents.to(module_device(model), dtype)
        config = model.config
        mean = getattr(config, "latents_mean", None)
        std = getattr(config, "latents_std", None)
        if mean is not None and std is not None:
            shape = (1, -1, 1, 1)
            mean_t = torch.tensor(mean).view(shape).to(scaled.device, dtype)
            std_t = torch.tensor(std).view(shape).to(scaled.device, dtype)
            scaled = scaled * std_t / config.scaling_factor + mean_t
        else:
            scaled = scaled / config.scaling_factor
        return model.decode(scaled, return_dict=False)[0]

    return run_vae(vae, run, "decoding", upcast=upcast).float()


def clip_text_encoder(
    *, width: int, layers: int = 2, heads: int = 4, seed: int = 0, projection: bool = False
) -> Any:
    """Returns a seeded ``CLIPTextModel`` over the real CLIP vocabulary (77 positions), in eval
    mode, with ``width``-dimensional outputs and a ``2 × width`` feed-forward layer; with
    ``projection``, a ``CLIPTextModelWithProjection`` (SDXL's second text encoder, whose first
    output is the pooled, projected embedding)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

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
    model_class = CLIPTextModelWithProjection if projection else CLIPTextModel
    with seeded(seed):
        encoder = model_class(config)
    return encoder.eval()
