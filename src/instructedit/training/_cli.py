"""``instructedit train --config FILE``: a training run described by a YAML or TOML file."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from instructedit.training._config import TrainConfig

__all__ = ["load_run_file", "train_from_config"]


def load_run_file(path: Path) -> dict[str, Any]:
    """Reads a run description (``.yaml``/``.yml``, ``.toml`` or ``.json``)."""
    if not path.is_file():
        raise FileNotFoundError(f"config: no such file: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        parse: Any = yaml.safe_load
        errors: tuple[type[Exception], ...] = (yaml.YAMLError,)
    elif path.suffix == ".toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover
            import tomli as tomllib
        parse, errors = tomllib.loads, (tomllib.TOMLDecodeError,)
    elif path.suffix == ".json":
        parse, errors = json.loads, (json.JSONDecodeError,)
    else:
        raise ValueError(f"config must be .yaml, .yml, .toml or .json, got {path.name}")
    try:
        values = parse(text)
    except errors as error:
        raise ValueError(f"{path}: not a valid {path.suffix[1:].upper()} file ({error})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    for key in ("model", "data"):
        if key not in values:
            raise ValueError(
                f"{path}: missing {key!r} (see the Training guide for the file format)"
            )
    unknown = sorted(set(values) - {"model", "data", "train"})
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {unknown}; allowed: model, data, train")
    for key in ("data", "train"):
        if key in values and not isinstance(values[key], dict):
            raise ValueError(
                f"{path}: {key!r} must be a table of settings, got {type(values[key]).__name__}"
            )
    if not isinstance(values["model"], str) or not values["model"].strip():
        raise ValueError(f"{path}: 'model' must be a folder or hub id, got {values['model']!r}")
    return values


def train_from_config(*, config: Path) -> str:
    """Trains an InstructPix2Pix editor as the config file describes; exports the pipeline.

    The file has three parts::

        model = "runwayml/stable-diffusion-v1-5"   # SD 1.x/2.x or SDXL: text-to-image or editor
        [data]
        folder = "data/ip2p"                        # or: parquet = "data/train.parquet",
        split = "train"                             # or: magicbrush = "magicbrush/train.parquet"
        [train]                                     # any TrainConfig field
        output_dir = "outputs/ip2p"
        max_steps = 10000

    Args:
        config: the YAML, TOML or JSON file. Run it on many GPUs with
            ``accelerate launch -m instructedit train --config FILE``.
    """
    values = load_run_file(config)
    train_config = TrainConfig.from_dict(dict(values.get("train", {})))
    data = values["data"]
    kinds = [kind for kind in ("folder", "parquet", "magicbrush") if kind in data]
    if len(kinds) != 1:
        raise ValueError(
            f"{config}: data must name exactly one of 'folder', 'parquet' or 'magicbrush', "
            f"got {kinds or 'none'}"
        )
    if "masks" in data and kinds != ["magicbrush"]:
        raise ValueError(f"{config}: data.masks applies to 'magicbrush' data only")
    from diffusers import DDPMScheduler

    from instructedit.components import load_components
    from instructedit.training._data import FolderSource, MagicBrushSource, ParquetSource
    from instructedit.training._surgery import to_edit_unet
    from instructedit.training._trainer import Trainer

    source: FolderSource | ParquetSource | MagicBrushSource
    if "folder" in data:
        source = FolderSource(data["folder"], data.get("split", "train"))
    elif "parquet" in data:
        source = ParquetSource(data["parquet"])
    else:  # MagicBrush's folder or parquet; masks: "ignore" (default) or "local"
        source = MagicBrushSource(data["magicbrush"], masks=data.get("masks", "ignore"))
    parts = load_components(str(values["model"]))
    noise_scheduler = DDPMScheduler.from_config(parts["scheduler"].config, clip_sample=False)
    trainer = Trainer(
        train_config,
        unet=to_edit_unet(parts["unet"]),
        vae=parts["vae"],
        text_encoder=parts["text_encoder"],
        tokenizer=parts["tokenizer"],
        noise_scheduler=noise_scheduler,
        train_dataset=source,
        # SDXL's (None for SD 1.x/2.x models)
        text_encoder_2=parts.get("text_encoder_2"),
        tokenizer_2=parts.get("tokenizer_2"),
    )
    trainer.train()
    return str(trainer.export())
