import open_clip
import pytest
import torch
from PIL import Image

from instructedit.clip import ClipScorer
from instructedit.testing import TINY_OPEN_CLIP_CONFIG, tiny_open_clip


@pytest.fixture(scope="module")
def scorer():
    return ClipScorer(tiny_open_clip(seed=0), open_clip.get_tokenizer("ViT-B-32"))


def test_no_inputs_give_zero_features_of_the_model_size(scorer):
    dim = TINY_OPEN_CLIP_CONFIG["embed_dim"]
    assert scorer.encode_images([]).shape == (0, dim)
    assert scorer.encode_texts([]).shape == (0, dim)
    # Rows of zero features concatenate with real ones.
    assert torch.cat([scorer.encode_texts([]), scorer.encode_texts(["a cat"])]).shape == (1, dim)


@pytest.mark.parametrize(
    ("method", "value", "message"),
    [
        ("encode_texts", "a cat", "texts must be a list, got str"),
        ("encode_texts", ["a cat", 3], r"texts\[1\] must be a str"),
        ("encode_images", Image.new("RGB", (8, 8)), "images must be a list, got Image"),
        ("encode_images", torch.zeros(3, 8, 8), "images must be a list, got Tensor"),
    ],
)
def test_a_single_item_is_not_read_as_a_batch(scorer, method, value, message):
    with pytest.raises(TypeError, match=message):
        getattr(scorer, method)(value)


def test_unreadable_image_is_named_by_its_index(scorer, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"images\[1\]: no such file"):
        scorer.encode_images([Image.new("RGB", (8, 8)), tmp_path / "missing.png"])


@pytest.mark.parametrize("batch_size", [0, 1.5, True])
def test_batch_size_must_be_a_positive_int(batch_size):
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        ClipScorer(
            tiny_open_clip(seed=0), open_clip.get_tokenizer("ViT-B-32"), batch_size=batch_size
        )
