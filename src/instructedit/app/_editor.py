"""What the web app does, without the web page: the handlers its buttons call.

:class:`AppEditor` holds one loaded pipeline and turns what a page sends (an image as uploaded
or drawn on, an instruction, settings) into an edit, the oracle's verdict on bundled scenes, and
the turns made so far. Every handler checks its input and raises ``ValueError`` with a message
for the person at the page; the page shows it instead of a traceback.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from instructedit.images import DEFAULT_MAX_PIXELS
from instructedit.worlds.shapes import (
    SUCCESS_TOLERANCE,
    Scene,
    judge,
    random_scene,
    render,
    scene_edit,
)

__all__ = [
    "MASK_CHOICES",
    "SCHEDULER_CHOICES",
    "AppEdit",
    "AppEditor",
    "AppTurn",
    "MaskChoice",
]

logger = logging.getLogger(__name__)

MaskChoice = Literal[
    "as the model stores", "found from the instruction", "drawn on the input", "none"
]
MASK_CHOICES: tuple[MaskChoice, ...] = (
    "as the model stores",
    "found from the instruction",
    "drawn on the input",
    "none",
)
"""The page's mask options: the model's stored masking (``mask_image=None``), ``"auto"``, the
strokes drawn on the input, or the whole image (``"none"``)."""

STORED_SCHEDULER = "as the model stores"
SCHEDULER_CHOICES: tuple[str, ...] = (
    STORED_SCHEDULER,
    "euler_ancestral",
    "euler",
    "ddim",
    "dpm_solver++",
    "unipc",
    "heun",
    "lms",
    "ddpm",
)
"""The page's scheduler options: the model's own, or a name of
:data:`~instructedit.sampling.SCHEDULERS` built from its config."""

DISPLAY_SIDE = 256
"""Images smaller than this are shown enlarged (nearest neighbour) to about this side."""


@dataclass(frozen=True)
class AppTurn:
    """One image of the page's history: the original (``instruction`` ``None``) or an edit.

    Attributes:
        image: the image at the size the model edits.
        instruction: the instruction that made it; ``None`` for an input.
        scene: the ShapesWorld scene it shows, when known (a bundled scene, or a scene the oracle
            judged an edit of a success to reach); the oracle judges edits of it.
        verdict: the oracle's verdict on the edit that made it, in words.
    """

    image: Image.Image
    instruction: str | None = None
    scene: Scene | None = None
    verdict: str | None = None

    @property
    def caption(self) -> str:
        """The gallery's caption: "input", or the instruction."""
        return "input" if self.instruction is None else self.instruction


@dataclass(frozen=True)
class AppEdit:
    """What one press of **Edit** returns.

    Attributes:
        turn: the new turn (the edited image, its instruction, the scene it reaches, the verdict).
        seed: the seed used (drawn when the page asks for a random one).
        text_scale: s_T used.
        image_scale: s_I used.
        mask: the mask the edit used, ``"L"`` at the edited image's size, or ``None``.
        note: what was done to the input's size, in words, or ``None``.
    """

    turn: AppTurn
    seed: int
    text_scale: float
    image_scale: float
    mask: Image.Image | None = None
    note: str | None = None


