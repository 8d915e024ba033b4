"""Edit sessions: editing one image in turns ("make it snowy", then "add a sledge").

A session sits above :class:`~instructedit.pipeline.EditPipeline`: each turn calls the pipeline
once on the current image and keeps what it made. Turns form a tree: going back to an earlier turn
and editing again starts a branch.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from instructedit.checkpoints import publish_dir, write_json_atomic
from instructedit.images import ImageInput, load_image
from instructedit.pipeline._edit import EditPipeline
from instructedit.pipeline._masks import MaskInput

__all__ = ["SESSION_VERSION", "Chain", "EditSession", "Turn"]

SESSION_VERSION = 1
"""The version of the ``session.json`` layout that :meth:`EditSession.save` writes."""

Chain = Literal["pixels", "latents"]
"""How a turn hands its result to the next: ``"pixels"`` (the decoded image, encoded again by the
VAE) or ``"latents"`` (the final latents as the next image condition, no decode/encode)."""

_RESERVED = (
    "image",
    "instruction",
    "generator",
    "latents",
    "image_latents",
    "output_type",
    "num_images_per_instruction",
    "callback_on_step_end",
    "callback_on_step_end_tensor_inputs",
)
"""Pipeline arguments the session sets itself."""

_JSON_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True, eq=False)
class Turn:
    """One edit of a session: what was asked, how, and what it made."""

    index: int
    """Position in :attr:`EditSession.turns` (0, 1, ...)."""
    parent: int | None
    """The turn it edited, ``None`` for the original image."""
    instruction: str
    """The edit, e.g. ``"add a sledge"``."""
    settings: dict[str, Any]
    """The pipeline arguments, JSON-able: ``num_inference_steps``, ``guidance_scale`` and
    ``image_guidance_scale`` (as resolved: the pipeline's stored guidance where none was given),
    ``seed``, ``mask`` (``None``, ``"given"`` or ``"auto"``), ``keep_unmasked_pixels`` and any
    further keyword given to :meth:`EditSession.edit`."""
    image: Image.Image
    """The edited image (RGB)."""
    mask: Image.Image | None = None
    """The mask the edit used (``"L"``, at the edited image's size); ``None`` without one."""
    latents: Tensor | None = None
    """The sampler's final latents ``[1, 4, h, w]`` (scaled by ``vae.config.scaling_factor``, on
    the CPU), kept when the session chains in latents; ``None`` otherwise."""

    def __post_init__(self) -> None:
        if self.index < 0:
            raise ValueError(f"index must be >= 0, got {self.index}")
        if self.parent is not None and not 0 <= self.parent < self.index:
            raise ValueError(
                f"turn {self.index}: parent must be None or an earlier turn (0 to "
                f"{self.index - 1}), got {self.parent}"
            )


class EditSession:
    """Edits one image in turns, each turn applying an instruction to the current image.

    InstructPix2Pix (Brooks, Holynski and Efros, CVPR 2023) edits by one instruction; people edit
    in several ("make it snowy", then "add a sledge"). Each :meth:`edit` calls ``pipe`` once on
    the current image (the last turn's result, or the turn :meth:`go_to` made current) and
    records a :class:`Turn`. Going back and editing again branches: the turns form a tree, each
    naming its parent.

    Args:
        pipe: the :class:`~instructedit.pipeline.EditPipeline` that edits.
        image: the original image (see :data:`~instructedit.pipeline.ImageInput`).
        seed: seed of the sampling noise of every turn unless :meth:`edit` is given one.
        chain: how a turn hands its result to the next (see :data:`Chain`): ``"pixels"``
            (default) feeds the decoded image, which the pipeline encodes again; ``"latents"``
            feeds the final latents divided by ``vae.config.scaling_factor`` as the next image
            condition (``image_latents``), skipping the VAE round trip and the error it adds at
            every turn.

    Example:
        >>> session = EditSession(pipe, "photo.jpg", seed=0)
        >>> session.edit("make it snowy")
        >>> session.edit("add a sledge").image.save("sledge.png")
        >>> session.go_to(0)                     # back to the snowy picture
        >>> session.edit("add a snowman")        # a second branch from turn 0
        >>> session.save("photo-session")
    """

    def __init__(
        self, pipe: EditPipeline, image: ImageInput, *, seed: int = 0, chain: Chain = "pixels"
    ) -> None:
        if not isinstance(pipe, EditPipeline):
            raise TypeError(f"pipe must be an EditPipeline, got {type(pipe).__name__}")
        if chain not in get_args(Chain):
            raise ValueError(f"chain must be one of {list(get_args(Chain))}, got {chain!r}")
        self.pipe = pipe
        self.original = load_image(image, argument="image")
        self.seed = _check_seed(seed, "seed")
        self.chain: Chain = chain
        self._turns: list[Turn] = []
        self._current: int | None = None

    # ------------------------------------------------------------------------------ the tree

    @property
    def turns(self) -> tuple[Turn, ...]:
        """Every turn, in the order they were made (all branches)."""
        return tuple(self._turns)

    @property
    def current_index(self) -> int | None:
        """The current turn's index, ``None`` at the original image."""
        return self._current

    @property
    def current(self) -> Image.Image:
        """The image the next :meth:`edit` applies to."""
        return self.original if self._current is None else self._turns[self._current].image

    def go_to(self, turn: int | None) -> None:
        """Makes turn ``turn`` current (``None`` or -1: the original image); the next
        :meth:`edit` branches from it."""
        self._current = None if turn is None or turn == -1 else self._turn_index(turn, "turn")

    def back(self) -> None:
        """Makes the current turn's parent current (one step towards the original)."""
        if self._current is None:
            raise ValueError("back: the session is at the original image already")
        self._current = self._turns[self._current].parent

    def path(self, turn: int | None) -> list[Turn]:
        """The turns from the original image to ``turn``, in order; empty for the original
        (``None`` or -1)."""
        index = None if turn is None or turn == -1 else self._turn_index(turn, "turn")
        chain: list[Turn] = []
        while index is not None:
            step = self._turns[index]
            chain.append(step)
            index = step.parent
        return chain[::-1]

    def history(self) -> list[Turn]:
        """The turns that led to the current image, in order."""
        return self.path(self._current)

    def _turn_index(self, turn: Any, argument: str) -> int:
        if isinstance(turn, bool) or not isinstance(turn, int):
            raise TypeError(f"{argument} must be a turn index (int), got {type(turn).__name__}")
        if not 0 <= turn < len(self._turns):
            allowed = f"0 to {len(self._turns) - 1}, " if self._turns else ""
            raise ValueError(
                f"{argument} must be {allowed}-1 or None (the original), got {turn}: the session "
                f"has {len(self._turns)} turns"
            )
        return turn

    # ---------------------------------------------------------------------------- editing

    def edit(
        self,
        instruction: str,
        *,
        mask_image: MaskInput | Literal["auto", "none"] | None = None,
        keep_unmasked_pixels: bool | None = None,
        num_inference_steps: int = 100,
        guidance_scale: float | None = None,
        image_guidance_scale: float | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> Turn:
        """Applies ``instruction`` to the current image by one pipeline call; the new turn
        becomes current.

        Args:
            instruction: the edit, e.g. ``"add a sledge"``.
            mask_image: where the edit may act, ``"auto"``, or ``"none"`` for the whole image
                (see :class:`~instructedit.pipeline.EditPipeline`); ``None`` uses the
                pipeline's stored setting (its ``editing``, an
                :class:`~instructedit.pipeline.EditingConfig`).
            keep_unmasked_pixels: with a mask, paste the current image back outside it;
                ``None`` uses the pipeline's stored setting.
            num_inference_steps: denoising steps.
            guidance_scale: s_T; ``None`` uses the pipeline's stored guidance.
            image_guidance_scale: s_I; ``None`` uses the pipeline's stored guidance.
            seed: seed of this turn's sampling noise; ``None`` uses the session's.
            **kwargs: further JSON-able pipeline arguments (``eta``, ``resize``,
                ``mask_feather``, ``progress``, ...), recorded in the turn's settings (all but
                ``progress``, which does not change the image).

        Returns:
            The new :class:`Turn`.
        """
        # 1. Check inputs: the settings must describe the turn completely, as JSON.
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError(
                f"instruction must be a non-empty string, e.g. 'add a sledge', got {instruction!r}"
            )
        seed = self.seed if seed is None else _check_seed(seed, "seed")
        for key, value in kwargs.items():
            if key in _RESERVED:
                raise ValueError(f"{key} is set by the session; EditSession.edit does not take it")
            if not isinstance(value, _JSON_SCALARS):
                raise TypeError(
                    f"{key} must be a str, number, bool or None (turn settings are saved as "
                    f"JSON), got {type(value).__name__}"
                )
        parent = None if self._current is None else self._turns[self._current]

        # 2. The image condition: the parent's pixels, or its final latents unscaled.
        image = self.original if parent is None else parent.image
        condition = None
        if parent is not None and parent.latents is not None:
            condition = parent.latents / self.pipe.vae.config.scaling_factor
        final: list[Tensor] = []

        def keep_final(pipe: Any, index: int, timestep: Tensor, tensors: dict[str, Tensor]) -> None:
            final[:] = [tensors["latents"]]

        # 3. One pipeline call.
        output = self.pipe(
            image,
            instruction,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            image_guidance_scale=image_guidance_scale,
            generator=torch.Generator(device=self.pipe.device).manual_seed(seed),
            output_type="pil",
            callback_on_step_end=keep_final if self.chain == "latents" else None,
            image_latents=condition,
            mask_image=mask_image,
            keep_unmasked_pixels=keep_unmasked_pixels,
            **kwargs,
        )

        # 4. Record the turn.
        guidance = self.pipe.guidance.with_scales(
            text_scale=guidance_scale, image_scale=image_guidance_scale
        )
        settings = {
            "num_inference_steps": num_inference_steps,
            "guidance_scale": float(guidance.text_scale),
            "image_guidance_scale": float(guidance.image_scale),
            "seed": seed,
            "mask": _mask_setting(mask_image, self.pipe.editing.mask_image),
            "keep_unmasked_pixels": self.pipe.editing.keep_unmasked_pixels
            if keep_unmasked_pixels is None
            else keep_unmasked_pixels,
            **{key: value for key, value in kwargs.items() if key != "progress"},
        }
        edited = output.images[0]
        assert isinstance(edited, Image.Image)  # output_type="pil"
        turn = Turn(
            index=len(self._turns),
            parent=None if parent is None else parent.index,
            instruction=instruction,
            settings=settings,
            image=edited,
            mask=None if output.masks is None else _mask_to_pil(output.masks[0, 0]),
            latents=final[0].clone().cpu() if final else None,
        )
        self._turns.append(turn)
        self._current = turn.index
        return turn

    # ------------------------------------------------------------------------- on disk

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Writes the session to ``folder`` and returns it; ``folder`` appears whole (written in a
        staging folder beside it, then renamed), replacing an earlier save of a session.

        The folder holds ``session.json`` (version, chain, seed, current turn, and per turn its
        parent, instruction, settings and file names), ``original.png``, ``turn-0000.png``, ...,
        ``turn-0000-mask.png`` for a turn with a mask, and ``turn-0000.safetensors`` (the final
        latents) when chaining in latents.
        """
        final = Path(folder)
        occupied = final.exists() and (not final.is_dir() or any(final.iterdir()))
        if occupied and not (final / "session.json").is_file():
            raise ValueError(
                f"folder: {final} exists and is not a saved session; choose a new folder"
            )
        staging = final.with_name(f".{final.name}.partial")
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        self.original.save(staging / "original.png")
        records = []
        for turn in self._turns:
            stem = f"turn-{turn.index:04d}"
            turn.image.save(staging / f"{stem}.png")
            record: dict[str, Any] = {
                "index": turn.index,
                "parent": turn.parent,
                "instruction": turn.instruction,
                "settings": dict(turn.settings),
                "image": f"{stem}.png",
                "mask": None,
                "latents": None,
            }
            if turn.mask is not None:
                record["mask"] = f"{stem}-mask.png"
                turn.mask.save(staging / record["mask"])
            if turn.latents is not None:
                from safetensors.torch import save_file

                record["latents"] = f"{stem}.safetensors"
                save_file({"latents": turn.latents.contiguous()}, staging / record["latents"])
            records.append(record)
        write_json_atomic(
            staging / "session.json",
            {
                "version": SESSION_VERSION,
                "chain": self.chain,
                "seed": self.seed,
                "current": self._current,
                "original": "original.png",
                "turns": records,
            },
        )
        return publish_dir(staging, final)

    @classmethod
    def load(cls, folder: str | os.PathLike[str], pipe: EditPipeline) -> EditSession:
        """Reads a session written by :meth:`save`, to continue it with ``pipe``.

        Raises:
            FileNotFoundError: ``session.json`` or a file it names is missing (the message names
                the file and the turn).
            ValueError: ``session.json`` is malformed or of another version.
        """
        if not isinstance(pipe, EditPipeline):
            raise TypeError(f"pipe must be an EditPipeline, got {type(pipe).__name__}")
        root = Path(folder)
        manifest = root / "session.json"
        if not manifest.is_file():
            raise FileNotFoundError(f"folder: {root} holds no session.json (not a saved session)")
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{manifest} is not valid JSON ({error})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{manifest} must hold a JSON object, got {type(data).__name__}")
        if data.get("version") != SESSION_VERSION:
            raise ValueError(
                f"{manifest}: version {data.get('version')!r} is not one this instructedit "
                f"reads ({SESSION_VERSION})"
            )
        for key in ("chain", "seed", "original", "turns"):
            if key not in data:
                raise ValueError(f"{manifest}: missing the key {key!r}")
        if not isinstance(data["turns"], list):
            raise ValueError(f"{manifest}: 'turns' must be a list")
        original = _read_image(root, data["original"], "RGB", f"{manifest}: original")
        try:
            session = cls(pipe, original, seed=data["seed"], chain=data["chain"])
        except ValueError as error:
            raise ValueError(f"{manifest}: {error}") from None
        for position, record in enumerate(data["turns"]):
            session._turns.append(_read_turn(root, manifest, position, record, session.chain))
        session.go_to(_current_from(manifest, data.get("current"), len(session._turns)))
        return session


def _check_seed(seed: Any, argument: str) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"{argument} must be an integer >= 0, got {seed!r}")
    return seed


def _mask_setting(mask_image: Any, stored: str | None) -> str | None:
    """What a turn records of its mask: ``None`` (the whole image), ``"auto"`` or ``"given"``."""
    if mask_image is None:
        return stored
    if isinstance(mask_image, str) and mask_image in ("auto", "none"):
        return None if mask_image == "none" else "auto"
    return "given"


def _mask_to_pil(mask: Tensor) -> Image.Image:
    """``[H, W]`` in [0, 1] as an 8-bit ``"L"`` image."""
    values = (mask.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(values), mode="L")


def _read_image(root: Path, name: Any, mode: str, where: str) -> Image.Image:
    if not isinstance(name, str) or Path(name).name != name:
        raise ValueError(f"{where}: the file name must be a plain name, got {name!r}")
    path = root / name
    if not path.is_file():
        raise FileNotFoundError(f"{where}: {path} is missing")
    try:
        with Image.open(path) as opened:
            return opened.convert(mode)
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{where}: {path} is not a readable image ({error})") from None


def _read_turn(root: Path, manifest: Path, position: int, record: Any, chain: str) -> Turn:
    """The turn ``record`` of ``session.json`` with its files, or an error naming the turn."""
    where = f"{manifest}: turn {position}"
    if not isinstance(record, Mapping):
        raise ValueError(f"{where} must be a JSON object, got {type(record).__name__}")
    missing = [
        key for key in ("index", "parent", "instruction", "settings", "image") if key not in record
    ]
    if missing:
        raise ValueError(f"{where}: missing {missing}")
    if record["index"] != position:
        raise ValueError(f"{where}: index must be {position} (turns are stored in order)")
    if not isinstance(record["instruction"], str) or not isinstance(record["settings"], dict):
        raise ValueError(f"{where}: instruction must be a string and settings an object")
    parent = record["parent"]
    if parent is not None and (
        isinstance(parent, bool) or not isinstance(parent, int) or not 0 <= parent < position
    ):
        raise ValueError(f"{where}: parent must be null or an earlier turn, got {parent!r}")
    latents = None
    if chain == "latents":
        name = record.get("latents")
        if not isinstance(name, str) or Path(name).name != name:
            raise ValueError(f"{where}: a session chained in latents names a latents file")
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(f"{where}: {path} is missing")
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            latents = load_file(path)["latents"]
        except (SafetensorError, KeyError, OSError) as error:
            raise ValueError(f"{where}: {path} holds no readable latents ({error})") from None
    mask_name = record.get("mask")
    return Turn(
        index=position,
        parent=parent,
        instruction=record["instruction"],
        settings=dict(record["settings"]),
        image=_read_image(root, record["image"], "RGB", where),
        mask=None if mask_name is None else _read_image(root, mask_name, "L", where),
        latents=latents,
    )


def _current_from(manifest: Path, current: Any, count: int) -> int | None:
    if current is None:
        return None
    if isinstance(current, bool) or not isinstance(current, int) or not 0 <= current < count:
        raise ValueError(f"{manifest}: current must be None or a turn index below {count}")
    return current
