"""Reading ShapesWorld images back into scenes, to judge *generated* pairs against their captions.

The oracle (:func:`~instructedit.worlds.shapes.judge`) scores an editor's output against a scene
the renderer drew. A Prompt-to-Prompt pair has no such scene: only two images and two captions.
:func:`read_scene` reads what an image shows (background, and per colour the shape drawn in it:
kind, area, centre), and :func:`check_pair` says whether a pair is the edit its captions
describe: each image shows its caption, and the shapes the edit leaves alone stay where they
were. That is what the paper's CLIP filter (stage 3) estimates; here it can be measured.

Every shape of a ShapesWorld scene has its own colour, different from the background's, so a
colour names a shape. Pixels are classified by their nearest named colour; a colour counts as a
shape when its largest 4-connected region covers at least ``min_area`` pixels (a few stray
pixels of blur do not), and its kind is read from how much of its bounding box it fills (square
≈ 1, circle ≈ π/4, triangle ≈ 1/2).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from instructedit.worlds.shapes import nearest_colours, parse_caption

__all__ = [
    "PairCheck",
    "SceneReading",
    "SeenShape",
    "caption_fidelity",
    "check_pair",
    "pair_family",
    "pair_unchanged_error",
    "read_scene",
    "summarise_pairs",
]

# Fill ratios of the bounding box: square 1, circle π/4 ≈ 0.785, triangle 0.5.
_SQUARE_ABOVE = 0.89
_TRIANGLE_BELOW = 0.64


@dataclass(frozen=True)
class SeenShape:
    """A shape read from an image: colour, kind, area in pixels, centre (x, y) as fractions of
    the side."""

    colour: str
    kind: str
    area: int
    x: float
    y: float


@dataclass(frozen=True)
class SceneReading:
    """What an image shows: its background colour and its shapes (largest first)."""

    background: str
    shapes: tuple[SeenShape, ...]

    def shows(self, caption: str, *, kinds: bool = True) -> bool:
        """Whether this reading is the scene ``caption`` describes: the same background and the
        same (colour, kind) shapes (colours only with ``kinds=False``), nothing more."""
        parsed = parse_caption(caption)
        if parsed is None:
            raise ValueError(f"caption is not of the ShapesWorld grammar: {caption!r}")
        shapes, background = parsed
        if background != self.background:
            return False
        if kinds:
            return Counter(shapes) == Counter((s.colour, s.kind) for s in self.shapes)
        return Counter(c for c, _ in shapes) == Counter(s.colour for s in self.shapes)

    def shape(self, colour: str) -> SeenShape | None:
        """The shape drawn in ``colour``, if any."""
        return next((s for s in self.shapes if s.colour == colour), None)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected region of a boolean mask (same shape, boolean)."""
    labels = np.zeros(mask.shape, np.int32)
    best, best_size, label = 0, 0, 0
    height, width = mask.shape
    for start_y, start_x in zip(*np.nonzero(mask), strict=True):
        if labels[start_y, start_x]:
            continue
        label += 1
        labels[start_y, start_x] = label
        stack, size = [(int(start_y), int(start_x))], 0
        while stack:
            y, x = stack.pop()
            size += 1
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = label
                    stack.append((ny, nx))
        if size > best_size:
            best, best_size = label, size
    return labels == best if best else np.zeros_like(mask)


def _erode(mask: np.ndarray, *, outside: bool = False) -> np.ndarray:
    """4-neighbour erosion (pixels off the image count as ``outside``)."""
    padded = np.pad(mask, 1, constant_values=outside)
    return (
        padded[1:-1, 1:-1]
        & padded[:-2, 1:-1]
        & padded[2:, 1:-1]
        & padded[1:-1, :-2]
        & padded[1:-1, 2:]
    )


def _background(names: np.ndarray) -> str:
    """The most common colour of the border pixels (shapes never cover the whole border)."""
    border = np.concatenate([names[0], names[-1], names[1:-1, 0], names[1:-1, -1]])
    return str(Counter(border.tolist()).most_common(1)[0][0])


