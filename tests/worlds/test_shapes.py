import random

import numpy as np
import pytest

from instructedit.captions import CaptionEdit, Rejection
from instructedit.testing import seeded
from instructedit.worlds.reading import read_scene
from instructedit.worlds.shapes import (
    COLOURS,
    EDIT_FAMILIES,
    Scene,
    Shape,
    ShapesCaptionEditor,
    apply_edit,
    caption,
    judge,
    nearest_colours,
    parse_caption,
    random_edit,
    random_scene,
    region_masks,
    render,
    scene_edit,
    scene_from_caption,
)


def _scenes(count=200, seed=0):
    rng = random.Random(seed)
    return [random_scene(rng) for _ in range(count)]


def test_render_is_deterministic_anti_aliased_and_coloured():
    scene = Scene("white", (Shape("circle", "red", 0.5, 0.5, 0.3),))
    image = render(scene)
    assert image.size == (32, 32)
    pixels = np.asarray(image)
    assert tuple(pixels[16, 16]) == COLOURS["red"]
    assert tuple(pixels[0, 0]) == COLOURS["white"]
    edge_values = {tuple(p) for p in pixels.reshape(-1, 3)}
    assert len(edge_values) > 2  # anti-aliased edges blend the colours
    assert np.array_equal(np.asarray(render(scene)), pixels)


def _alone(scene, shape):
    """The shape's whole coverage at 256² (geometry, not anti-aliasing), whatever lies on it."""
    return region_masks(Scene(scene.background, (shape,)), size=256, supersample=1)[0]


def test_region_masks_are_what_the_renderer_shows():
    # Overlapping shapes, as a user may build: the later one is drawn on top.
    scenes = [
        Scene(
            "white",
            (Shape("square", "red", 0.4, 0.4, 0.2), Shape("circle", "blue", 0.55, 0.55, 0.2)),
        ),
        Scene(
            "black",
            (Shape("circle", "green", 0.5, 0.5, 0.3), Shape("triangle", "yellow", 0.5, 0.5, 0.15)),
        ),
        *_scenes(20),
    ]
    for scene in scenes:
        masks = region_masks(scene)
        assert masks.min() >= 0.0
        assert masks.sum(axis=0).max() <= 1.0 + 1e-6
        # The renderer's anti-aliased pixels are the colours mixed by the masks (to rounding).
        mixed = (1.0 - masks.sum(axis=0))[..., None] * np.array(COLOURS[scene.background])
        for shape, mask in zip(scene.shapes, masks, strict=True):
            mixed = mixed + mask[..., None] * np.array(COLOURS[shape.colour])
        assert np.abs(mixed - np.asarray(render(scene), dtype=np.float64)).max() <= 1.0
    red, blue = region_masks(scenes[0])
    whole_red, whole_blue = (
        region_masks(Scene("white", (shape,)))[0] for shape in scenes[0].shapes
    )
    assert red.sum() < whole_red.sum() - 10  # partly hidden by the circle
    assert np.array_equal(blue, whole_blue)  # on top, whole
    inner = region_masks(scenes[1])
    assert inner[1].sum() > 0
    assert float((inner[0] * (inner[1] == 1)).sum()) == 0.0


def test_random_scenes_follow_the_rules():
    for scene in _scenes():
        assert 1 <= len(scene.shapes) <= 2
        colours = [s.colour for s in scene.shapes]
        assert len(set(colours)) == len(colours)
        assert scene.background not in colours
        if len(scene.shapes) == 2:  # no overlap: each shape's own coverage, not its visible part
            a, b = (_alone(scene, shape) for shape in scene.shapes)
            assert float((a * b).sum()) == 0.0


def test_captions_round_trip_through_the_grammar():
    for scene in _scenes(50):
        text = caption(scene)
        shapes, background = parse_caption(text)
        assert background == scene.background
        assert shapes == [(s.colour, s.kind) for s in scene.shapes]
    assert caption(
        Scene(
            "white", (Shape("circle", "red", 0.3, 0.3, 0.2), Shape("square", "blue", 0.7, 0.7, 0.2))
        )
    ) == ("a red circle and a blue square on a white background")
    assert parse_caption("a photo of a cat") is None


def test_caption_editor_covers_every_family_with_varied_phrasings():
    editor = ShapesCaptionEditor(seed=0)
    captions = [caption(s) for s in _scenes(300)]
    with seeded(0):
        results = editor.edit(captions)
    edits = [r for r in results if isinstance(r, CaptionEdit)]
    assert len(edits) == len(captions)
    assert all(parse_caption(e.output) is not None and e.output != e.input for e in edits)
    first_words = {e.instruction.split()[0] for e in edits}
    assert {"make", "turn", "add", "remove", "change"} <= first_words
    with seeded(0):
        assert editor.edit(captions[:5]) == results[:5]
    assert editor.edit(["a photo of a cat"]) == [Rejection("a photo of a cat", "unparseable")]
    # Every family gets its share: an "add" needs room for a second shape, which a caption does
    # not place, so the editor must not refuse adds for lack of space.
    adds = sum(len(parse_caption(e.output)[0]) > len(parse_caption(e.input)[0]) for e in edits)
    removes = sum(len(parse_caption(e.output)[0]) < len(parse_caption(e.input)[0]) for e in edits)
    assert adds >= 0.1 * len(edits)
    assert removes >= 0.1 * len(edits)


