import math

import numpy as np
import open_clip
import pytest
from PIL import Image

from instructedit.clip import ClipDirectionalFilter, ClipScorer
from instructedit.testing import tiny_open_clip


@pytest.fixture(scope="module")
def clip_filter():
    scorer = ClipScorer(tiny_open_clip(seed=0), open_clip.get_tokenizer("ViT-B-32"))
    return ClipDirectionalFilter(scorer, min_structure_similarity=0.5)


def _image(seed):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))


def test_no_pairs_give_an_empty_result(clip_filter):
    result = clip_filter([], [], [], [])
    assert result.keep.shape == (0,)
    assert result.reasons == []
    assert result.scores.direction_similarity.shape == (0,)
    assert result.scores.structure_similarity is not None
    assert result.scores.structure_similarity.shape == (0,)
    assert ClipDirectionalFilter.top_k(result) == []


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        (
            ([_image(0)], [_image(1)], "a cat", ["a dog"]),
            TypeError,
            "before_captions must be a list",
        ),
        (
            ([_image(0)], [_image(1)], ["a cat"], [None]),
            TypeError,
            r"after_captions\[0\] must be a str",
        ),
        (([_image(0)], [], ["a cat"], ["a dog"]), ValueError, "after_images has 0 entries"),
    ],
)
def test_bad_pairs_are_refused_naming_the_argument(clip_filter, arguments, error, message):
    with pytest.raises(error, match=message):
        clip_filter(*arguments)


@pytest.mark.parametrize(
    ("value", "error"),
    [("0.7", TypeError), (True, TypeError), (math.nan, ValueError), (1.5, ValueError)],
)
def test_bad_thresholds_are_refused_naming_the_argument(clip_filter, value, error):
    with pytest.raises(error, match="min_image_similarity must be a cosine similarity in"):
        ClipDirectionalFilter(clip_filter.scorer, min_image_similarity=value)


def test_top_k_groups_must_match_the_pairs(clip_filter):
    result = clip_filter([_image(0)], [_image(0)], ["a cat"], ["a dog"])
    with pytest.raises(ValueError, match="groups has 2 entries for the 1 pairs"):
        ClipDirectionalFilter.top_k(result, groups=[0, 1])
    with pytest.raises(ValueError, match=r"k must be an int >= 1, got 2\.5"):
        ClipDirectionalFilter.top_k(result, k=2.5)
