"""PromptToPrompt on Stable Diffusion XL: each image of a pair equals diffusers'
StableDiffusionXLPipeline for its prompt alone; attention control and loading work on SDXL."""

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLPipeline

from instructedit.p2p import PromptToPrompt, SelfAttentionInjection
from instructedit.testing import save_tiny_pipeline, tiny_sdxl_components

STEPS = 4


def _p2p(scheduler="euler_ancestral"):
    return PromptToPrompt(**tiny_sdxl_components(in_channels=4, seed=0, scheduler=scheduler))


def _diffusers(prompt, seed, scheduler, **kwargs):
    pipe = StableDiffusionXLPipeline(
        **tiny_sdxl_components(in_channels=4, seed=0, scheduler=scheduler), add_watermarker=False
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        prompt,
        num_inference_steps=STEPS,
        generator=torch.Generator().manual_seed(seed),
        guidance_scale=7.5,  # PromptToPrompt's default (diffusers' SDXL default is 5)
        output_type="np",
        **kwargs,
    ).images


@pytest.mark.parametrize("scheduler", ["euler_ancestral", "ddim"])
def test_each_image_equals_diffusers_sdxl(scheduler):
    p2p = _p2p(scheduler)
    assert p2p.is_xl
    out = p2p.generate(
        "a red ball",
        "a blue cube",
        seed=3,
        num_inference_steps=STEPS,
        output_type="np",
        progress=False,
    )
    source, target = _diffusers("a red ball", 3, scheduler), _diffusers("a blue cube", 3, scheduler)
    assert out.source.shape == source.shape == (1, 32, 32, 3)
    assert np.abs(out.source - source).max() < 1e-4
    assert np.abs(out.target - target).max() < 1e-4
    assert np.abs(source - target).max() > 1e-2


def test_negative_prompt_and_size_equal_diffusers_sdxl():
    out = _p2p("ddim").generate(
        "a red ball",
        "a blue cube",
        seed=1,
        num_inference_steps=STEPS,
        height=24,
        width=40,
        negative_prompt="blurry",
        output_type="np",
        progress=False,
    )
    expected = _diffusers("a blue cube", 1, "ddim", negative_prompt="blurry", height=24, width=40)
    assert out.target.shape == expected.shape == (1, 24, 40, 3)
    assert np.abs(out.target - expected).max() < 1e-4


def test_attention_control_on_sdxl_keeps_the_source(tmp_path):
    folder = save_tiny_pipeline(tmp_path / "xl", kind="text_to_image_xl")
    p2p = PromptToPrompt.from_pretrained(folder)
    plain = p2p.generate(
        "a red ball",
        "a red cube",
        seed=2,
        num_inference_steps=STEPS,
        output_type="pt",
        progress=False,
    )
    controlled = p2p.generate(
        "a red ball",
        "a red cube",
        controller=SelfAttentionInjection([1.0]),
        seed=2,
        num_inference_steps=STEPS,
        output_type="pt",
        progress=False,
    )
    assert torch.allclose(controlled.source, plain.source, atol=1e-5)
    assert (controlled.target - plain.target).abs().max() > 1e-3  # the control reached it


def test_inversion_refuses_sdxl():
    p2p = _p2p()
    with pytest.raises(ValueError, match=r"inversion runs on Stable Diffusion 1\.x/2\.x"):
        p2p.invert(np.zeros((32, 32, 3), np.uint8), "a ball")
