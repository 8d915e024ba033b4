import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from instructedit.clip import (
    ClipDirectionalFilter,
    ClipScorer,
    ClipScores,
    edge_map,
    structure_similarity,
)
from instructedit.testing import tiny_open_clip

WHITE, RED, BLUE = (255, 255, 255), (220, 30, 30), (30, 30, 220)


def _scene(squares, size=32, background=WHITE):
    """``squares``: (row, column, side, colour) filled squares on a flat background."""
    array = np.full((size, size, 3), background, dtype=np.uint8)
    for row, column, side, colour in squares:
        array[row : row + side, column : column + side] = colour
    return Image.fromarray(array)


def _bar(first_column, width=4, size=32):
    """A full-height red bar: its only edges are columns (no vertical change anywhere)."""
    array = np.full((size, size, 3), WHITE, dtype=np.uint8)
    array[:, first_column : first_column + width] = RED
    return Image.fromarray(array)


def _tensor(image):
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]


def test_edge_map_marks_the_pixels_either_side_of_a_colour_boundary():
    # Bar over columns 10..13: a central difference straddles a boundary at columns 9, 10
    # (left side) and 13, 14 (right side), on every row.
    edges = edge_map(_tensor(_bar(10)))[0]
    columns = np.flatnonzero(edges.any(dim=0).numpy())
    assert columns.tolist() == [9, 10, 13, 14]
    assert bool(edges[:, [9, 10, 13, 14]].all())
    # A faint boundary (difference 0.1) is below the default threshold, above a lower one.
    faint = torch.zeros(1, 3, 8, 8)
    faint[..., 4:] = 0.1
    assert not edge_map(faint).any()
    assert edge_map(faint, threshold=0.05).any()
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        edge_map(torch.zeros(3, 8, 8))


def test_a_moved_bar_keeps_the_share_of_edges_counted_by_hand():
    # Edges of the bar at 10..13: columns {9, 10, 13, 14}; moved by 2 to 12..15: {11, 12, 15, 16}.
    # Radius 1 grows the second to {10..17}: columns 10, 13, 14 of the first are kept (3/4);
    # and symmetrically 11, 12, 15 of the second (3/4). Radius 0: no column in common.
    before, after = [_bar(10)], [_bar(12)]
    assert structure_similarity(before, after).tolist() == [0.75]
    assert structure_similarity(before, after, radius=0).tolist() == [0.0]
    assert structure_similarity(before, [_bar(11)], radius=0).tolist() == [0.5]


def test_edits_that_keep_the_layout_score_one_and_a_moved_shape_zero():
    square = (4, 4, 6, RED)
    other = (20, 20, 6, BLUE)
    scene = _scene([square])
    pairs = {
        "recolour": _scene([(4, 4, 6, BLUE)]),
        "background": _scene([square], background=(240, 200, 40)),
        "add": _scene([square, other]),
        "moved": _scene([(20, 20, 6, RED)]),
    }
    scores = structure_similarity([scene] * 4, list(pairs.values()))
    assert dict(zip(pairs, scores.tolist(), strict=True)) == {
        "recolour": 1.0,
        "background": 1.0,
        "add": 1.0,  # every input edge is kept; half the edited image's edges are new
        "moved": 0.0,
    }
    # Removing is adding backwards.
    assert structure_similarity([pairs["add"]], [scene]).tolist() == [1.0]
    # Two flat images have no edges to lose.
    assert structure_similarity([_scene([])], [_scene([], background=RED)]).tolist() == [1.0]


def test_size_resizes_both_images_and_mismatches_are_refused():
    small, large = _bar(10), _bar(20, width=8, size=64)
    with pytest.raises(
        ValueError, match=r"before_images\[0\] is 32×32 and after_images\[0\] 64×64"
    ):
        structure_similarity([small], [large])
    # At 32×32 the 64-pixel image's bar covers columns 10..13, as the small one's.
    assert structure_similarity([small], [large], size=32).tolist() == [1.0]
    with pytest.raises(ValueError, match="after_images has 1 entries, before_images has 2"):
        structure_similarity([small, small], [small])
    for kwargs, message in (
        ({"edge_threshold": 0.0}, "edge_threshold must be in"),
        ({"radius": -1}, "radius must be an int >= 0"),
        ({"size": 2}, "size must be an int >= 3"),
    ):
        with pytest.raises(ValueError, match=message):
            structure_similarity([small], [small], **kwargs)
    with pytest.raises(ValueError, match=r"after_images\[0\]: .* is not a readable image"):
        structure_similarity([small], [__file__])


@pytest.fixture(scope="module")
def scorer():
    return ClipScorer(tiny_open_clip(seed=0), open_clip.get_tokenizer("ViT-B-32"))


def test_the_filter_checks_structure_only_when_asked(scorer):
    scene = _scene([(4, 4, 6, RED)])
    moved = _scene([(20, 20, 6, RED)])
    recoloured = _scene([(4, 4, 6, BLUE)])
    args = ([scene, scene], [recoloured, moved], ["a red square"] * 2, ["a blue square"] * 2)
    paper = ClipDirectionalFilter(scorer, -1.0, -1.0, -1.0)
    assert paper.score(*args).structure_similarity is None
    assert paper(*args).reasons == [None, None]
    checked = ClipDirectionalFilter(scorer, -1.0, -1.0, -1.0, min_structure_similarity=0.8)
    result = checked(*args)
    assert result.scores.structure_similarity.tolist() == [1.0, 0.0]
    assert result.reasons == [None, "structure_similarity"]
    assert result.counts() == {"kept": 1, "structure_similarity": 1}
    # The image-similarity verdict comes first; structure before direction and text.
    ones = torch.ones(3)
    scores = ClipScores(
        image_similarity=torch.tensor([0.1, 1.0, 1.0]),
        direction_similarity=torch.tensor([1.0, 0.0, 0.0]),
        text_similarity_before=ones,
        text_similarity_after=ones,
        structure_similarity=torch.tensor([0.0, 0.0, 0.8]),
    )
    strict = ClipDirectionalFilter(scorer, 0.5, 0.5, 0.5, min_structure_similarity=0.8)
    assert strict.judge(scores).reasons == [
        "image_similarity",
        "structure_similarity",
        "direction_similarity",
    ]
    without = ClipScores(ones, ones, ones, ones)
    with pytest.raises(ValueError, match=r"scores\.structure_similarity is None"):
        strict.judge(without)


def test_bad_structure_thresholds_are_refused(scorer):
    with pytest.raises(ValueError, match=r"min_structure_similarity must be in \[0, 1\]"):
        ClipDirectionalFilter(scorer, min_structure_similarity=1.5)
    with pytest.raises(TypeError, match="min_structure_similarity must be a number"):
        ClipDirectionalFilter(scorer, min_structure_similarity="0.8")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"radius": 1.5}, ValueError, "radius must be an int >= 0, got 1.5"),
        ({"size": True}, ValueError, "size must be an int >= 3 or None, got True"),
        ({"edge_threshold": "0.2"}, TypeError, "edge_threshold must be a number"),
    ],
)
def test_parameters_of_the_wrong_type_are_refused(kwargs, error, message):
    image = Image.new("RGB", (8, 8))
    with pytest.raises(error, match=message):
        structure_similarity([image], [image], **kwargs)