@dataclass
class AppEditor:
    """A loaded editor behind the web page: one per process, shared by every visitor (the page
    queues their edits, one at a time).

    Args:
        pipe: an :class:`~instructedit.pipeline.EditPipeline`.
        name: how the page names the model.
        working_side: the model's native side, in pixels (inputs above 4× its area are
            scaled to it).
        max_pixels: the largest upload accepted (width × height), before resizing.
        shapes: whether the model edits ShapesWorld scenes (the page offers bundled scenes and
            the oracle's verdict).
    """

    pipe: Any
    name: str
    working_side: int
    max_pixels: int = DEFAULT_MAX_PIXELS
    shapes: bool = False
    _schedulers: dict[str, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(cls, model: str = "shapes", *, device: str = "auto") -> AppEditor:
        """Loads ``model`` (``"shapes"``, a folder or a hub id) once, on ``device`` (``"auto"``:
        CUDA when available, in float16 there)."""
        from instructedit.default import names_default
        from instructedit.pipeline import EditPipeline

        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"model must be 'shapes', a folder or a hub id, got {model!r}")
        resolved = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        )
        dtype = torch.float16 if resolved.type == "cuda" else torch.float32
        pipe = EditPipeline.from_pretrained(model, torch_dtype=dtype).to(resolved)
        return cls(pipe, name=model, working_side=pipe.native_size, shapes=names_default(model))

    # ------------------------------------------------------------------------------ images

    @property
    def display_scale(self) -> int:
        """How much the page enlarges images (nearest neighbour): 8 for 32-pixel scenes."""
        return max(1, DISPLAY_SIDE // self.working_side)

    def display(self, image: Image.Image) -> Image.Image:
        """``image`` as the page shows it: enlarged without smoothing when it is small."""
        scale = self.display_scale
        if scale == 1:
            return image
        size = (image.width * scale, image.height * scale)
        return image.resize(size, Image.Resampling.NEAREST)

    def fit(self, image: Any, *, argument: str = "Input") -> Image.Image:
        """An uploaded or displayed image as the model edits it: RGB, and above 4× the native
        area scaled to a long side of :attr:`working_side` (an image enlarged by
        :meth:`display` comes back exactly); smaller images keep their size.

        Raises:
            ValueError: no image, not an image, or more than :attr:`max_pixels` pixels.
        """
        if image is None:
            raise ValueError(f"{argument}: no image; upload one, paste one or pick a scene")
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        if not isinstance(image, Image.Image):
            raise ValueError(f"{argument}: not an image ({type(image).__name__})")
        width, height = image.size
        if width * height > self.max_pixels:
            raise ValueError(
                f"{argument}: the image is {width}×{height} pixels; at most {self.max_pixels:,} "
                "pixels (width × height) are accepted"
            )
        if min(width, height) < 8:
            raise ValueError(f"{argument}: the image is {width}×{height} pixels; at least 8×8")
        image = image.convert("RGB")
        if width * height <= 4 * self.working_side**2:  # near the native size: kept
            return image
        scale = self.working_side / max(width, height)
        size = (max(8, round(width * scale)), max(8, round(height * scale)))
        exact = (
            width % size[0] == 0 and height % size[1] == 0 and width // size[0] == height // size[1]
        )
        method = Image.Resampling.NEAREST if exact else Image.Resampling.LANCZOS
        return image.resize(size, method)

    def read_input(self, value: Any) -> tuple[Image.Image, Image.Image | None]:
        """The image and the drawn mask (``"L"``, white where drawn; ``None`` without strokes)
        from the input's value: an image editor's ``{"background", "layers", "composite"}`` or
        a plain image."""
        if isinstance(value, Mapping):
            background = value.get("background")
            image = self.fit(background)
            strokes = [layer for layer in value.get("layers") or [] if layer is not None]
            mask = None
            for layer in strokes:
                if isinstance(layer, np.ndarray):
                    layer = Image.fromarray(layer)
                alpha = layer.convert("RGBA").getchannel("A")
                if alpha.getbbox() is None:  # an empty layer
                    continue
                alpha = alpha.resize(image.size, Image.Resampling.BOX)
                mask = (
                    alpha
                    if mask is None
                    else Image.fromarray(np.maximum(np.asarray(mask), np.asarray(alpha)))
                )
            return image, mask
        return self.fit(value), None

    # ------------------------------------------------------------------------------ scenes

    def new_scene(self, seed: int | None = None) -> AppTurn:
        """A freshly drawn ShapesWorld scene (from ``seed``, else a random one) as a first turn."""
        rng = random.Random(f"app-scene:{random.randrange(2**31) if seed is None else seed}")
        scene = random_scene(rng)
        return AppTurn(render(scene, self.working_side), scene=scene)

    def scene_turn(self, scene: Scene) -> AppTurn:
        """A bundled scene as a first turn."""
        return AppTurn(render(scene, self.working_side), scene=scene)

    # ------------------------------------------------------------------------------ editing

    def random_guidance(self, rng: random.Random | None = None) -> tuple[float, float]:
        """s_T and s_I drawn within ±20 % of the model's stored guidance (the official app's
        "Randomize CFG" draws around the paper's scales the same way)."""
        rng = rng or random.Random()
        stored = self.pipe.guidance
        return (
            round(stored.text_scale * rng.uniform(0.8, 1.2), 2),
            round(stored.image_scale * rng.uniform(0.8, 1.2), 2),
        )

    def _scheduler(self, name: str) -> Any:
        if name not in SCHEDULER_CHOICES:
            raise ValueError(f"Scheduler: one of {list(SCHEDULER_CHOICES)}, got {name!r}")
        if name == STORED_SCHEDULER:
            return self._schedulers.setdefault(STORED_SCHEDULER, self.pipe.scheduler)
        if name not in self._schedulers:
            from instructedit.sampling import scheduler_from_name

            stored = self._schedulers.setdefault(STORED_SCHEDULER, self.pipe.scheduler)
            self._schedulers[name] = scheduler_from_name(name, stored.config)
        return self._schedulers[name]

    def edit(
        self,
        value: Any,
        instruction: str,
        *,
        steps: int = 20,
        text_scale: float | None = None,
        image_scale: float | None = None,
        seed: int | None = 0,
        scheduler: str = STORED_SCHEDULER,
        mask: MaskChoice = "as the model stores",
        scene: Scene | None = None,
        speed: str = "exact",
        progress: Callable[[int, int], None] | None = None,
    ) -> AppEdit:
        """Edits the input ``value`` (see :meth:`read_input`) by ``instruction``.

        Args:
            value: the input as the page sends it.
            instruction: what to change.
            steps: denoising steps, 1 to 500.
            text_scale: s_T; ``None``: the model's stored guidance.
            image_scale: s_I; ``None``: the model's stored guidance.
            seed: seed of the sampling noise; ``None`` draws one.
            scheduler: one of :data:`SCHEDULER_CHOICES`.
            mask: one of :data:`MASK_CHOICES`.
            scene: the ShapesWorld scene the input shows, when known: the oracle judges the edit.
            speed: a speed preset of :data:`~instructedit.pipeline.SPEED_PRESETS`.
            progress: called with (steps done, steps) after every step.

        Raises:
            ValueError: a message for the page, naming the setting (before the model runs).
        """
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError(
                "Instruction: type what to change, e.g. 'make the circle blue' or 'make it snowy'"
            )
        instruction = instruction.strip()
        steps = _whole(steps, "Steps", 1, 500)
        for label, scale in (("Text guidance", text_scale), ("Image guidance", image_scale)):
            if scale is not None and (not np.isfinite(scale) or scale < 0):
                raise ValueError(f"{label}: a number >= 0, got {scale!r}")
        seed = random.randrange(2**31) if seed is None else _whole(seed, "Seed", 0, 2**63 - 1)
        if mask not in MASK_CHOICES:
            raise ValueError(f"Mask: one of {list(MASK_CHOICES)}, got {mask!r}")
        from instructedit.pipeline import SPEED_PRESETS

        if speed not in SPEED_PRESETS:
            raise ValueError(f"Speed: one of {list(SPEED_PRESETS)}, got {speed!r}")
        image, drawn = self.read_input(value)
        note = self._resize_note(value, image)
        mask_image: Any = {"as the model stores": None, "found from the instruction": "auto"}.get(
            mask, "none"
        )
        if mask == "drawn on the input":
            if drawn is None:
                raise ValueError(
                    "Mask: draw on the input where the edit may act, or choose another mask option"
                )
            mask_image = drawn
        guidance = self.pipe.guidance.with_scales(text_scale=text_scale, image_scale=image_scale)

        def step(pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> None:
            if progress is not None:
                progress(index + 1, steps)

        with self._lock:  # one edit at a time on the shared pipeline
            stored = self._scheduler(STORED_SCHEDULER)
            self.pipe.scheduler = self._scheduler(scheduler)
            try:
                output = self.pipe(
                    image,
                    instruction,
                    num_inference_steps=steps,
                    guidance_scale=guidance.text_scale,
                    image_guidance_scale=guidance.image_scale,
                    generator=torch.Generator().manual_seed(seed),
                    mask_image=mask_image,
                    speed=speed,
                    callback_on_step_end=step,
                    progress=False,
                )
            finally:
                self.pipe.scheduler = stored
        edited = output.images[0]
        used = None
        if output.masks is not None:
            used = Image.fromarray((output.masks[0, 0].numpy() * 255).round().astype(np.uint8))
        verdict, reached = self._verdict(scene, instruction, edited)
        turn = AppTurn(edited, instruction, reached, verdict)
        logger.info("edited %r (seed %d): %s", instruction, seed, verdict or "no verdict")
        return AppEdit(
            turn, seed, float(guidance.text_scale), float(guidance.image_scale), used, note
        )

    def _resize_note(self, value: Any, image: Image.Image) -> str | None:
        """What :meth:`fit` did to an upload, in words (``None`` when nothing, or when it only
        undid the page's own enlargement)."""
        original = value.get("background") if isinstance(value, Mapping) else value
        size = getattr(original, "size", None)
        if size is None and isinstance(original, np.ndarray):
            size = (original.shape[1], original.shape[0])
        shown = (image.width * self.display_scale, image.height * self.display_scale)
        if size is None or tuple(size) in (image.size, shown):
            return None
        side = self.working_side
        return (
            f"resized {size[0]}×{size[1]} → {image.width}×{image.height} for this {side}×{side} "
            "editor (inputs above 4× its area are brought to its size)"
        )

    def _verdict(
        self, scene: Scene | None, instruction: str, edited: Image.Image
    ) -> tuple[str | None, Scene | None]:
        """The oracle's verdict in words and the scene the edit reaches if it succeeded."""
        if scene is None or not self.shapes:
            return None, None
        edit = scene_edit(scene, instruction)
        if edit is None:
            return (
                "The oracle does not read this instruction for this scene; it knows recolours "
                "('make the circle blue'), backgrounds ('make the background black'), additions "
                "('add a red square') and removals ('remove the circle').",
                None,
            )
        verdict = judge(edit, edited, size=self.working_side)
        success = verdict.success()
        words = (
            f"{'success' if success else 'not a success'}: edit "
            f"{'realised' if verdict.realised else 'not realised'}, the rest {verdict.rest}, "
            f"unchanged-region error {verdict.unchanged_error:.3f} (success needs realised, "
            f"intact and at most {SUCCESS_TOLERANCE})"
        )
        return words, (edit.target if success else None)


def _whole(value: Any, label: str, low: int, high: int) -> int:
    """``value`` as an int in [low, high] (a page's number box sends 20.0 for 20), or a
    ``ValueError`` naming ``label``."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        allowed = f"from {low} to {high}" if high < 2**32 else f">= {low}"
        raise ValueError(f"{label}: a whole number {allowed}, got {value!r}")
    return value
