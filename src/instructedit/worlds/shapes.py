"""ShapesWorld: scenes of coloured shapes, their captions, caption edits, and an oracle.

A scene is one or two non-overlapping shapes (circle, square, triangle) in named colours on a
coloured background, rendered anti-aliased at 32×32 by default. Captions follow a small grammar
("a red circle and a blue square on a white background"); :class:`ShapesCaptionEditor` plays
GPT-3's part on those captions (recolour a shape, change the background, add or remove a shape,
several phrasings each). :func:`apply_edit` renders the ground truth of an edit, and
:func:`judge` scores any output image: did the edit happen, and how much did the rest change.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image, ImageDraw

from instructedit.captions import CaptionEdit, Rejection, caption_rng

if TYPE_CHECKING:
    from instructedit.data import EditRecord

__all__ = [
    "COLOURS",
    "EDIT_FAMILIES",
    "SHAPES",
    "SUCCESS_TOLERANCE",
    "EditFamily",
    "Judgement",
    "Rest",
    "Scene",
    "SceneEdit",
    "Shape",
    "ShapesCaptionEditor",
    "apply_edit",
    "caption",
    "edit_record",
    "edit_region",
    "judge",
    "nearest_colours",
    "parse_caption",
    "random_edit",
    "random_scene",
    "region_masks",
    "render",
    "scene_edit",
    "scene_from_caption",
]

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 215, 40),
    "purple": (150, 60, 190),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
"""The eight named colours (sRGB)."""

SHAPES = ("circle", "square", "triangle")
"""The three shape kinds."""

EditFamily = Literal["recolour", "background", "add", "remove"]
EDIT_FAMILIES: tuple[EditFamily, ...] = ("recolour", "background", "add", "remove")

_PHRASINGS: dict[EditFamily, tuple[str, ...]] = {
    "recolour": (
        "make the {shape} {new}",
        "turn the {old} {shape} {new}",
        "colour the {shape} {new}",
        "change the {old} {shape} to {new}",
        "paint the {shape} {new}",
    ),
    "background": (
        "make the background {new}",
        "change the background to {new}",
        "put it on a {new} background",
        "paint the background {new}",
    ),
    "add": (
        "add a {new} {shape}",
        "put a {new} {shape} in the picture",
        "draw a {new} {shape} too",
    ),
    "remove": (
        "remove the {old} {shape}",
        "take away the {shape}",
        "delete the {old} {shape}",
        "get rid of the {shape}",
    ),
}


@dataclass(frozen=True)
class Shape:
    """One shape: kind, colour name, centre (x, y) and radius as fractions of the image side."""

    kind: str
    colour: str
    x: float
    y: float
    radius: float


@dataclass(frozen=True)
class Scene:
    """A background colour and one or two shapes."""

    background: str
    shapes: tuple[Shape, ...]


@dataclass(frozen=True)
class SceneEdit:
    """An edit of a scene with its ground truth.

    Attributes:
        family: ``"recolour"``, ``"background"``, ``"add"`` or ``"remove"``.
        instruction: the edit instruction.
        source: the scene before.
        target: the scene after (ground truth).
        shape_index: the edited shape (index in ``source`` for recolour/remove, in ``target``
            for add; ``None`` for background).
    """

    family: EditFamily
    instruction: str
    source: Scene
    target: Scene
    shape_index: int | None


def _polygon(shape: Shape, size: int) -> list[tuple[float, float]]:
    cx, cy, r = shape.x * size, shape.y * size, shape.radius * size
    if shape.kind == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape.kind == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    raise ValueError(f"no polygon for {shape.kind}")


def _draw(
    draw: ImageDraw.ImageDraw, shape: Shape, size: int, fill: int | tuple[int, int, int]
) -> None:
    if shape.kind == "circle":
        cx, cy, r = shape.x * size, shape.y * size, shape.radius * size
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape.kind in ("square", "triangle"):
        draw.polygon(_polygon(shape, size), fill=fill)
    else:
        raise ValueError(f"shape kind must be one of {SHAPES}, got {shape.kind!r}")


def render(scene: Scene, size: int = 32, *, supersample: int = 4) -> Image.Image:
    """Renders a scene anti-aliased (drawn ``supersample`` times larger and downscaled with a box filter)."""
    big = size * supersample
    image = Image.new("RGB", (big, big), COLOURS[scene.background])
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        _draw(draw, shape, big, COLOURS[shape.colour])
    return image.resize((size, size), Image.Resampling.BOX)


def region_masks(scene: Scene, size: int = 32, *, supersample: int = 4) -> np.ndarray:
    """Per-shape visible coverage ``[len(shapes), size, size]`` in [0, 1], as :func:`render` draws
    the scene: later shapes occlude earlier ones, so a pixel of :func:`render` is the background's
    colour weighted by ``1 - masks.sum(0)`` plus each shape's colour weighted by its mask."""
    big = size * supersample
    covered = np.zeros((big, big), dtype=bool)
    masks = []
    for shape in reversed(scene.shapes):  # the last drawn is on top
        canvas = Image.new("1", (big, big), 0)
        _draw(ImageDraw.Draw(canvas), shape, big, 1)
        visible = np.asarray(canvas, dtype=bool) & ~covered
        covered |= visible
        masks.append(visible.reshape(size, supersample, size, supersample).mean(axis=(1, 3)))
    if not masks:
        return np.zeros((0, size, size), np.float32)
    return np.stack(masks[::-1]).astype(np.float32)