def test_caption_editor_gives_repeated_captions_their_own_edits():
    # A run's captions repeat (168 one-shape captions exist): the dataset generator seeds each
    # caption index, and every repeat must get its own edit, not the same one, or the editor
    # trained on them sees a few dozen additions however many captions it is given.
    editor = ShapesCaptionEditor(seed=0)
    text = "a red circle on a white background"
    edits = []
    for index in range(60):
        with seeded(1000 + index):
            (edit,) = editor.edit([text])
        edits.append(edit)
    assert all(isinstance(e, CaptionEdit) and e.input == text for e in edits)
    assert len({(e.instruction, e.output) for e in edits}) >= 30
    additions = {e.output for e in edits if " and " in e.output}
    assert len(additions) >= 5  # a one-shape caption gains many different shapes
    with seeded(1000):
        assert editor.edit([text]) == edits[:1]


def test_scene_from_caption_lays_out_what_the_caption_says():
    rng = random.Random(0)
    text = "a red circle and a blue triangle on a white background"
    layouts = [scene_from_caption(text, rng) for _ in range(20)]
    assert all(caption(scene) == text for scene in layouts)
    assert len({scene.shapes for scene in layouts}) == 20
    for scene in layouts:
        a, b = (_alone(scene, shape) for shape in scene.shapes)
        assert float((a * b).sum()) == 0.0  # the two shapes do not overlap
        assert read_scene(render(scene)).shows(text)
    with pytest.raises(ValueError, match="not a caption"):
        scene_from_caption("a photo of a cat", rng)


@pytest.mark.parametrize("family", EDIT_FAMILIES)
def test_oracle_accepts_ground_truth_and_rejects_the_unedited_input(family):
    rng = random.Random(1)
    checked = 0
    for scene in _scenes(120, seed=2):
        edit = random_edit(scene, rng, family)
        if edit is None or edit.family != family:
            continue
        truth = judge(edit, apply_edit(edit))
        assert truth.realised
        assert truth.unchanged_error < 1e-6
        assert truth.rest == "intact"
        identity = judge(edit, render(edit.source))
        assert not identity.realised
        assert identity.rest == "intact"
        checked += 1
    assert checked >= 20


def test_unchanged_error_measures_damage_outside_the_edit():
    rng = random.Random(3)
    scene = Scene(
        "white", (Shape("circle", "red", 0.3, 0.3, 0.18), Shape("square", "blue", 0.72, 0.72, 0.18))
    )
    edit = random_edit(scene, rng, "recolour")
    damaged = np.asarray(apply_edit(edit)).copy()
    damaged[:, :] = damaged[:, :] // 2  # darken everything, edit included
    from PIL import Image

    verdict = judge(edit, Image.fromarray(damaged))
    assert verdict.unchanged_error > 0.2


# A red circle and a small blue square on white: erasing the square moves few pixels.
_TWO = Scene(
    "white", (Shape("circle", "red", 0.3, 0.3, 0.18), Shape("square", "blue", 0.72, 0.72, 0.14))
)


def test_a_removal_that_erases_both_shapes_is_not_intact():
    edit = scene_edit(_TWO, "remove the red circle")
    assert edit is not None
    verdict = judge(edit, render(Scene("white", ())))
    # The pixel error alone would let it pass (the square is ~81 of ~880 unchanged pixels, a
    # mean channel difference of 0.52 there: about 0.05 < 0.08) ...
    assert verdict.realised
    assert verdict.unchanged_error < 0.08
    # ... the kept square, read on its own, shows the background's colour.
    assert verdict.rest == "spilled"
    assert judge(edit, apply_edit(edit)).rest == "intact"


@pytest.mark.parametrize(
    ("instruction", "output", "rest"),
    [
        # a recolour that also paints the background the new colour
        (
            "turn the red circle green",
            Scene("green", (Shape("circle", "green", 0.3, 0.3, 0.18), _TWO.shapes[1])),
            "spilled",
        ),
        # a background change that erases a kept shape
        (
            "make the background black",
            Scene("black", (Shape("circle", "red", 0.3, 0.3, 0.18),)),
            "spilled",
        ),
        # a background change that redraws a kept shape in a third colour
        (
            "make the background black",
            Scene("black", (Shape("circle", "orange", 0.3, 0.3, 0.18), _TWO.shapes[1])),
            "redrawn",
        ),
        # a removal that recolours the other shape
        (
            "remove the blue square",
            Scene("white", (Shape("circle", "purple", 0.3, 0.3, 0.18),)),
            "redrawn",
        ),
    ],
)
def test_the_oracle_reads_the_regions_an_edit_leaves_alone(instruction, output, rest):
    edit = scene_edit(_TWO, instruction)
    assert edit is not None
    assert judge(edit, render(output)).rest == rest


