"""The embedded default model: the ShapesWorld editor and its CLIP, shipped inside the package.

Both were trained by ``instructedit shapes reproduce`` (see the ShapesWorld research notes) and are
stored in float16 safetensors under ``instructedit/assets/shapes``: the editor in the diffusers
layout without its tokenizer folder, and the CLIP as an open_clip folder. The tokenizer is CLIP's
own, rebuilt from open_clip's BPE file, so it is not shipped twice; :func:`default_model_dir`
assembles a complete diffusers folder in the cache on first use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from instructedit._cache import cache_dir, materialize_dir
from instructedit._files import recover_dir, replace_dir, swap_dirs
from instructedit.guidance import GUIDANCE_CONFIG_NAME

if TYPE_CHECKING:
    from instructedit.clip import ClipScorer
    from instructedit.pipeline import EditPipeline

__all__ = [
    "DEFAULT_MODEL_NAME",
    "bundled_dir",
    "default_clip_dir",
    "default_model_dir",
    "export_default_model",
    "load_default",
    "load_default_clip",
    "names_default",
]

DEFAULT_MODEL_NAME = "shapes"
"""The name :meth:`EditPipeline.from_pretrained <instructedit.pipeline.EditPipeline.from_pretrained>`
resolves to the embedded default (unless a local folder of that name exists)."""

logger = logging.getLogger(__name__)

_EDITOR_PARTS = ("unet", "vae", "text_encoder", "scheduler")
_SETTINGS_FILES = (GUIDANCE_CONFIG_NAME, "editing_config.json")
"""The editor's stored guidance and masking, copied beside its weights."""
_SOURCE_FILE = "instructedit_source.txt"
"""Written into each cached folder: the machine and the package folder it was assembled from."""


def names_default(model: str | os.PathLike[str]) -> bool:
    """Whether ``model`` names the embedded default: :data:`DEFAULT_MODEL_NAME`, unless a local
    folder of that name exists (a local folder always wins)."""
    return str(model) == DEFAULT_MODEL_NAME and not Path(model).exists()


def bundled_dir() -> Path:
    """The package folder holding the default model (``editor/`` and ``clip/``)."""
    return Path(str(resources.files("instructedit").joinpath("assets", "shapes")))


def _check_bundled(folder: Path) -> None:
    if not (folder / "editor" / "model_index.json").is_file():
        raise FileNotFoundError(
            f"the embedded default model is missing from {folder} (an install without package "
            "data?): reinstall instructedit, or load a model folder with EditPipeline.from_pretrained"
        )


def default_model_dir() -> Path:
    """A complete diffusers folder of the default editor, assembled once in the cache.

    The weights stay in the package (linked, or copied where links are not allowed); only the
    CLIP tokenizer files are written. The folder also loads with diffusers'
    ``StableDiffusionInstructPix2PixPipeline.from_pretrained``. Folders this machine assembled
    earlier from the same package folder (older weights) or from one that no longer exists are
    removed.
    """
    from instructedit.clip_tokenizer import clip_tokenizer_dir

    source = bundled_dir()
    _check_bundled(source)
    editor = source / "editor"
    # Weights by size and times (hashing 20 MB on every load is slow): new weights, even of the
    # same size, must not find the old folder where it holds copies. The modification time
    # alone misses a copy that keeps it (``cp -p``); the status-change time does not, since no
    # copy can set it. Small JSON files, such as the guidance whose new scales may keep its
    # size, by content.
    key = hashlib.sha256(
        json.dumps(
            [
                str(editor.resolve()),
                *(
                    hashlib.sha256(p.read_bytes()).hexdigest()
                    if p.suffix == ".json"
                    else f"{p.stat().st_size}:{p.stat().st_mtime_ns}:{p.stat().st_ctime_ns}"
                    for p in sorted(editor.rglob("*.*"))
                ),
            ]
        ).encode()
    ).hexdigest()[:16]

    def build(directory: Path) -> None:
        for part in _EDITOR_PARTS:
            try:
                os.symlink(editor / part, directory / part, target_is_directory=True)
            except OSError:  # no symlinks here (e.g. Windows without the privilege)
                shutil.copytree(editor / part, directory / part)
        shutil.copytree(clip_tokenizer_dir(), directory / "tokenizer")
        for name in _SETTINGS_FILES:
            if (editor / name).is_file():
                shutil.copyfile(editor / name, directory / name)
        source = {"host": socket.gethostname(), "editor": str(editor.resolve())}
        (directory / _SOURCE_FILE).write_text(json.dumps(source), encoding="utf-8")
        shutil.copyfile(editor / "model_index.json", directory / "model_index.json")  # the marker

    folder = materialize_dir(cache_dir() / f"default-{key}", build, marker="model_index.json")
    _prune_superseded(folder, editor.resolve())
    return folder