_REACH = 2**0.5


def _free_shape(
    rng: random.Random, kind: str, colour: str, others: Sequence[Shape]
) -> Shape | None:
    for _ in range(200):
        radius = rng.uniform(0.13, 0.2)
        x, y = rng.uniform(radius, 1 - radius), rng.uniform(radius, 1 - radius)
        candidate = Shape(kind, colour, round(x, 4), round(y, 4), round(radius, 4))
        # Squares and triangles reach √2·r from the centre: keep those discs apart.
        if all(
            (candidate.x - o.x) ** 2 + (candidate.y - o.y) ** 2
            > (_REACH * (candidate.radius + o.radius) + 0.03) ** 2
            for o in others
        ):
            return candidate
    return None


def random_scene(rng: random.Random, *, max_shapes: int = 2) -> Scene:
    """Draws a scene: 1..``max_shapes`` non-overlapping shapes whose colours differ from each other
    and from the background."""
    names = list(COLOURS)
    background = rng.choice(names)
    count = rng.randint(1, max_shapes)
    shapes: list[Shape] = []
    used = {background}
    while len(shapes) < count:
        colour = rng.choice([c for c in names if c not in used])
        shape = _free_shape(rng, rng.choice(SHAPES), colour, shapes)
        if shape is None:
            break
        shapes.append(shape)
        used.add(colour)
    return Scene(background, tuple(shapes))


def scene_from_caption(text: str, rng: random.Random) -> Scene:
    """A random layout of the scene a caption describes: its shapes, in order, placed as
    :func:`random_scene` places them (sizes and positions drawn from ``rng``, no overlap).

    Raises:
        ValueError: ``text`` is not of the grammar, or its shapes do not fit.
    """
    parsed = parse_caption(text)
    if parsed is None:
        raise ValueError(f"text is not a caption of the ShapesWorld grammar: {text!r}")
    described, background = parsed
    for _ in range(20):  # a large central first shape can leave the second no room: start over
        shapes: list[Shape] = []
        for colour, kind in described:
            shape = _free_shape(rng, kind, colour, shapes)
            if shape is None:
                break
            shapes.append(shape)
        else:
            return Scene(background, tuple(shapes))
    raise ValueError(f"the shapes of {text!r} found no room in 20 layouts")


