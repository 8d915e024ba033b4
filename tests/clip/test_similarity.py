import pytest
import torch

from instructedit.clip import directional_similarity, image_image_similarity, image_text_similarity


def test_no_rows_give_no_similarities():
    empty = torch.empty(0, 8)
    assert image_text_similarity(empty, empty).shape == (0,)
    assert image_image_similarity(empty, empty).shape == (0,)
    assert directional_similarity(empty, empty, empty, empty).shape == (0,)


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        (torch.zeros(2, 8), torch.zeros(3, 8), r"image_features \(2, 8\), text_features \(3, 8\)"),
        (torch.zeros(2, 8), torch.zeros(2, 4), r"text_features \(2, 4\)"),
        (
            torch.zeros(8),
            torch.zeros(8),
            r"image_features must be a \[N, D\] tensor, got shape \(8,\)",
        ),
    ],
)
def test_features_must_share_one_shape(first, second, message):
    with pytest.raises(ValueError, match=message):
        image_text_similarity(first, second)


def test_directional_similarity_names_the_odd_argument():
    rows = torch.zeros(2, 8)
    with pytest.raises(ValueError, match=r"text_after \(1, 8\)"):
        directional_similarity(rows, rows, rows, torch.zeros(1, 8))
    with pytest.raises(TypeError, match="after must be a \\[N, D\\] tensor, got list"):
        image_image_similarity(rows, [[0.0] * 8] * 2)
