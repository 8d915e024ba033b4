import csv
import math

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from instructedit import EditPipeline
from instructedit.clip import ClipScorer
from instructedit.data import EditRecord
from instructedit.evaluation import edit_metrics, guidance_sweep, plot_sweep, write_csv
from instructedit.testing import tiny_components, tiny_open_clip


@pytest.fixture(scope="module")
def scorer():
    return ClipScorer(tiny_open_clip(seed=0), open_clip.get_tokenizer("ViT-B-32"))


def _records(count=3):
    rng = np.random.default_rng(0)
    return [
        EditRecord(
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)),
            "make it red",
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)),
            "a cat",
            "a red cat",
        )
        for _ in range(count)
    ]


def test_guidance_sweep_table_and_plot(tmp_path, scorer):
    pipe = EditPipeline(**tiny_components(seed=0))
    points = guidance_sweep(
        pipe,
        scorer,
        _records(),
        image_scales=(1.0, 2.0),
        num_inference_steps=2,
        batch_size=2,
        progress=False,
    )
    assert [p.image_scale for p in points] == [1.0, 2.0]
    assert all(p.count == 3 and p.text_scale == 7.5 for p in points)
    assert all(-1 <= p.direction_similarity <= 1 and -1 <= p.image_similarity <= 1 for p in points)
    again = guidance_sweep(
        pipe,
        scorer,
        _records(),
        image_scales=(1.0,),
        num_inference_steps=2,
        batch_size=3,
        progress=False,
    )
    assert again[0].image_similarity == pytest.approx(
        points[0].image_similarity, abs=1e-5
    )  # batch-size independent
    rows = list(csv.DictReader(write_csv(points, tmp_path / "sweep.csv").open()))
    assert [float(r["image_scale"]) for r in rows] == [1.0, 2.0]
    assert Image.open(plot_sweep(points, tmp_path / "sweep.png")).size[0] > 100


def test_sweep_needs_captions(scorer):
    record = EditRecord(Image.new("RGB", (16, 16)), "x", Image.new("RGB", (16, 16)))
    with pytest.raises(ValueError, match=r"examples\[0\] needs input_caption"):
        guidance_sweep(EditPipeline(**tiny_components(seed=0)), scorer, [record], progress=False)


def test_edit_metrics_by_hand(scorer):
    black, white = Image.new("RGB", (8, 8), "black"), Image.new("RGB", (8, 8), "white")
    grey = Image.new("RGB", (8, 8), (51, 51, 51))  # 0.2 away from black in every channel
    same = edit_metrics([black, white], [black, white], ["a", "b"], scorer)
    assert same.l1 == 0.0
    assert same.clip_i == pytest.approx(1.0, abs=1e-5)
    assert math.isnan(same.dino)
    assert edit_metrics([grey], [black], ["a"], scorer).l1 == pytest.approx(0.2, abs=1e-6)
    features = {id(black): torch.tensor([1.0, 0.0]), id(white): torch.tensor([0.0, 1.0])}

    def dino(images):
        return torch.stack([features[id(i)] for i in images])

    assert edit_metrics([black], [white], ["a"], scorer, dino=dino).dino == pytest.approx(0.0)
    with pytest.raises(ValueError, match="1 outputs, 2 targets"):
        edit_metrics([black], [black, white], ["a", "b"], scorer)


class _ExplodingPipe:
    """Stands in for the pipeline: any edit means validation came too late."""

    device = torch.device("cpu")

    def __call__(self, *args, **kwargs):
        raise AssertionError("the editor ran before the input was validated")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"examples": []}, ValueError, "examples is empty"),
        ({"examples": _records(1)[0]}, TypeError, "examples must be a list of EditRecord"),
        ({"image_scales": ()}, ValueError, "image_scales is empty"),
        ({"image_scales": 1.5}, TypeError, "image_scales must be a list of numbers"),
        ({"image_scales": (1.0, -1.0)}, ValueError, r"image_scales\[1\] must be a finite number"),
        ({"text_scale": math.nan}, ValueError, "text_scale must be a finite number >= 0"),
        ({"batch_size": 0}, ValueError, "batch_size must be an int >= 1, got 0"),
        ({"num_inference_steps": 2.5}, ValueError, "num_inference_steps must be an int >= 1"),
    ],
)
def test_bad_sweep_arguments_are_refused_before_any_edit(scorer, kwargs, error, message):
    arguments = {"examples": _records(1), "progress": False, **kwargs}
    with pytest.raises(error, match=message):
        guidance_sweep(_ExplodingPipe(), scorer, **arguments)


def test_edit_metrics_refuse_an_empty_or_mistyped_batch(scorer):
    image = Image.new("RGB", (16, 16))
    with pytest.raises(ValueError, match="outputs is empty"):
        edit_metrics([], [], [], scorer)
    with pytest.raises(TypeError, match="target_captions must be a list, got str"):
        edit_metrics([image], [image], "a cat", scorer)
    with pytest.raises(TypeError, match=r"targets\[0\] must be a PIL image, got str"):
        edit_metrics([image], ["target.png"], ["a cat"], scorer)
    with pytest.raises(ValueError, match="rows is empty"):
        write_csv([], "unused.csv")


def test_sweeps_of_shares_combine_into_the_sweep_of_the_whole_set(scorer):
    from instructedit.evaluation import combine_sweeps

    pipe = EditPipeline(**tiny_components(seed=0))
    records = _records()

    def sweep(examples):
        return guidance_sweep(
            pipe, scorer, examples, image_scales=(1.0, 2.0), num_inference_steps=2, progress=False
        )

    whole = sweep(records)
    combined = combine_sweeps([sweep(records[0::2]), sweep(records[1::2]), []])
    assert [(p.image_scale, p.count) for p in combined] == [(1.0, 3), (2.0, 3)]
    for got, expected in zip(combined, whole, strict=True):
        assert got.direction_similarity == pytest.approx(expected.direction_similarity, abs=1e-5)
        assert got.image_similarity == pytest.approx(expected.image_similarity, abs=1e-5)
    with pytest.raises(ValueError, match="sweeps holds no points"):
        combine_sweeps([[], []])
    with pytest.raises(ValueError, match=r"sweeps\[1\] has other guidance settings"):
        combine_sweeps([whole, whole[:1]])