def caption(scene: Scene) -> str:
    """The grammar: ``"a red circle and a blue square on a white background"``."""
    parts = " and ".join(f"a {s.colour} {s.kind}" for s in scene.shapes)
    return f"{parts} on a {scene.background} background"


_CAPTION = re.compile(
    r"^(?P<shapes>a \w+ \w+(?: and a \w+ \w+)*) on a (?P<background>\w+) background$"
)


def parse_caption(text: str) -> tuple[list[tuple[str, str]], str] | None:
    """Parses a caption of the grammar into ([(colour, kind), …], background), or ``None``."""
    match = _CAPTION.match(text.strip())
    if match is None or match.group("background") not in COLOURS:
        return None
    shapes = []
    for part in match.group("shapes").split(" and "):
        _, colour, kind = part.split(" ")
        if colour not in COLOURS or kind not in SHAPES:
            return None
        shapes.append((colour, kind))
    return shapes, match.group("background")


def _phrasings(family: EditFamily, scene: Scene, index: int) -> tuple[str, ...]:
    """The phrasings that name shape ``index`` unambiguously: with its colour when another shape
    of the scene has the same kind."""
    kind = scene.shapes[index].kind
    if sum(s.kind == kind for s in scene.shapes) > 1:
        return tuple(t for t in _PHRASINGS[family] if "{old}" in t)
    return _PHRASINGS[family]


def random_edit(
    scene: Scene, rng: random.Random, family: EditFamily | None = None
) -> SceneEdit | None:
    """Draws an edit of ``scene`` (of ``family``, or any applicable one) with its ground truth."""
    names = list(COLOURS)
    families = [family] if family is not None else list(EDIT_FAMILIES)
    rng.shuffle(families)
    for chosen in families:
        used = {scene.background, *(s.colour for s in scene.shapes)}
        free = [c for c in names if c not in used]
        if chosen == "recolour" and scene.shapes and free:
            index = rng.randrange(len(scene.shapes))
            old = scene.shapes[index]
            new = rng.choice(free)
            shapes = list(scene.shapes)
            shapes[index] = replace(old, colour=new)
            text = rng.choice(_phrasings("recolour", scene, index)).format(
                shape=old.kind, old=old.colour, new=new
            )
            return SceneEdit("recolour", text, scene, replace(scene, shapes=tuple(shapes)), index)
        if chosen == "background" and free:
            new = rng.choice(free)
            text = rng.choice(_PHRASINGS["background"]).format(new=new)
            return SceneEdit("background", text, scene, replace(scene, background=new), None)
        if chosen == "add" and len(scene.shapes) < 2 and free:
            new = rng.choice(free)
            shape = _free_shape(rng, rng.choice(SHAPES), new, scene.shapes)
            if shape is None:
                continue
            text = rng.choice(_PHRASINGS["add"]).format(shape=shape.kind, new=new)
            return SceneEdit(
                "add", text, scene, replace(scene, shapes=(*scene.shapes, shape)), len(scene.shapes)
            )
        if chosen == "remove" and len(scene.shapes) == 2:
            index = rng.randrange(2)
            old = scene.shapes[index]
            text = rng.choice(_phrasings("remove", scene, index)).format(
                shape=old.kind, old=old.colour
            )
            kept = tuple(s for i, s in enumerate(scene.shapes) if i != index)
            return SceneEdit("remove", text, scene, replace(scene, shapes=kept), index)
    return None


def _phrasing_pattern(template: str) -> re.Pattern[str]:
    colours = "|".join(COLOURS)
    pattern = re.escape(template)
    for field, choices in (("shape", "|".join(SHAPES)), ("old", colours), ("new", colours)):
        pattern = pattern.replace(re.escape("{" + field + "}"), f"(?P<{field}>{choices})")
    return re.compile(pattern)


_PATTERNS = [
    (family, _phrasing_pattern(template))
    for family, templates in _PHRASINGS.items()
    for template in templates
]


