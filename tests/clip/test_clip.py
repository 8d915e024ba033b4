import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from instructedit.clip import ClipDirectionalFilter, ClipScorer, ClipScores, official_preprocess
from instructedit.testing import save_tiny_open_clip, tiny_open_clip


@pytest.fixture(scope="module")
def model():
    return tiny_open_clip(seed=0)


@pytest.fixture(scope="module")
def scorer(model):
    return ClipScorer(model, open_clip.get_tokenizer("ViT-B-32"))


def _images(count, seed):
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)) for _ in range(count)
    ]


def _official(model, images_0, images_1, captions_0, captions_1):
    """The official ClipSimilarity, written out independently (tensors in [0, 1], bicubic resize
    to the model's size without cropping, CLIP mean/std, normalised features)."""
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)

    def encode_image(images):
        pixels = torch.stack(
            [
                torch.from_numpy(np.asarray(i, dtype=np.float32) / 255.0).permute(2, 0, 1)
                for i in images
            ]
        )
        pixels = F.interpolate(pixels, size=32, mode="bicubic", align_corners=False)
        with torch.no_grad():
            return F.normalize(model.encode_image((pixels - mean) / std), dim=1)

    def encode_text(texts):
        with torch.no_grad():
            return F.normalize(model.encode_text(open_clip.tokenize(texts)), dim=1)

    i0, i1, t0, t1 = (
        encode_image(images_0),
        encode_image(images_1),
        encode_text(captions_0),
        encode_text(captions_1),
    )
    return (
        F.cosine_similarity(i0, t0),
        F.cosine_similarity(i1, t1),
        F.cosine_similarity(i1 - i0, t1 - t0),
        F.cosine_similarity(i0, i1),
    )


def test_similarities_equal_the_official_formula(model, scorer):
    before, after = _images(5, 0), _images(5, 1)
    captions_0 = ["a red ball"] * 3 + ["a cat", "a dog"]
    captions_1 = ["a blue ball"] * 3 + ["a tiger", "a wolf"]
    scores = ClipDirectionalFilter(scorer).score(before, after, captions_0, captions_1)
    sim_0, sim_1, sim_dir, sim_image = _official(model, before, after, captions_0, captions_1)
    torch.testing.assert_close(scores.text_similarity_before, sim_0, rtol=0, atol=1e-5)
    torch.testing.assert_close(scores.text_similarity_after, sim_1, rtol=0, atol=1e-5)
    torch.testing.assert_close(scores.direction_similarity, sim_dir, rtol=0, atol=1e-5)
    torch.testing.assert_close(scores.image_similarity, sim_image, rtol=0, atol=1e-5)


def test_batching_does_not_change_features(model):
    images = _images(7, 2)
    one = ClipScorer(model, open_clip.get_tokenizer("ViT-B-32"), batch_size=1).encode_images(images)
    many = ClipScorer(model, open_clip.get_tokenizer("ViT-B-32"), batch_size=64).encode_images(
        images
    )
    torch.testing.assert_close(one, many, rtol=0, atol=1e-5)
    torch.testing.assert_close(one.norm(dim=1), torch.ones(7))


def test_thresholds_at_the_boundary_keep_the_pair(scorer):
    flt = ClipDirectionalFilter(scorer, 0.75, 0.2, 0.2)
    values = torch.tensor
    scores = ClipScores(
        image_similarity=values([0.75, 0.7499, 0.8, 0.8, 0.8]),
        direction_similarity=values([0.2, 0.5, 0.1999, 0.5, 0.5]),
        text_similarity_before=values([0.2, 0.5, 0.5, 0.1999, 0.5]),
        text_similarity_after=values([0.2, 0.5, 0.5, 0.5, 0.1999]),
    )
    result = flt.judge(scores)
    assert result.keep.tolist() == [True, False, False, False, False]
    assert result.reasons == [
        None,
        "image_similarity",
        "direction_similarity",
        "text_similarity",
        "text_similarity",
    ]
    assert result.counts() == {
        "kept": 1,
        "image_similarity": 1,
        "direction_similarity": 1,
        "text_similarity": 2,
    }


def test_top_k_ranks_by_direction_within_groups(scorer):
    scores = ClipScores(
        image_similarity=torch.ones(6),
        direction_similarity=torch.tensor([0.3, 0.9, 0.5, 0.8, 0.1, 0.7]),
        text_similarity_before=torch.ones(6),
        text_similarity_after=torch.ones(6),
    )
    result = ClipDirectionalFilter(scorer, 0.0, 0.2, 0.0).judge(scores)
    assert ClipDirectionalFilter.top_k(result, ["a", "a", "a", "b", "b", "b"], k=2) == [1, 3, 5, 2]
    assert ClipDirectionalFilter.top_k(result, k=1) == [1]


def test_bad_thresholds_and_mismatched_inputs(scorer):
    with pytest.raises(ValueError, match="min_image_similarity"):
        ClipDirectionalFilter(scorer, 1.5)
    with pytest.raises(ValueError, match="after_images has 1 entries"):
        ClipDirectionalFilter(scorer).score(_images(2, 0), _images(1, 0), ["a", "b"], ["c", "d"])


def test_from_open_clip_local_dir_and_official_preprocess(tmp_path, model):
    folder = save_tiny_open_clip(tmp_path / "clip", seed=0)
    scorer = ClipScorer.from_open_clip(f"local-dir:{folder}")
    images = _images(2, 3)
    reference = ClipScorer(model, open_clip.get_tokenizer("ViT-B-32"))
    torch.testing.assert_close(
        scorer.encode_images(images), reference.encode_images(images), rtol=0, atol=1e-6
    )
    assert official_preprocess(32)(images[0]).shape == (3, 32, 32)  # no crop: the whole 56×40 image
    cropped = ClipScorer.from_open_clip(f"local-dir:{folder}", transforms="model")
    assert not torch.allclose(cropped.encode_images(images), reference.encode_images(images))
