"""Writes open_clip models as ``local-dir:`` folders that ``open_clip`` loads offline."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

__all__ = ["save_open_clip"]


def save_open_clip(model: Any, model_cfg: dict[str, Any], directory: str | Path) -> Path:
    """Writes any open_clip model as a ``local-dir:`` folder and returns the folder.

    The folder holds ``open_clip_config.json`` (``model_cfg`` and CLIP's bicubic, mean/std
    preprocessing) and ``open_clip_model.safetensors``. Load it with::

        model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
        tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    """
    from safetensors.torch import save_file

    try:
        import open_clip
    except ImportError as error:  # pragma: no cover - open_clip is a core dependency
        raise ImportError("save_open_clip needs open_clip: pip install open_clip_torch") from error
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    config = {
        "model_cfg": copy.deepcopy(model_cfg),
        "preprocess_cfg": {
            "mean": list(open_clip.OPENAI_DATASET_MEAN),
            "std": list(open_clip.OPENAI_DATASET_STD),
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
    }
    (path / "open_clip_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(path / "open_clip_model.safetensors"))
    return path