def scene_edit(scene: Scene, instruction: str, *, seed: int = 0) -> SceneEdit | None:
    """The ground truth of ``instruction`` applied to ``scene``, for instructions of the grammar's
    phrasings ("make the circle blue", "remove the red square", …); ``None`` otherwise, or when
    the instruction names no shape of the scene or cannot apply (a third shape, a colour already
    in use). An added shape's position is drawn from ``seed`` (the oracle does not judge it)."""
    text = " ".join(instruction.lower().split())
    for family, pattern in _PATTERNS:
        match = pattern.fullmatch(text)
        if match is None:
            continue
        fields = match.groupdict()
        used = {scene.background, *(s.colour for s in scene.shapes)}
        new: str = fields.get("new") or ""
        if family == "background":
            if new in used:
                return None
            return SceneEdit(family, instruction, scene, replace(scene, background=new), None)
        if family == "add":
            if new in used or len(scene.shapes) >= 2:
                return None
            rng = random.Random(seed)
            shape = None
            for _ in range(20):  # 4000 draws in all: a large central shape leaves little room
                shape = shape or _free_shape(rng, fields["shape"], new, scene.shapes)
            if shape is None:
                return None
            target = replace(scene, shapes=(*scene.shapes, shape))
            return SceneEdit(family, instruction, scene, target, len(scene.shapes))
        matches = [
            i
            for i, s in enumerate(scene.shapes)
            if s.kind == fields["shape"] and fields.get("old") in (None, s.colour)
        ]
        if len(matches) != 1:
            return None
        index = matches[0]
        if family == "recolour":
            if new in used:
                return None
            shapes = list(scene.shapes)
            shapes[index] = replace(shapes[index], colour=new)
            return SceneEdit(
                family, instruction, scene, replace(scene, shapes=tuple(shapes)), index
            )
        kept = tuple(s for i, s in enumerate(scene.shapes) if i != index)
        return SceneEdit(family, instruction, scene, replace(scene, shapes=kept), index)
    return None


def apply_edit(edit: SceneEdit, size: int = 32) -> Image.Image:
    """Renders the ground truth of an edit."""
    return render(edit.target, size)


def edit_record(edit: SceneEdit, size: int = 32) -> EditRecord:
    """``edit`` as a training or evaluation example: the rendered input, the instruction, the
    ground-truth result and both captions."""
    from instructedit.data import EditRecord

    return EditRecord(
        input_image=render(edit.source, size),
        edit_prompt=edit.instruction,
        edited_image=apply_edit(edit, size),
        input_caption=caption(edit.source),
        output_caption=caption(edit.target),
    )


class ShapesCaptionEditor:
    """GPT-3's part in ShapesWorld: edits captions of the grammar with varied phrasings.

    Recolours a shape, changes the background, adds a shape (to one-shape captions) or removes
    one (from two-shape captions), choosing the family and words from
    :func:`~instructedit.captions.caption_rng` (``seed``, the caption and torch's global generator,
    which :func:`~instructedit.datagen.generate_dataset` seeds per caption index). Captions outside
    the grammar are rejected (``"unparseable"``).

    The captions of a ShapesWorld run repeat (there are 168 one-shape captions), and each repeat
    gets its own edit, as GPT-3's sampling would give it: the editor trained on the pairs learns
    from as many distinct caption edits as there are captions (the research notes measure what
    too few of them cost).
    """

    def __init__(self, *, seed: int = 0, families: Sequence[EditFamily] = EDIT_FAMILIES) -> None:
        self.seed = seed
        self.families = tuple(families)

    def edit(self, captions: Sequence[str]) -> list[CaptionEdit | Rejection]:
        """Returns one edit or rejection per caption."""
        results: list[CaptionEdit | Rejection] = []
        for text in captions:
            parsed = parse_caption(text)
            if parsed is None:
                results.append(Rejection(text, "unparseable"))
                continue
            shapes, background = parsed
            # A caption places nothing: put its shapes in opposite corners, small, so that an
            # added shape always finds room.
            corners = ((0.2, 0.2), (0.8, 0.8))
            scene = Scene(
                background,
                tuple(Shape(k, c, *corners[i], 0.13) for i, (c, k) in enumerate(shapes)),
            )
            rng = caption_rng(self.seed, text)
            family = rng.choice(self.families)
            edit = random_edit(scene, rng, family)
            if edit is None:
                edit = random_edit(scene, rng)
            if edit is None:
                results.append(Rejection(text, "no_edit"))
                continue
            results.append(CaptionEdit(text, edit.instruction, caption(edit.target)))
        return results