def _prune_superseded(current: Path, editor: Path) -> None:
    """Deletes the cached folders that ``current`` supersedes: those this machine assembled from
    the same package folder (older weights of this install) or from one that no longer exists
    (an uninstalled or moved install). Folders of other installs, and of other machines sharing
    the cache (a home folder mounted into a container, a cluster's shared home), are kept."""
    host = socket.gethostname()
    for folder in current.parent.glob("default-*"):
        if folder == current or not folder.is_dir():
            continue
        try:
            source = json.loads((folder / _SOURCE_FILE).read_text(encoding="utf-8"))
            built_here, origin = source["host"] == host, Path(source["editor"])
        except (OSError, ValueError, KeyError, TypeError):  # older, or being built: kept
            continue
        if built_here and (origin == editor or not origin.is_dir()):
            logger.info("removing the superseded cached model folder %s", folder)
            shutil.rmtree(folder, ignore_errors=True)


def default_clip_dir() -> Path:
    """The open_clip folder of the default model's CLIP (load with ``local-dir:<folder>``)."""
    source = bundled_dir()
    _check_bundled(source)
    return source / "clip"


def load_default(
    *,
    device: str | torch.device | None = None,
    torch_dtype: torch.dtype = torch.float32,
    scheduler: str | Any | None = None,
) -> EditPipeline:
    """The embedded default editor, ready to edit 32×32 ShapesWorld scenes offline.

    It recolours shapes, changes the background, adds and removes shapes ("make the circle blue",
    "put it on a green background"); its measured success rates are on the ShapesWorld results
    page. Weights ship in float16 and load as ``torch_dtype`` (float32 by default, which CPUs
    need).

    Args:
        device: where to put the models (default: CPU).
        torch_dtype: dtype of the models.
        scheduler: a scheduler name or instance (default: the saved Euler ancestral).

    Example:
        >>> import instructedit
        >>> from instructedit.worlds.shapes import Scene, Shape, render
        >>> scene = Scene("white", (Shape("circle", "red", 0.5, 0.5, 0.25),))
        >>> pipe = instructedit.load_default()
        >>> edited = pipe(render(scene), "make the circle blue", num_inference_steps=20).images[0]
    """
    from instructedit.pipeline import EditPipeline

    pipe = EditPipeline.from_pretrained(
        default_model_dir(), torch_dtype=torch_dtype, scheduler=scheduler
    )
    return pipe.to(device) if device is not None else pipe


def load_default_clip(*, device: str | torch.device | None = None) -> ClipScorer:
    """The default model's CLIP as a :class:`~instructedit.clip.ClipScorer` (float32)."""
    from instructedit.clip import ClipScorer

    return ClipScorer.from_open_clip(f"local-dir:{default_clip_dir()}", device=device)


def export_default_model(run: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Writes a ShapesWorld run's editor and CLIP as the embedded default (float16 safetensors).

    The editor's ``guidance_config.json`` ships with it: the scales the run's ``guidance`` stage
    chose (a run without that stage ships none, and the editor edits at the paper's 7.5 and
    1.5); so does its ``editing_config.json`` (the masking it edits with), when the run's
    editor folder holds one.

    Args:
        run: the folder of ``instructedit shapes reproduce`` (with ``editor/model`` and
            ``clip/model``).
        target: the folder to write (``instructedit/assets/shapes`` when releasing); its
            ``MODEL_CARD.md``, if any, is kept. It is replaced only once the new one is complete,
            by two renames (a kill between them is finished by the next export).

    Returns:
        ``target``.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import load_file, save_file
    from transformers import CLIPTextModel

    run, target = Path(run), Path(target)
    editor, clip = run / "editor" / "model", run / "clip" / "model"
    for folder in (editor, clip):
        if not folder.is_dir():
            raise FileNotFoundError(f"run: {run} has no {folder.relative_to(run)} folder")
    recover_dir(target)  # a previous export killed while it swapped the folders
    staging = swap_dirs(target)[0]
    (staging / "editor").mkdir(parents=True)
    classes: dict[str, Any] = {
        "unet": UNet2DConditionModel,
        "vae": AutoencoderKL,
        "text_encoder": CLIPTextModel,
    }
    for part, cls in classes.items():
        model = cls.from_pretrained(editor / part).to(torch.float16)
        model.save_pretrained(staging / "editor" / part, safe_serialization=True)
    for config_file in (staging / "editor").glob("*/config.json"):
        # diffusers records the folder a model was loaded from: a path on the exporting machine.
        values = json.loads(config_file.read_text(encoding="utf-8"))
        values.pop("_name_or_path", None)
        config_file.write_text(
            json.dumps(values, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
    shutil.copytree(editor / "scheduler", staging / "editor" / "scheduler")
    shutil.copyfile(editor / "model_index.json", staging / "editor" / "model_index.json")
    for name in _SETTINGS_FILES:
        if (editor / name).is_file():
            shutil.copyfile(editor / name, staging / "editor" / name)
    (staging / "clip").mkdir()
    shutil.copyfile(clip / "open_clip_config.json", staging / "clip" / "open_clip_config.json")
    weights = load_file(clip / "open_clip_model.safetensors")
    save_file(
        {name: tensor.to(torch.float16) for name, tensor in weights.items()},
        staging / "clip" / "open_clip_model.safetensors",
    )
    card = target / "MODEL_CARD.md"
    if card.is_file():  # the card is written by hand: a new export keeps it
        shutil.copyfile(card, staging / card.name)
    return replace_dir(target)
