"""LoRA adapters for editors (Hu et al., *LoRA: Low-Rank Adaptation of Large Language Models*,
2021), through ``peft`` as diffusers uses it.

A LoRA run (:attr:`TrainConfig.lora_rank <instructedit.training.TrainConfig.lora_rank>`)
freezes the UNet and trains a low-rank update ``alpha / rank · B A`` beside chosen linear layers,
plus, by default, the input convolution in full (it holds the image channels an editor adds to
a text-to-image UNet). Its export is an adapter folder:

* ``pytorch_lora_weights.safetensors``: the UNet's LoRA layers in diffusers' format (keys
  ``unet.<module>.lora_A.weight`` / ``lora_B.weight``, with the rank and alpha as metadata), read
  by diffusers' ``load_lora_weights`` and by :func:`load_lora`;
* ``conv_in.safetensors`` (when the input convolution trained): its weight and bias;

and the merged weights as an ordinary editor folder beside it.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from instructedit.checkpoints import write_json_atomic
from instructedit.components import is_sdxl_unet
from instructedit.seeding import seeded

__all__ = [
    "CONV_IN_NAME",
    "LORA_CONFIG_NAME",
    "LORA_WEIGHTS_NAME",
    "add_lora",
    "has_lora",
    "load_lora",
    "merged_unet",
    "save_lora",
    "unload_lora",
]

logger = logging.getLogger(__name__)

LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
"""The adapter's file in an adapter folder (diffusers' default name)."""
CONV_IN_NAME = "conv_in.safetensors"
"""The fully trained input convolution's file in an adapter folder."""
LORA_CONFIG_NAME = "lora_config.json"
"""The adapter's settings and the base it was trained on."""


def _peft() -> Any:
    try:
        import peft
    except ImportError as error:
        raise ImportError(
            "LoRA needs peft: pip install 'instructedit[lora]' (or pip install peft)"
        ) from error
    return peft


def has_lora(unet: Any) -> bool:
    """Whether ``unet`` holds LoRA layers (an adapter added or loaded)."""
    return bool(getattr(unet, "peft_config", None))


def add_lora(
    unet: Any,
    *,
    rank: int,
    alpha: float | None = None,
    targets: Sequence[str],
    seed: int = 0,
    train_conv_in: bool = True,
) -> list[str]:
    """Adds a trainable LoRA adapter to ``unet`` and freezes everything else (the input
    convolution stays trainable with ``train_conv_in``). The new ``A`` matrices are drawn from
    ``seed`` (Gaussian), the ``B`` matrices start at zero, so the UNet predicts exactly what it
    did. Returns the names of the wrapped modules.

    Raises:
        ValueError: no module of ``unet`` matches ``targets``.
    """
    peft = _peft()
    names = [name for name, _ in unet.named_modules() if _matches(name, targets)]
    if not names:
        raise ValueError(
            f"lora_targets {list(targets)} match no module of the UNet; attention projections "
            "are named to_q, to_k, to_v and to_out.0"
        )
    unet.requires_grad_(False)
    config = peft.LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else rank,
        init_lora_weights="gaussian",
        target_modules=list(targets),
    )
    with seeded(seed):
        unet.add_adapter(config)
    if train_conv_in:
        unet.conv_in.requires_grad_(True)
    return names


def _matches(name: str, targets: Sequence[str]) -> bool:
    return any(name == target or name.endswith("." + target) for target in targets)


def merged_unet(unet: Any) -> Any:
    """A copy of ``unet`` with its LoRA layers merged into the base weights and removed: an
    ordinary ``UNet2DConditionModel`` that saves and loads anywhere."""
    merged = copy.deepcopy(unet)
    if has_lora(merged):
        merged.fuse_lora(lora_scale=1.0)
        merged.unload_lora()
    return merged


def save_lora(
    directory: str | Path,
    unet: Any,
    *,
    rank: int,
    alpha: float | None,
    targets: Sequence[str],
    conv_in: bool,
) -> Path:
    """Writes ``unet``'s adapter as an adapter folder (see the module's docstring): the LoRA
    layers in diffusers' format, the input convolution with ``conv_in``, and
    ``lora_config.json``."""
    peft = _peft()
    from diffusers.utils import convert_state_dict_to_diffusers
    from safetensors.torch import save_file

    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    layers = convert_state_dict_to_diffusers(peft.get_peft_model_state_dict(unet))
    layers = {key: value.detach().contiguous().cpu() for key, value in layers.items()}
    metadata = unet.peft_config["default"].to_dict()
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    saver = StableDiffusionXLPipeline if is_sdxl_unet(unet) else StableDiffusionPipeline
    saver.save_lora_weights(
        path,
        unet_lora_layers=layers,
        unet_lora_adapter_metadata=metadata,
        safe_serialization=True,
    )
    if conv_in:
        save_file(
            {
                "weight": unet.conv_in.weight.detach().contiguous().cpu(),
                "bias": unet.conv_in.bias.detach().contiguous().cpu(),
            },
            str(path / CONV_IN_NAME),
        )
    write_json_atomic(
        path / LORA_CONFIG_NAME,
        {
            "rank": rank,
            "alpha": alpha if alpha is not None else rank,
            "targets": list(targets),
            "conv_in": conv_in,
            "base": _base_signature(unet),
        },
    )
    return path


