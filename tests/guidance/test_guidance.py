import math

import pytest
import torch
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

from instructedit.guidance import (
    ClassifierFreeGuidance,
    DualGuidance,
    dual_guidance,
    dual_guidance_weights,
    rescale_guidance,
    weighted_sum,
)

SCALES = [(7.5, 1.5), (7.5, 1.0), (7.5, 7.5), (3.0, 2.2), (0.0, 0.0), (12.0, 0.5)]


def _branches(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(2, 4, 8, 8, generator=g) for name in ("full", "image", "uncond")}


@pytest.mark.parametrize(("text_scale", "image_scale"), SCALES)
def test_branch_weights_reproduce_the_papers_formula(text_scale, image_scale):
    b = _branches()
    # The paper's eq. 3 written out by hand, independent of dual_guidance.
    expected = (
        b["uncond"]
        + image_scale * (b["image"] - b["uncond"])
        + text_scale * (b["full"] - b["image"])
    )
    got = dual_guidance(
        b["full"], b["image"], b["uncond"], text_scale=text_scale, image_scale=image_scale
    )
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    weights = dual_guidance_weights(text_scale=text_scale, image_scale=image_scale)
    if any(weights.values()):
        torch.testing.assert_close(weighted_sum(b, weights), expected, rtol=0, atol=1e-5)


def test_zero_weights_are_exact_at_the_documented_scales():
    assert dual_guidance_weights(text_scale=7.5, image_scale=1.0)["uncond"] == 0.0
    assert dual_guidance_weights(text_scale=7.5, image_scale=7.5)["image"] == 0.0
    assert all(dual_guidance_weights(text_scale=7.5, image_scale=1.5).values())


def test_combine_skips_missing_zero_weight_branch():
    b = _branches()
    guidance = DualGuidance(text_scale=7.5, image_scale=1.0)
    without_uncond = {"full": b["full"], "image": b["image"]}
    expected = dual_guidance(b["full"], b["image"], b["uncond"], text_scale=7.5, image_scale=1.0)
    torch.testing.assert_close(guidance.combine(without_uncond, 0, 10), expected, rtol=0, atol=1e-5)


def test_interval_limits_guidance_to_a_fraction_of_steps():
    guidance = DualGuidance(interval=(0.2, 0.6))
    guided = [i for i in range(10) if guidance.weights(i, 10)["uncond"] != 0.0]
    assert guided == [2, 3, 4, 5]
    assert guidance.weights(0, 10) == {"full": 1.0, "image": 0.0, "uncond": 0.0}
    b = _branches()
    assert torch.equal(guidance.combine({"full": b["full"]}, 9, 10), b["full"])
    whole = DualGuidance(interval=(0.0, 1.0))
    assert all(whole.weights(i, 7)["uncond"] != 0.0 for i in range(7))


@pytest.mark.parametrize("rescale", [0.0, 0.3, 0.7, 1.0])
def test_rescale_matches_diffusers(rescale):
    b = _branches(1)
    guided = dual_guidance(b["full"], b["image"], b["uncond"], text_scale=7.5, image_scale=1.5)
    expected = rescale_noise_cfg(guided, b["full"], guidance_rescale=rescale)
    torch.testing.assert_close(rescale_guidance(guided, b["full"], rescale), expected)


def test_classifier_free_guidance():
    g = torch.Generator().manual_seed(2)
    cond, uncond = torch.randn(2, 4, 4, 4, generator=g), torch.randn(2, 4, 4, 4, generator=g)
    cfg = ClassifierFreeGuidance(scale=7.5)
    expected = uncond + 7.5 * (cond - uncond)
    got = cfg.combine({"cond": cond, "uncond": uncond}, 0, 10)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert ClassifierFreeGuidance(scale=1.0).weights(0, 10)["uncond"] == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text_scale": -1.0}, "text_scale must be a finite number >= 0"),
        ({"image_scale": math.nan}, "image_scale must be a finite number >= 0"),
        ({"image_scale": math.inf}, "image_scale must be a finite number >= 0"),
        ({"guidance_rescale": 1.5}, "guidance_rescale must be in"),
        ({"interval": (0.5, 0.2)}, "interval must satisfy"),
        ({"interval": (0.0, 1.2)}, "interval must satisfy"),
        ({"backend": "cuda"}, "backend must be one of"),
    ],
)
def test_bad_settings_are_rejected_with_the_field_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DualGuidance(**kwargs)


def test_scale_type_is_checked():
    with pytest.raises(TypeError, match="text_scale must be a number"):
        DualGuidance(text_scale="7.5")  # type: ignore[arg-type]


def test_with_scales_keeps_other_fields():
    base = DualGuidance(guidance_rescale=0.5, interval=(0.0, 0.5), backend="torch")
    changed = base.with_scales(image_scale=1.2)
    assert changed.image_scale == 1.2
    assert changed.text_scale == base.text_scale
    assert changed.interval == (0.0, 0.5)
    assert changed.backend == "torch"


@pytest.mark.parametrize(
    ("scale", "message"),
    [
        (-1.0, r"^scale must be a finite number >= 0, got -1.0"),
        ((7.5, math.nan), r"^scale\[1\] must be a finite number >= 0, got nan"),
        ((), "scale must be a number or a non-empty tuple"),
    ],
)
def test_classifier_free_guidance_names_the_bad_scale(scale, message):
    with pytest.raises(ValueError, match=message):
        ClassifierFreeGuidance(scale=scale)