def read_scene(image: Image.Image, *, size: int = 32, min_area: int = 12) -> SceneReading:
    """Reads a ShapesWorld image (resized to ``size``): background and shapes.

    Args:
        image: a rendered, generated or edited scene.
        size: side the image is read at (the scenes' own side by default).
        min_area: fewest pixels of a colour's largest connected region for it to count as a
            shape (the smallest shape the renderer draws covers about 35 of 32² pixels).

    The background is the most common colour of the border pixels (shapes never cover the
    whole border).
    """
    if min_area < 1:
        raise ValueError(f"min_area must be >= 1, got {min_area}")
    pixels = np.asarray(
        image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), np.float32
    )
    names = nearest_colours(pixels)
    background = _background(names)
    shapes = []
    for colour in sorted(set(names.ravel().tolist()) - {background}):
        region = _largest_component(names == colour)
        area = int(region.sum())
        # A shape has an inside; the anti-aliased rim between two colours, whose blend can be
        # nearest to a third colour, does not survive one step of erosion.
        if area < min_area or _erode(region).sum() < min_area // 3:
            continue
        ys, xs = np.nonzero(region)
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        fill = area / box
        kind = (
            "square"
            if fill >= _SQUARE_ABOVE
            else "triangle"
            if fill < _TRIANGLE_BELOW
            else "circle"
        )
        shapes.append(
            SeenShape(
                colour=str(colour),
                kind=kind,
                area=area,
                x=float((xs.mean() + 0.5) / size),
                y=float((ys.mean() + 0.5) / size),
            )
        )
    shapes.sort(key=lambda s: -s.area)
    return SceneReading(background=background, shapes=tuple(shapes))


def pair_family(input_caption: str, output_caption: str) -> str:
    """The edit family a caption pair describes: ``"background"``, ``"add"``, ``"remove"`` or
    ``"recolour"`` (one shape's colour changed)."""
    before, after = parse_caption(input_caption), parse_caption(output_caption)
    for name, parsed, text in (
        ("input_caption", before, input_caption),
        ("output_caption", after, output_caption),
    ):
        if parsed is None:
            raise ValueError(f"{name} is not of the ShapesWorld grammar: {text!r}")
    assert before is not None
    assert after is not None
    if before[1] != after[1]:
        return "background"
    if len(after[0]) > len(before[0]):
        return "add"
    if len(after[0]) < len(before[0]):
        return "remove"
    return "recolour"


@dataclass(frozen=True)
class PairCheck:
    """The verdict on a pair: ``input_shown`` and ``edited_shown`` (each image shows its
    caption), ``layout_kept`` (every shape the edit leaves alone, and a recoloured shape, stays
    within the tolerance of where it was), and ``correct`` (all three)."""

    family: str
    input_shown: bool
    edited_shown: bool
    layout_kept: bool

    @property
    def correct(self) -> bool:
        """The pair is the edit its captions describe."""
        return self.input_shown and self.edited_shown and self.layout_kept


def check_pair(
    input_image: Image.Image,
    edited_image: Image.Image,
    input_caption: str,
    output_caption: str,
    *,
    size: int = 32,
    tolerance: float = 0.1,
    min_area: int = 12,
    kinds: bool = True,
) -> PairCheck:
    """Whether a (generated) pair is the edit its captions describe; see :class:`PairCheck`.

    Args:
        input_image: the image of ``input_caption``.
        edited_image: the image of ``output_caption``.
        input_caption: the caption before the edit (ShapesWorld grammar).
        output_caption: the caption after.
        size: side the images are read at.
        tolerance: how far (fraction of the side) a kept shape's centre may move.
        min_area: as in :func:`read_scene`.
        kinds: whether each image must also show its shapes' kinds, not only their colours (the
            kind is read from how a shape fills its bounding box, which the blurred, rounded
            shapes of a small generative model can defeat: a soft square reads as a circle).
    """
    if not 0.0 < tolerance <= 1.0:
        raise ValueError(f"tolerance must be in (0, 1], got {tolerance}")
    family = pair_family(input_caption, output_caption)
    before = read_scene(input_image, size=size, min_area=min_area)
    after = read_scene(edited_image, size=size, min_area=min_area)
    input_shown = before.shows(input_caption, kinds=kinds)
    edited_shown = after.shows(output_caption, kinds=kinds)
    old = parse_caption(input_caption)
    new = parse_caption(output_caption)
    assert old is not None
    assert new is not None
    # (colour before, colour after) of each shape that must stay put.
    if family == "recolour":
        changed = [(a, b) for a, b in zip(old[0], new[0], strict=True) if a != b]
        same = [(a[0], a[0]) for a in old[0] if a in new[0]]
        followed = same + [(a[0], b[0]) for a, b in changed]
    else:
        followed = [(c, c) for c, k in old[0] if (c, k) in new[0]]
    layout_kept = True
    for colour_before, colour_after in followed:
        seen_before, seen_after = before.shape(colour_before), after.shape(colour_after)
        if seen_before is None or seen_after is None:
            layout_kept = False
            break
        distance = (
            (seen_before.x - seen_after.x) ** 2 + (seen_before.y - seen_after.y) ** 2
        ) ** 0.5
        if distance > tolerance:
            layout_kept = False
            break
    return PairCheck(
        family=family, input_shown=input_shown, edited_shown=edited_shown, layout_kept=layout_kept
    )