def test_an_addition_drawn_over_the_kept_shape_or_the_background_spills():
    square = Shape("square", "blue", 0.72, 0.72, 0.14)
    edit = scene_edit(Scene("white", (square,)), "add a yellow triangle")
    assert edit is not None
    over = Scene("white", (Shape("square", "yellow", 0.72, 0.72, 0.14),))
    verdict = judge(edit, render(over))
    assert not verdict.realised  # not outside the existing shape
    assert verdict.rest == "spilled"
    # The square kept, the whole background painted the new colour: "realised" by the colour's
    # area, no pixel error on the kept square, but the background is not the scene's.
    flooded = judge(edit, render(Scene("yellow", (square,))))
    assert flooded.realised
    assert flooded.unchanged_error < 1e-6
    assert flooded.rest == "spilled"
    # A new shape on an intact background is fine wherever it lies.
    elsewhere = Scene("white", (square, Shape("triangle", "yellow", 0.25, 0.25, 0.15)))
    assert judge(edit, render(elsewhere)).rest == "intact"


def test_a_spilled_region_outweighs_a_redrawn_one():
    # Remove the circle: the square erased too (spilled) and the background redrawn black.
    edit = scene_edit(_TWO, "remove the red circle")
    assert edit is not None
    assert judge(edit, render(Scene("black", ()))).rest == "redrawn"  # no kept region is white
    both = Scene("black", (Shape("square", "white", 0.72, 0.72, 0.14),))
    assert judge(edit, render(both)).rest == "spilled"  # the square shows the new (white) colour


@pytest.mark.parametrize("family", EDIT_FAMILIES)
def test_scene_edit_reads_every_phrasing_back_to_the_same_ground_truth(family):
    # random_edit builds instruction and target together; scene_edit must recover the target
    # from the instruction alone (an added shape may land elsewhere: compare its kind/colour).
    rng = random.Random(5)
    checked = 0
    for scene in _scenes(150, seed=6):
        edit = random_edit(scene, rng, family)
        if edit is None or edit.family != family:
            continue
        parsed = scene_edit(scene, edit.instruction.upper() + "  ")
        assert parsed is not None, edit.instruction
        assert (parsed.family, parsed.shape_index) == (edit.family, edit.shape_index)
        if family == "add":
            new, expected = parsed.target.shapes[-1], edit.target.shapes[-1]
            assert (new.kind, new.colour) == (expected.kind, expected.colour)
            assert parsed.target.shapes[:-1] == scene.shapes
        else:
            assert parsed.target == edit.target
        checked += 1
    assert checked >= 20


@pytest.mark.parametrize(
    "instruction",
    [
        "make the triangle green",  # no triangle
        "make the circle blue",  # blue is taken by the square
        "make the background red",  # red is taken by the circle
        "add a green circle",  # already two shapes
        "remove the green circle",  # the circle is red
        "make it look like winter",  # outside the grammar
    ],
)
def test_scene_edit_refuses_instructions_that_do_not_apply(instruction):
    scene = Scene(
        "white", (Shape("circle", "red", 0.3, 0.3, 0.18), Shape("square", "blue", 0.72, 0.72, 0.18))
    )
    assert scene_edit(scene, instruction) is None


def test_edit_record_pairs_the_render_with_its_ground_truth():
    from instructedit.worlds.shapes import edit_record

    edit = random_edit(random_scene(random.Random(4)), random.Random(5), "recolour")
    record = edit_record(edit, 32)
    assert np.array_equal(np.asarray(record.input_image), np.asarray(render(edit.source, 32)))
    assert np.array_equal(np.asarray(record.edited_image), np.asarray(apply_edit(edit, 32)))
    assert not np.array_equal(np.asarray(record.input_image), np.asarray(record.edited_image))
    assert record.edit_prompt == edit.instruction
    assert (record.input_caption, record.output_caption) == (
        caption(edit.source),
        caption(edit.target),
    )


def test_nearest_colours_names_each_pixel_by_the_closest_palette_colour():
    names = list(COLOURS)
    rng = np.random.default_rng(0)
    palette = np.asarray([COLOURS[n] for n in names], np.float32)
    # Each palette colour, nudged by up to 12 levels per channel, keeps its name.
    pixels = np.clip(palette[None] + rng.uniform(-12, 12, size=(4, len(names), 3)), 0, 255)
    assert (nearest_colours(pixels) == np.asarray(names, dtype=object)[None]).all()
    # A mix nearer red than orange is red.
    red, orange = np.asarray(COLOURS["red"], float), np.asarray(COLOURS["orange"], float)
    near_red = (0.7 * red + 0.3 * orange)[None, None]
    assert nearest_colours(near_red)[0, 0] == "red"
