"""Sizes and memory: the native size, resize='native', diffusers' memory tools, the estimate."""

import logging

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionInstructPix2PixPipeline
from diffusers.models.attention_processor import AttnProcessor
from PIL import Image

from instructedit import EditPipeline, PromptToPrompt
from instructedit.images import prepared_size
from instructedit.pipeline import CostEstimate
from instructedit.pipeline._cost import check_fits
from instructedit.testing import tiny_components


def _pipe(**kwargs):
    return EditPipeline(**tiny_components(seed=0), **kwargs)


def _image(width, height, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _edit(pipe, image, **kwargs):
    return pipe(
        image,
        "make it snowy",
        num_inference_steps=3,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        progress=False,
        **kwargs,
    ).images


def test_the_native_size_is_read_from_the_checkpoint():
    pipe = _pipe()
    # The tiny UNet's sample_size (16 latent cells) times the tiny VAE's factor (2).
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 32
    assert pipe.native_size == 32
    p2p = PromptToPrompt(**tiny_components(in_channels=4, seed=0))
    assert p2p.native_size == 32


def test_resize_native_scales_the_long_side_and_warns_far_above_the_native_area(caplog):
    pipe = _pipe()
    # 96×64 → long side 32 → 32×21.3 → sides floored to 8: 32×16.
    assert prepared_size(96, 64, resize="native", multiple=8, resolution=32) == (32, 16)
    assert _edit(pipe, _image(96, 64), resize="native").shape == (1, 16, 32, 3)
    with caplog.at_level(logging.WARNING, logger="instructedit.pipeline"):
        _edit(pipe, _image(136, 128))  # 17× the native 32×32 area
    assert "136×128, 17× the area this model was trained at (32×32)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="instructedit.pipeline"):
        _edit(pipe, _image(64, 64))  # 4×: no warning
    assert "the area this model was trained at" not in caplog.text


def _diffusers(pipe):
    peer = StableDiffusionInstructPix2PixPipeline(
        **tiny_components(seed=0),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    peer.set_progress_bar_config(disable=True)
    return peer


def test_vae_tiling_equals_diffusers_with_tiling_above_one_tile():
    image = _image(72, 56)  # latents 36×28, tiles of 16×16 latent cells (32 pixels)
    pipe = _pipe()
    untiled = _edit(pipe, image)
    pipe.enable_vae_tiling()
    tiled = _edit(pipe, image)
    peer = _diffusers(pipe)
    peer.vae.enable_tiling()  # diffusers 0.42 keeps the switch on the VAE only
    expected = peer(
        "make it snowy",
        image=image,
        num_inference_steps=3,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        guidance_scale=7.5,
        image_guidance_scale=1.5,
    ).images
    assert tiled.shape == expected.shape == (1, 56, 72, 3)
    assert np.abs(tiled - expected).max() < 1e-4
    assert np.abs(tiled - untiled).max() > 1e-3  # the tiles did run
    assert pipe.to_diffusers().vae.use_tiling  # to_diffusers carries the switch
    pipe.disable_vae_tiling()
    assert np.abs(_edit(pipe, image) - untiled).max() < 1e-6


def test_vae_and_attention_slicing_leave_the_output_unchanged():
    images = [_image(32, 24, seed=0), _image(32, 24, seed=1)]
    pipe = _pipe()
    plain = _edit(pipe, images)
    pipe.enable_vae_slicing()
    assert pipe.vae.use_slicing
    assert np.abs(_edit(pipe, images) - plain).max() < 1e-5
    pipe.disable_vae_slicing()
    pipe.enable_attention_slicing("max")
    processors = {type(p).__name__ for p in pipe.unet.attn_processors.values()}
    assert processors == {"SlicedAttnProcessor"}
    assert np.abs(_edit(pipe, images) - plain).max() < 1e-5
    pipe.disable_attention_slicing()
    assert "SlicedAttnProcessor" not in {
        type(p).__name__ for p in pipe.unet.attn_processors.values()
    }


@pytest.mark.parametrize("kind", ["model", "sequential"])
def test_offloaded_pipelines_equal_the_plain_one_on_the_cpu(kind):
    image = _image(32, 24)
    plain = _edit(_pipe(), image)
    pipe = _pipe()
    if kind == "model":
        pipe.enable_model_cpu_offload(device="cpu")
    else:
        pipe.enable_sequential_cpu_offload(device="cpu")
    assert all(hasattr(model, "_hf_hook") for model in (pipe.unet, pipe.vae, pipe.text_encoder))
    assert pipe.device == torch.device("cpu")
    assert np.array_equal(_edit(pipe, image), plain)
    with pytest.raises(RuntimeError, match="the pipeline is offloaded"):
        pipe.to("cpu")
    pipe.remove_offload()
    assert not hasattr(pipe.unet, "_hf_hook")
    assert np.array_equal(_edit(pipe, image), plain)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_offload_to_cuda_without_cuda_says_how_to_test_on_the_cpu():
    with pytest.raises(RuntimeError, match="device='cpu'"):
        _pipe().enable_model_cpu_offload()


def test_the_estimate_counts_evaluations_and_attention_by_hand():
    pipe = _pipe()
    cost = pipe.estimate((64, 48), steps=10)
    assert isinstance(cost, CostEstimate)
    assert (cost.width, cost.height, cost.native_size) == (64, 48, 32)
    assert cost.latent_cells == 32 * 24  # the tiny VAE halves each side
    assert cost.unet_evaluations == 10 * 3  # three guidance branches a step
    assert pipe.estimate((64, 48), steps=10, image_guidance_scale=1.0).unet_evaluations == 20
    assert pipe.estimate((64, 48), steps=10, batch=2).unet_evaluations == 60
    # The tiny UNet attends at its first level: every latent cell, 8 heads, float32 scores for
    # three branches.
    assert cost.attention_tokens == 768
    assert cost.attention_bytes == 3 * 8 * 768 * 768 * 4
    weights = sum(
        p.numel() * 4 for m in (pipe.unet, pipe.vae, pipe.text_encoder) for p in m.parameters()
    )
    assert cost.weights_bytes == weights
    assert cost.peak_bytes > weights
    # Scaled-dot-product attention holds no score matrix; classic attention holds them all,
    # attention slicing one slice of heads (1 of 8 with "max").
    assert not cost.attention_materialised
    pipe.unet.set_attn_processor(AttnProcessor())
    classic = pipe.estimate((64, 48), steps=10)
    assert classic.attention_materialised
    assert classic.peak_bytes >= weights + cost.attention_bytes
    pipe.enable_attention_slicing("max")
    sliced = pipe.estimate((64, 48), steps=10)
    assert sliced.attention_materialised
    assert weights + cost.attention_bytes // 8 <= sliced.peak_bytes < classic.peak_bytes
    pipe.disable_attention_slicing()
    double = pipe.estimate((128, 96), steps=10)
    assert double.attention_bytes == 16 * cost.attention_bytes  # the square of the area
    assert "64×48 pixels (3.0× the native 32×32 area)" in str(cost)
    assert pipe.estimate((128, 96), resize="native").width == 32


def test_an_edit_that_does_not_fit_is_refused_before_any_model_runs(monkeypatch):
    pipe = _pipe()
    cost = pipe.estimate((256, 192), steps=3)
    with pytest.raises(MemoryError, match=r"resize='native' \(long side 32\)"):
        check_fits(cost, free_bytes=cost.peak_bytes // 2)
    check_fits(cost, free_bytes=cost.peak_bytes)  # fits: no error
    small = pipe.estimate((32, 32), steps=3)
    with pytest.raises(MemoryError, match="an image of about 22×22"):
        check_fits(small, free_bytes=small.peak_bytes // 2)
    # On a CUDA device the call itself checks, with the device's free memory, before encoding.
    monkeypatch.setattr(pipe, "_offload_device", torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1024, 2**30))

    def never(*args, **kwargs):
        raise AssertionError("a model ran")

    monkeypatch.setattr(pipe, "encode_text", never)
    with pytest.raises(MemoryError, match=r"1\.0 KiB is free"):
        _edit(pipe, _image(64, 48))