Rest = Literal["intact", "spilled", "redrawn"]
"""What became of the regions an edit leaves alone (:attr:`Judgement.rest`)."""


SUCCESS_TOLERANCE = 0.08
"""The largest unchanged-region error (pixels in [0, 1]) of a successful edit."""


@dataclass(frozen=True)
class Judgement:
    """The oracle's verdict on one output image.

    Attributes:
        realised: whether the edit happened.
        unchanged_error: mean absolute error (pixels in [0, 1]) outside the edited region,
            against the ground truth.
        region_colour: the named colour nearest to the edited region's mean (``None`` for
            add/remove).
        rest: the regions the edit leaves alone — the core of every shape it keeps and, but
            for background edits, the background away from the shapes — read as named colours
            (a region's mean; for additions, whose new shape may lie anywhere on the background,
            the colour most of the background's pixels show): ``"intact"`` when each still shows
            its own colour, ``"spilled"`` when one shows the edit's new colour (the instruction
            applied to the wrong region, or to more than one: a recolour painting the background,
            a removal or a background change erasing a kept shape, an addition drawn over one),
            ``"redrawn"`` when one shows another colour (a shape erased by a recolour or an
            addition shows the background's colour, not the new one, so it reads so). Spilled
            wins over redrawn.
    """

    realised: bool
    unchanged_error: float
    region_colour: str | None
    rest: Rest

    def success(self, tolerance: float = SUCCESS_TOLERANCE) -> bool:
        """Realised, the rest intact and an unchanged-region error at most ``tolerance``: what
        the ShapesWorld guide counts as a successful edit."""
        return self.realised and self.rest == "intact" and self.unchanged_error <= tolerance


def edit_region(edit: SceneEdit, size: int = 32) -> np.ndarray:
    """Where ``edit`` may change the scene, as the oracle reads it: ``[size, size]`` in {0, 1}.

    The edited shape, dilated by one pixel, for recolour and remove edits; everything but the
    existing shapes' cores for background and add edits (:func:`judge` measures the unchanged
    error on the rest). Used as a mask it is the upper bound of what any mask can give an editor.
    """
    source_masks = region_masks(edit.source, size)
    if edit.family in ("background", "add"):
        covered = (
            source_masks.sum(axis=0) if len(source_masks) else np.zeros((size, size), np.float32)
        )
        return (~(covered > 0.9)).astype(np.float32)
    assert edit.shape_index is not None
    return _dilate(source_masks[edit.shape_index] > 0.0).astype(np.float32)


