import csv
import json
import math
from types import SimpleNamespace

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from transformers import ViTConfig, ViTModel

from instructedit import EditPipeline
from instructedit.clip import ClipScorer
from instructedit.data import EditRecord, EditTurn, SessionRecord
from instructedit.evaluation import (
    DinoFeatures,
    EditScores,
    MagicBrushResult,
    dino_preprocess,
    evaluate_magicbrush,
    l1_distance,
    l2_distance,
    score_edits,
    write_magicbrush,
)
from instructedit.testing import tiny_components, tiny_open_clip


@pytest.fixture(scope="module")
def scorer():
    return ClipScorer(tiny_open_clip(seed=0), open_clip.get_tokenizer("ViT-B-32"))


def tiny_vit(seed=0):
    """A random transformers ViT at toy size, standing in for DINO ViT-S/16."""
    torch.manual_seed(seed)
    config = ViTConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=224,
        patch_size=32,
    )
    return ViTModel(config, add_pooling_layer=False).eval()


def _constant(value, size=(16, 16)):
    return Image.new("RGB", size, (value, value, value))


def _noise(seed, size=(16, 16)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _sessions(captions=True):
    sessions = []
    for index, session_id in enumerate(("101", "202")):
        turns = []
        for turn in (1, 2):
            record = EditRecord(
                _noise(10 * index + turn - 1),
                f"edit {turn} of {session_id}",
                _noise(10 * index + turn),
                output_caption=f"a picture {turn}" if captions else None,
            )
            turns.append(EditTurn(session_id, turn, record))
        sessions.append(SessionRecord(session_id, tuple(turns)))
    return sessions


def test_l1_and_l2_of_constant_images_by_hand():
    grey, black = _constant(51), _constant(0)  # 51 / 255 = 0.2 in every channel
    assert l1_distance(grey, black) == pytest.approx(0.2)
    assert l2_distance(grey, black) == pytest.approx(0.04)  # mean squared, no square root
    # The output is resized to the ground truth's size first; a constant image stays constant.
    assert l1_distance(_constant(51, (8, 8)), black) == pytest.approx(0.2)
    assert l1_distance(black, black) == 0.0
    half = Image.new("RGB", (2, 1))
    half.putpixel((0, 0), (255, 255, 255))  # one white pixel of two
    assert l1_distance(half, Image.new("RGB", (2, 1))) == pytest.approx(0.5)
    assert l2_distance(half, Image.new("RGB", (2, 1))) == pytest.approx(0.5)


def test_dino_preprocess_resizes_the_short_side_and_crops_the_centre():
    pixels = dino_preprocess(_constant(255, (300, 200)))
    assert pixels.shape == (3, 224, 224)
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(pixels[:, 0, 0], expected, atol=1e-5)
    # A left-to-right split image: the crop keeps the centre of the 384 × 256 resize.
    image = Image.new("RGB", (300, 200))
    image.paste((255, 255, 255), (150, 0, 300, 200))
    centre = dino_preprocess(image)[0, 112]
    assert centre[:100].max() < 0 < centre[124:].min()


class _FixedScorer:
    """CLIP features that do not depend on the image, for tests of the other scores."""

    def encode_images(self, images):
        return torch.ones(len(images), 2) / math.sqrt(2)

    def encode_texts(self, texts):
        return torch.tensor([[1.0, 0.0]] * len(texts))


def test_dino_features_of_a_stub_model_by_hand():
    def stub(pixels):
        # [1, 1] for bright images, [1, 0] for dark ones (after ImageNet normalisation).
        bright = (pixels.mean(dim=(1, 2, 3)) > 0).float()
        return torch.stack([torch.ones(len(pixels)), bright], dim=1)

    dino = DinoFeatures(stub)
    features = dino([_constant(255), _constant(0)])
    assert features.tolist() == [[1.0, 1.0], [1.0, 0.0]]
    turn = EditTurn("1", 1, EditRecord(_constant(0), "x", _constant(0)))
    scorer = _FixedScorer()
    (scores,) = score_edits([_constant(255)], [turn], scorer, dino=dino)
    assert scores.dino == pytest.approx(1 / math.sqrt(2))  # cos([1, 1], [1, 0])


def test_dino_of_identical_images_is_one_with_a_transformers_vit(tmp_path):
    model = tiny_vit()
    images = [_noise(0, (40, 30)), _noise(1)]
    features = DinoFeatures(model)(images)
    assert features.shape == (2, 16)
    cosine = torch.nn.functional.cosine_similarity(features, DinoFeatures(model)(images))
    assert torch.allclose(cosine, torch.ones(2), atol=1e-5)
    model.save_pretrained(tmp_path / "dino")
    loaded = DinoFeatures.from_pretrained(tmp_path / "dino")
    assert torch.allclose(loaded(images), features, atol=1e-5)
    with pytest.raises(FileNotFoundError, match="dino_model: no such model folder"):
        DinoFeatures.from_pretrained(tmp_path / "missing")


def test_clip_scores_against_the_ground_truth(scorer):
    sessions = _sessions()
    turns = [t for s in sessions for t in s.turns]
    truths = [t.record.edited_image for t in turns]
    same = score_edits(truths, turns, scorer, dino=DinoFeatures(tiny_vit()))
    for scores in same:
        assert scores.l1 == 0.0
        assert scores.l2 == 0.0
        assert scores.clip_i == pytest.approx(1.0, abs=1e-5)
        assert scores.dino == pytest.approx(1.0, abs=1e-5)
        assert scores.clip_t == pytest.approx(scores.clip_t_oracle, abs=1e-6)
    generated = [_noise(99)] * len(turns)
    scores = score_edits(generated, turns, scorer)
    image = scorer.encode_images([generated[0]])[0]
    text = scorer.encode_texts(["a picture 1"])[0]
    assert scores[0].clip_t == pytest.approx(float(image @ text), abs=1e-6)
    truth = scorer.encode_images([truths[0]])[0]
    assert scores[0].clip_i == pytest.approx(float(image @ truth), abs=1e-6)
    assert math.isnan(scores[0].dino)
    no_captions = [t for s in _sessions(captions=False) for t in s.turns]
    assert math.isnan(score_edits(generated, no_captions, scorer)[0].clip_t)


class _RecordingPipeline:
    """Records each edit's input and returns a new constant image per call."""

    device = torch.device("cpu")

    def __init__(self):
        self.inputs = []
        self.options = []

    def __call__(self, image, instruction, **options):
        self.inputs.append((np.asarray(image).copy(), instruction))
        self.options.append(options)
        output = _constant(10 * len(self.inputs))
        return SimpleNamespace(images=[output])


def test_multi_turn_feeds_each_turn_the_previous_output(scorer):
    pipe = _RecordingPipeline()
    sessions = _sessions()
    result = evaluate_magicbrush(pipe, sessions, scorer, turns="multi", num_inference_steps=3)
    inputs = [image for image, _ in pipe.inputs]
    assert [instruction for _, instruction in pipe.inputs] == [
        t.record.edit_prompt for s in sessions for t in s.turns
    ]
    # Turn 1 edits the ground-truth input; turn 2 edits the pipeline's own turn-1 output.
    assert np.array_equal(inputs[0], np.asarray(sessions[0].turns[0].record.input_image))
    assert np.array_equal(inputs[1], np.asarray(_constant(10)))
    assert np.array_equal(inputs[2], np.asarray(sessions[1].turns[0].record.input_image))
    assert np.array_equal(inputs[3], np.asarray(_constant(30)))
    assert pipe.options[0]["num_inference_steps"] == 3
    assert pipe.options[0]["guidance_scale"] == 7.5
    assert pipe.options[0]["image_guidance_scale"] == 1.5
    assert [(s.session_id, s.turn) for s in result.scores] == [
        ("101", 1),
        ("101", 2),
        ("202", 1),
        ("202", 2),
    ]
    expected_l1 = [
        l1_distance(_constant(10 * (i + 1)), t.record.edited_image)
        for i, t in enumerate(t for s in sessions for t in s.turns)
    ]
    assert [s.l1 for s in result.scores] == pytest.approx(expected_l1)
    assert result.final_turn().count == 2
    assert result.final_turn().l1 == pytest.approx((expected_l1[1] + expected_l1[3]) / 2)
    assert result.all_turns().l1 == pytest.approx(sum(expected_l1) / 4)
    assert result.per_turn()[1].l1 == pytest.approx((expected_l1[0] + expected_l1[2]) / 2)


def test_single_turn_edits_every_ground_truth_input(scorer):
    pipe = _RecordingPipeline()
    sessions = _sessions()
    evaluate_magicbrush(pipe, sessions, scorer, turns="single")
    for (image, _), turn in zip(pipe.inputs, (t for s in sessions for t in s.turns), strict=True):
        assert np.array_equal(image, np.asarray(turn.record.input_image))


def test_tiny_pipeline_end_to_end_writes_images_and_tables(tmp_path, scorer):
    pipe = EditPipeline(**tiny_components(seed=0))
    result = evaluate_magicbrush(
        pipe,
        _sessions(),
        scorer,
        dino=DinoFeatures(tiny_vit()),
        num_inference_steps=2,
        images_dir=tmp_path / "images",
        progress=False,
    )
    names = sorted(
        p.relative_to(tmp_path / "images").as_posix() for p in (tmp_path / "images").rglob("*.png")
    )
    assert names == ["101/101_1.png", "101/101_iter_2.png", "202/202_1.png", "202/202_iter_2.png"]
    json_path, csv_path = write_magicbrush(result, tmp_path / "out", settings={"steps": 2})
    summary = json.loads(json_path.read_text())
    assert summary["turns"] == "multi"
    assert summary["sessions"] == 2
    assert summary["settings"] == {"steps": 2}
    assert summary["all_turns"]["count"] == 4
    assert summary["final_turn"]["count"] == 2
    assert set(summary["per_turn"]) == {"1", "2"}
    assert 0 <= summary["all_turns"]["l1"] <= 1
    rows = list(csv.DictReader(csv_path.open()))
    assert [(r["session_id"], r["turn"]) for r in rows] == [
        ("101", "1"),
        ("101", "2"),
        ("202", "1"),
        ("202", "2"),
    ]


def test_missing_scores_are_null_in_json(tmp_path):
    nan = math.nan
    result = MagicBrushResult("single", (EditScores("1", 1, 0.1, 0.01, 0.9, nan, nan, nan),))
    summary = json.loads(write_magicbrush(result, tmp_path)[0].read_text())
    assert summary["final_turn"]["dino"] is None
    assert summary["final_turn"]["clip_t"] is None
    assert summary["final_turn"]["l1"] == pytest.approx(0.1)


def test_bad_arguments_are_refused(scorer):
    pipe = _RecordingPipeline()
    with pytest.raises(ValueError, match="turns must be 'multi' or 'single', got 'both'"):
        evaluate_magicbrush(pipe, _sessions(), scorer, turns="both")
    with pytest.raises(ValueError, match="sessions is empty"):
        evaluate_magicbrush(pipe, [], scorer)
    with pytest.raises(TypeError, match=r"sessions\[0\] must be an SessionRecord"):
        evaluate_magicbrush(pipe, ["101"], scorer)
    with pytest.raises(ValueError, match="got 1 generated images for 2 turns"):
        score_edits([_noise(0)], list(_sessions()[0].turns), scorer)
    assert pipe.inputs == []
