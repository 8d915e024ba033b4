import json

import open_clip
import pytest
import torch
from PIL import Image

from instructedit.testing import TINY_OPEN_CLIP_CONFIG, save_tiny_open_clip, tiny_open_clip


def test_same_seed_same_weights():
    a, b, c = tiny_open_clip(seed=1), tiny_open_clip(seed=1), tiny_open_clip(seed=2)
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert not all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), c.state_dict().values(), strict=True)
    )


def test_does_not_touch_open_clips_registry():
    before = set(open_clip.list_models())
    tiny_open_clip()
    assert set(open_clip.list_models()) == before


def test_local_dir_round_trip_gives_identical_features(tmp_path):
    folder = save_tiny_open_clip(tmp_path / "clip", seed=0)
    config = json.loads((folder / "open_clip_config.json").read_text())
    assert config["model_cfg"] == TINY_OPEN_CLIP_CONFIG
    loaded, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    loaded.eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    original = tiny_open_clip(seed=0)
    image = preprocess(Image.new("RGB", (40, 30), (10, 200, 30))).unsqueeze(0)
    assert image.shape == (1, 3, 32, 32)
    text = tokenizer(["a green square", "a red circle"])
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(image), original.encode_image(image))
        assert torch.equal(loaded.encode_text(text), original.encode_text(text))
        assert loaded.encode_text(text).shape == (2, TINY_OPEN_CLIP_CONFIG["embed_dim"])


@pytest.mark.parametrize("seed", [-1, 1.5])
def test_bad_seed_is_rejected(seed):
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        tiny_open_clip(seed=seed)