def judge(edit: SceneEdit, output: Image.Image, *, size: int = 32) -> Judgement:
    """Scores ``output`` (resized to ``size``) against the edit's ground truth.

    * recolour: the shape's core region (coverage > 0.9) has the new colour as its nearest named
      colour;
    * background: likewise for the background's core (no shape within a pixel);
    * add: the new colour covers, anywhere outside the existing shapes, at least half the area of
      the ground-truth shape (the instruction does not say where);
    * remove: the removed shape's core is nearest to the background colour.

    The unchanged region is everything but the edited shape (dilated by one pixel) for recolour
    and remove, and the existing shapes for background and add edits. The unchanged error
    averages over its pixels, so erasing a small kept shape costs it little (removals that erase
    both shapes of the held-out scenes score 0.01 to 0.09, about 0.04 on average);
    :attr:`Judgement.rest` reads the kept regions one by one, which the error cannot.
    """
    pixels = np.asarray(
        output.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), np.float32
    )
    truth = np.asarray(render(edit.target, size), np.float32)
    source_masks = region_masks(edit.source, size)
    target_masks = region_masks(edit.target, size)

    def core_colour(mask: np.ndarray) -> str | None:
        core = mask > 0.9
        return (
            str(nearest_colours(pixels[core].mean(axis=0)[None, None])[0, 0])
            if core.any()
            else None
        )

    covered = source_masks.sum(axis=0) if len(source_masks) else np.zeros((size, size), np.float32)
    outside = ~_dilate(covered > 0.0)  # the background, no shape within a pixel
    named = nearest_colours(pixels) if edit.family == "add" else None
    if edit.family == "background":
        colour = core_colour(outside.astype(np.float32))
        realised = colour == edit.target.background
        unchanged = covered > 0.9
    elif edit.family == "add":
        # The instruction does not say where: the new colour must cover, anywhere outside the
        # existing shapes, at least half the area the ground-truth shape covers.
        assert edit.shape_index is not None
        assert named is not None
        new_colour = edit.target.shapes[edit.shape_index].colour
        found = int(((named == new_colour) & outside).sum())
        expected = float((target_masks[edit.shape_index] > 0.9).sum())
        realised = found >= 0.5 * expected
        colour = new_colour if realised else None
        unchanged = covered > 0.9
    else:
        assert edit.shape_index is not None
        region = source_masks[edit.shape_index]
        colour = core_colour(region)
        wanted = (
            edit.target.shapes[edit.shape_index].colour
            if edit.family == "recolour"
            else edit.target.background
        )
        realised = colour == wanted
        unchanged = ~_dilate(region > 0.0)
    error = float(np.abs(pixels - truth)[unchanged].mean() / 255.0) if unchanged.any() else 0.0

    # The regions left alone, each (read, own colour); a region reads as the colour nearest its
    # mean.
    new = (
        edit.target.shapes[edit.shape_index].colour
        if edit.shape_index is not None and edit.family in ("recolour", "add")
        else edit.target.background
    )
    reads = [
        (core_colour(mask), shape.colour)
        for index, (mask, shape) in enumerate(zip(source_masks, edit.source.shapes, strict=True))
        if edit.family in ("background", "add") or index != edit.shape_index
    ]
    if edit.family in ("recolour", "remove"):
        reads.append((core_colour(outside.astype(np.float32)), edit.source.background))
    elif named is not None and outside.any():
        # An addition's new shape may lie anywhere on it: the colour most of its pixels show.
        names, counts = np.unique(named[outside], return_counts=True)
        reads.append((str(names[counts.argmax()]), edit.source.background))
    rest: Rest = "intact"
    for read, own in reads:
        if read is not None and read != own:
            if read == new:
                rest = "spilled"
                break
            rest = "redrawn"
    return Judgement(
        realised=bool(realised), unchanged_error=error, region_colour=colour, rest=rest
    )


_PALETTE_NAMES = list(COLOURS)
_PALETTE = np.asarray([COLOURS[name] for name in _PALETTE_NAMES], np.float32)


def nearest_colours(pixels: np.ndarray) -> np.ndarray:
    """Names the nearest of :data:`COLOURS` for every pixel of ``pixels`` ``[H, W, 3]`` (0–255
    RGB): an ``[H, W]`` array of colour names (the oracle and the pair reader see colours so)."""
    distances = ((pixels[:, :, None, :] - _PALETTE[None, None]) ** 2).sum(-1)
    return np.asarray(_PALETTE_NAMES, dtype=object)[distances.argmin(-1)]


def _dilate(mask: np.ndarray) -> np.ndarray:
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    return grown
