import random
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from instructedit.worlds.reading import (
    caption_fidelity,
    check_pair,
    pair_family,
    pair_unchanged_error,
    read_scene,
    summarise_pairs,
)
from instructedit.worlds.shapes import (
    COLOURS,
    EDIT_FAMILIES,
    Scene,
    Shape,
    apply_edit,
    caption,
    edit_record,
    random_edit,
    random_scene,
    render,
)


def _edits(count, seed):
    rng = random.Random(seed)
    edits = []
    while len(edits) < count:
        edit = random_edit(random_scene(rng), rng, EDIT_FAMILIES[len(edits) % 4])
        if edit is not None:
            edits.append(edit)
    return edits


def test_a_rendered_scene_reads_back_as_its_caption():
    scene = Scene(
        "white",
        (Shape("circle", "red", 0.3, 0.3, 0.18), Shape("square", "blue", 0.72, 0.7, 0.16)),
    )
    reading = read_scene(render(scene))
    assert reading.background == "white"
    assert {(s.colour, s.kind) for s in reading.shapes} == {("red", "circle"), ("blue", "square")}
    red = reading.shape("red")
    assert red is not None
    assert red.x == pytest.approx(0.3, abs=0.03)
    assert red.y == pytest.approx(0.3, abs=0.03)
    assert reading.shows(caption(scene))
    assert not reading.shows("a red circle on a white background")
    assert not reading.shows("a red circle and a blue square on a black background")
    with pytest.raises(ValueError, match="caption is not of the ShapesWorld grammar"):
        reading.shows("a cat")


def test_rendered_scenes_read_back_almost_always():
    rng = random.Random("reading")
    scenes = [random_scene(rng) for _ in range(300)]
    readings = [read_scene(render(s)) for s in scenes]
    colours = sum(r.shows(caption(s), kinds=False) for r, s in zip(readings, scenes, strict=True))
    exact = sum(r.shows(caption(s)) for r, s in zip(readings, scenes, strict=True))
    assert colours >= 297  # measured 300/300: the anti-aliased rims are not read as shapes
    assert exact >= 288  # measured 99 % over 1000: a small triangle can read as a circle


def test_ground_truth_pairs_pass_and_broken_pairs_fail():
    edits = _edits(80, "pairs")
    verdicts = [
        check_pair(render(e.source), apply_edit(e), caption(e.source), caption(e.target))
        for e in edits
    ]
    assert [v.family for v in verdicts] == [e.family for e in edits]
    assert sum(v.correct for v in verdicts) >= 76  # measured 98.5 % over 800
    # Nothing edited: the second image does not show the edited caption.
    for edit in edits[:12]:
        same = render(edit.source)
        verdict = check_pair(same, same, caption(edit.source), caption(edit.target))
        assert not verdict.edited_shown
        assert not verdict.correct
    # The right edit, but the kept shape moved across the image: the layout was not kept.
    scene = Scene(
        "white",
        (Shape("circle", "red", 0.25, 0.25, 0.16), Shape("square", "blue", 0.75, 0.75, 0.15)),
    )
    moved = Scene("black", (replace(scene.shapes[0], x=0.75, y=0.3), scene.shapes[1]))
    verdict = check_pair(render(scene), render(moved), caption(scene), caption(moved))
    assert verdict.family == "background"
    assert verdict.input_shown
    assert verdict.edited_shown
    assert not verdict.layout_kept
    assert not verdict.correct


def test_pair_family_and_bad_arguments():
    base = "a red circle on a white background"
    assert pair_family(base, "a red circle on a black background") == "background"
    assert pair_family(base, "a blue circle on a white background") == "recolour"
    assert pair_family(base, "a red circle and a blue square on a white background") == "add"
    assert pair_family("a red circle and a blue square on a white background", base) == "remove"
    with pytest.raises(ValueError, match="output_caption is not of the ShapesWorld grammar"):
        pair_family(base, "make it snowy")
    image = render(random_scene(random.Random(0)))
    with pytest.raises(ValueError, match="min_area must be >= 1"):
        read_scene(image, min_area=0)
    with pytest.raises(ValueError, match="tolerance must be in"):
        check_pair(image, image, base, base, tolerance=0.0)