def _base_signature(unet: Any) -> dict[str, Any]:
    config = unet.config
    return {
        "in_channels": config.in_channels,
        "cross_attention_dim": config.cross_attention_dim,
        "block_out_channels": list(config.block_out_channels),
        "addition_embed_type": config.addition_embed_type,
    }


def _weights_file(source: str | Path) -> Path:
    path = Path(source)
    if path.is_dir():
        path = path / LORA_WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"no LoRA weights at {path}: pass an adapter folder holding {LORA_WEIGHTS_NAME} or "
            "the .safetensors file itself"
        )
    return path


def _check_fits(unet: Any, state_dict: dict[str, torch.Tensor], source: Path) -> None:
    """Refuses an adapter whose layers this UNet lacks or whose shapes differ from its
    layers', naming the first mismatch (an adapter trained on another base)."""
    modules = dict(unet.named_modules())
    for key, value in state_dict.items():
        for part, axis, attribute in (
            (".lora_A.", 1, "in"),
            (".lora.down.", 1, "in"),  # diffusers' file format
            (".lora_B.", 0, "out"),
            (".lora.up.", 0, "out"),
        ):
            if part not in key:
                continue
            name = key.split(part)[0].removeprefix("unet.")
            module = modules.get(name)
            if module is None:
                raise ValueError(
                    f"{source}: the adapter adapts {name!r}, which this UNet does not have: it "
                    "was trained on another base model"
                )
            base = getattr(module, "base_layer", module)
            size = (
                getattr(base, f"{attribute}_features", None)
                if isinstance(base, torch.nn.Linear)
                else getattr(base, f"{attribute}_channels", None)
            )
            if size is not None and value.shape[axis] != size:
                raise ValueError(
                    f"{source}: the adapter's {key} has {value.shape[axis]} "
                    f"{attribute}put features, this UNet's {name} has {size}: it was trained on "
                    "another base model"
                )


def load_lora(unet: Any, source: str | Path, *, adapter_name: str = "default") -> dict[str, Any]:
    """Loads an adapter folder (or its ``.safetensors`` file) into ``unet`` after checking that
    it fits; with ``conv_in.safetensors`` beside it, replaces the input convolution. Returns what
    :func:`unload_lora` needs to restore the UNet (the replaced convolution)."""
    _peft()
    from diffusers.loaders import StableDiffusionLoraLoaderMixin
    from safetensors.torch import load_file

    weights = _weights_file(source)
    state_dict, network_alphas, metadata = StableDiffusionLoraLoaderMixin.lora_state_dict(
        str(weights), return_lora_metadata=True
    )
    text = sorted(key for key in state_dict if key.startswith(("text_encoder", "te_", "lora_te")))
    if text:
        raise ValueError(
            f"{weights} adapts the text encoder too ({text[0]}, ...): EditPipeline loads UNet "
            "adapters"
        )
    _check_fits(unet, state_dict, weights)
    conv_file = weights.parent / CONV_IN_NAME
    conv = load_file(str(conv_file)) if conv_file.is_file() else None
    current = unet.conv_in
    if conv is not None and tuple(conv["weight"].shape) != tuple(current.weight.shape):
        raise ValueError(
            f"{conv_file} holds an input convolution of shape {tuple(conv['weight'].shape)}, "
            f"this UNet's is {tuple(current.weight.shape)}: it was trained on another base"
        )
    StableDiffusionLoraLoaderMixin.load_lora_into_unet(
        state_dict,
        network_alphas=network_alphas,
        unet=unet,
        adapter_name=adapter_name,
        metadata=metadata,
    )
    restore: dict[str, Any] = {}
    if conv is not None:  # only once the adapter is in: a failed load leaves the UNet as it was
        restore["conv_in"] = {k: v.detach().clone() for k, v in current.state_dict().items()}
        with torch.no_grad():
            current.weight.copy_(conv["weight"].to(current.weight))
            current.bias.copy_(conv["bias"].to(current.bias))
    logger.info("loaded the LoRA adapter %s as %r", weights, adapter_name)
    return restore


def unload_lora(unet: Any, restore: dict[str, Any] | None = None) -> None:
    """Removes every LoRA layer from ``unet`` (the base weights come back) and restores what
    :func:`load_lora` replaced."""
    if has_lora(unet):
        unet.unload_lora()
    if restore and "conv_in" in restore:
        unet.conv_in.load_state_dict(restore["conv_in"])