def pair_unchanged_error(
    input_image: Image.Image,
    edited_image: Image.Image,
    input_caption: str,
    output_caption: str,
    *,
    size: int = 32,
) -> float | None:
    """How much a (generated) pair changes where its edit should change nothing: the mean
    absolute difference (pixels in [0, 1]) between the edited and the input image there.

    The pair's counterpart of the oracle's unchanged-region error (an editor trained on pairs is
    not expected to keep more than they keep), read from the two images alone: where the input
    shows its shapes (pixels not nearest the background's colour, less a one-pixel rim) for a
    background change or an addition; where it shows background a pixel away from any shape for
    a recolour or a removal. ``None`` when that region is empty (a shape too small to have an
    inside, or no background left).

    Args:
        input_image: the image of ``input_caption``.
        edited_image: the image of ``output_caption``.
        input_caption: the caption before the edit (ShapesWorld grammar); with
            ``output_caption`` it names the edit family (:func:`pair_family`).
        output_caption: the caption after.
        size: side the images are read at.
    """
    family = pair_family(input_caption, output_caption)
    before, after = (
        np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), np.float32)
        for image in (input_image, edited_image)
    )
    names = nearest_colours(before)
    shapes = names != _background(names)
    kept = _erode(shapes) if family in ("background", "add") else _erode(~shapes, outside=True)
    if not kept.any():
        return None
    return float(np.abs(after - before)[kept].mean() / 255.0)


def summarise_pairs(
    records: Iterable[Any], *, size: int = 32, kinds: bool = False
) -> dict[str, dict[str, float]]:
    """:func:`check_pair` over many pairs, per edit family and over all (``"all"``).

    Args:
        records: :class:`~instructedit.data.EditRecord` s with both captions (a generated
            dataset's samples, loaded with :func:`~instructedit.data.load_folder_sample`).
        size: side the images are read at.
        kinds: as in :func:`check_pair` (colours only by default: generated shapes are soft).

    Returns:
        Per family: ``count`` and the shares ``input_shown``, ``edited_shown``, ``layout_kept``
        and ``correct``.
    """
    groups: dict[str, list[PairCheck]] = defaultdict(list)
    for index, record in enumerate(records):
        if not record.input_caption or not record.output_caption:
            raise ValueError(f"records[{index}] needs input_caption and output_caption")
        verdict = check_pair(
            record.input_image,
            record.edited_image,
            record.input_caption,
            record.output_caption,
            size=size,
            kinds=kinds,
        )
        groups[verdict.family].append(verdict)
        groups["all"].append(verdict)
    order = [f for f in ("recolour", "background", "add", "remove") if f in groups]
    return {
        key: {
            "count": len(groups[key]),
            "input_shown": sum(v.input_shown for v in groups[key]) / len(groups[key]),
            "edited_shown": sum(v.edited_shown for v in groups[key]) / len(groups[key]),
            "layout_kept": sum(v.layout_kept for v in groups[key]) / len(groups[key]),
            "correct": sum(v.correct for v in groups[key]) / len(groups[key]),
        }
        for key in [*order, "all"]
        if groups[key]
    }


def caption_fidelity(
    images: Iterable[Image.Image], captions: Iterable[str], *, size: int = 32
) -> dict[str, dict[str, float]]:
    """How often images (a text-to-image model's samples) show their captions, read back.

    Args:
        images: one image per caption.
        captions: ShapesWorld captions.
        size: side the images are read at.

    Returns:
        For ``"one shape"``, ``"two shapes"`` and ``"all"`` captions: ``count``, ``colours`` (the
        share whose background and shape colours are the caption's, nothing more) and ``exact``
        (the shapes' kinds too; see :func:`check_pair`'s ``kinds``).
    """
    groups: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    pairs = zip(images, captions, strict=True)
    for index, (image, text) in enumerate(pairs):
        parsed = parse_caption(text)
        if parsed is None:
            raise ValueError(f"captions[{index}] is not of the ShapesWorld grammar: {text!r}")
        reading = read_scene(image, size=size)
        verdict = (reading.shows(text, kinds=False), reading.shows(text))
        groups["one shape" if len(parsed[0]) == 1 else "two shapes"].append(verdict)
        groups["all"].append(verdict)
    return {
        key: {
            "count": len(groups[key]),
            "colours": sum(c for c, _ in groups[key]) / len(groups[key]),
            "exact": sum(e for _, e in groups[key]) / len(groups[key]),
        }
        for key in ("one shape", "two shapes", "all")
        if groups[key]
    }