def test_summarise_pairs_counts_per_family():
    edits = _edits(16, "summary")
    truth = summarise_pairs([edit_record(e) for e in edits])
    assert list(truth) == [*EDIT_FAMILIES, "all"]
    assert all(truth[f]["count"] == 4 for f in EDIT_FAMILIES)
    assert truth["all"]["count"] == 16
    assert truth["all"]["correct"] == 1.0
    unedited = [replace(edit_record(e), edited_image=render(e.source)) for e in edits]
    nothing = summarise_pairs(unedited)
    assert nothing["all"]["correct"] == 0.0
    assert nothing["all"]["input_shown"] == 1.0
    with pytest.raises(ValueError, match=r"records\[0\] needs input_caption"):
        summarise_pairs([replace(edit_record(edits[0]), output_caption=None)])


def test_caption_fidelity_counts_images_that_show_their_captions():
    rng = random.Random("fidelity")
    scenes = [random_scene(rng) for _ in range(40)]
    images = [render(s) for s in scenes]
    captions = [caption(s) for s in scenes]
    ones = sum(len(s.shapes) == 1 for s in scenes)
    assert 0 < ones < 40
    right = caption_fidelity(images, captions)
    assert right["all"] == {"count": 40, "colours": 1.0, "exact": pytest.approx(1.0, abs=0.05)}
    assert right["one shape"]["count"] == ones
    assert right["two shapes"]["count"] == 40 - ones
    # Each image against the next scene's caption: a colour or the background differs (the
    # draw repeats a caption's colours rarely; counted by hand from the scenes).
    shifted = captions[1:] + captions[:1]
    same = sum(
        {s.colour for s in a.shapes} == {s.colour for s in b.shapes}
        and a.background == b.background
        for a, b in zip(scenes, scenes[1:] + scenes[:1], strict=True)
    )
    assert caption_fidelity(images, shifted)["all"]["colours"] == same / 40
    with pytest.raises(ValueError, match=r"captions\[1\] is not of the ShapesWorld grammar"):
        caption_fidelity(images[:2], [captions[0], "a cat"])
    with pytest.raises(ValueError, match="zip"):
        caption_fidelity(images[:2], captions[:1])


def _square_image(background, colour, left, *, side=8, top=2, width=4):
    """A ``side``² image: a ``width``² square of ``colour`` at (top, left) on ``background``."""
    pixels = np.empty((side, side, 3), np.uint8)
    pixels[:] = COLOURS[background]
    pixels[top : top + width, left : left + width] = COLOURS[colour]
    return Image.fromarray(pixels)


def test_pair_unchanged_error_reads_where_the_edit_changes_nothing():
    white, yellow = "a red square on a white background", "a red square on a yellow background"
    source = _square_image("white", "red", 2)
    # A background change keeps the square: its inside (the 2×2 core) does not change.
    assert (
        pair_unchanged_error(source, _square_image("yellow", "red", 2), white, yellow, size=8) == 0
    )
    # Moved 2 px right, half the core turns yellow: |yellow − red| = (20, 175, 0), mean 65, on
    # 2 of the 4 core pixels.
    moved = pair_unchanged_error(source, _square_image("yellow", "red", 4), white, yellow, size=8)
    assert moved == pytest.approx(65 / 2 / 255, abs=1e-6)
    # A recolour keeps the background: read a pixel away from the square, the 48 background
    # pixels less the 16 beside it.
    blue = "a blue square on a white background"
    assert pair_unchanged_error(source, _square_image("white", "blue", 2), white, blue, size=8) == 0
    tinted = np.asarray(_square_image("white", "blue", 2)).copy()
    tinted[0, :] -= 10  # 8 of those 32 pixels 10 darker
    error = pair_unchanged_error(source, Image.fromarray(tinted), white, blue, size=8)
    assert error == pytest.approx(8 * 10 / 32 / 255, abs=1e-6)
    # The renderer's ground-truth pairs change nothing there.
    rng = random.Random(3)
    read = 0
    for _ in range(20):
        edit = random_edit(random_scene(rng), rng)
        if edit is None:
            continue
        record = edit_record(edit)
        exact = pair_unchanged_error(
            record.input_image, record.edited_image, record.input_caption, record.output_caption
        )
        assert exact is None or exact < 0.01, edit
        read += exact is not None
    assert read >= 10  # most pairs have a region to read, so the bound above is exercised
    with pytest.raises(ValueError, match="output_caption is not of the ShapesWorld grammar"):
        pair_unchanged_error(source, source, white, "a red thing", size=8)
