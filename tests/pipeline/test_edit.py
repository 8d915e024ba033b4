import numpy as np
import pytest
import torch
from diffusers import StableDiffusionInstructPix2PixPipeline

from instructedit import DualGuidance, EditPipeline
from instructedit.testing import tiny_components, tiny_unet

STEPS = 8


def _diffusers(scheduler):
    pipe = StableDiffusionInstructPix2PixPipeline(
        **tiny_components(seed=0, scheduler=scheduler),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _ours(scheduler="euler_ancestral", **kwargs):
    return EditPipeline(**tiny_components(seed=0, scheduler=scheduler), **kwargs)


@pytest.mark.parametrize("scheduler", ["ddim", "euler_ancestral", "pndm", "dpm_solver++"])
@pytest.mark.parametrize("image_scale", [1.5, 1.0])
def test_output_equals_diffusers(noise_image, scheduler, image_scale):
    kwargs = {
        "num_inference_steps": STEPS,
        "image_guidance_scale": image_scale,
        "output_type": "np",
    }
    expected = _diffusers(scheduler)(
        "make it snowy", image=noise_image, generator=torch.Generator().manual_seed(0), **kwargs
    ).images
    got = _ours(scheduler)(
        noise_image,
        "make it snowy",
        generator=torch.Generator().manual_seed(0),
        progress=False,
        **kwargs,
    ).images
    assert got.shape == expected.shape == (1, 24, 32, 3)
    assert np.abs(got - expected).max() < 1e-4
    # The comparison is not vacuous: another seed gives a clearly different image.
    other = _ours(scheduler)(
        noise_image,
        "make it snowy",
        generator=torch.Generator().manual_seed(1),
        progress=False,
        **kwargs,
    ).images
    assert np.abs(other - expected).max() > 1e-2


def test_latents_equal_diffusers_too(noise_image):
    kwargs = {"num_inference_steps": STEPS, "output_type": "latent"}
    expected = _diffusers("euler_ancestral")(
        "add a hat", image=noise_image, generator=torch.Generator().manual_seed(3), **kwargs
    ).images
    got = _ours()(
        noise_image,
        "add a hat",
        generator=torch.Generator().manual_seed(3),
        progress=False,
        **kwargs,
    )
    assert got.images.shape == expected.shape
    scale = expected.abs().max()
    assert (got.images - expected).abs().max() <= 1e-5 * scale


def test_negative_instruction_matches_diffusers(noise_image):
    kwargs = {"num_inference_steps": 4, "output_type": "np"}
    expected = _diffusers("ddim")(
        "make it red",
        image=noise_image,
        negative_prompt="blurry",
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    ).images
    got = _ours("ddim")(
        noise_image,
        "make it red",
        negative_instruction="blurry",
        generator=torch.Generator().manual_seed(0),
        progress=False,
        **kwargs,
    ).images
    assert np.abs(got - expected).max() < 1e-4


def test_batch_with_per_image_generators_equals_single_calls(noise_image):
    pipe = _ours()
    flipped = noise_image.transpose(0)
    kwargs = {"num_inference_steps": 4, "output_type": "np", "progress": False}
    batch = pipe(
        [noise_image, flipped],
        ["make it snowy", "add fireworks"],
        generator=[torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)],
        **kwargs,
    ).images
    first = pipe(
        noise_image, "make it snowy", generator=torch.Generator().manual_seed(1), **kwargs
    ).images
    second = pipe(
        flipped, "add fireworks", generator=torch.Generator().manual_seed(2), **kwargs
    ).images
    assert batch.shape == (2, 24, 32, 3)
    np.testing.assert_allclose(batch[0], first[0], atol=1e-4)
    np.testing.assert_allclose(batch[1], second[0], atol=1e-4)


def test_num_images_per_instruction_and_broadcast(noise_image):
    out = _ours()(
        noise_image,
        ["make it snowy", "make it sunny"],
        num_images_per_instruction=2,
        num_inference_steps=2,
        output_type="pt",
        generator=torch.Generator().manual_seed(0),
        progress=False,
    ).images
    assert out.shape == (4, 3, 24, 32)
    assert out.min() >= 0.0
    assert out.max() <= 1.0
    assert not torch.equal(out[0], out[1])


def test_output_types(noise_image):
    pipe = _ours()
    kwargs = {"num_inference_steps": 2, "progress": False}
    pil = pipe(noise_image, "x", generator=torch.Generator().manual_seed(0), **kwargs).images
    arr = pipe(
        noise_image, "x", output_type="np", generator=torch.Generator().manual_seed(0), **kwargs
    ).images
    assert pil[0].size == (32, 24)
    assert pil[0].mode == "RGB"
    np.testing.assert_array_equal(np.asarray(pil[0]), (arr[0] * 255).round().astype(np.uint8))
    latent = pipe(noise_image, "x", output_type="latent", **kwargs).images
    assert latent.shape == (1, 4, 12, 16)
    assert not latent.is_inference()


def test_callback_replaces_latents_and_stops(noise_image):
    calls = []

    def callback(pipe, index, timestep, tensors):
        calls.append(index)
        assert isinstance(pipe, EditPipeline)
        return {"stop": True} if index == 1 else None

    _ours()(noise_image, "x", num_inference_steps=6, callback_on_step_end=callback, progress=False)
    assert calls == [0, 1]


def test_guidance_default_comes_from_the_pipeline(noise_image):
    kwargs = {"num_inference_steps": 3, "output_type": "np", "progress": False}
    configured = _ours(guidance=DualGuidance(text_scale=3.0, image_scale=1.2))(
        noise_image, "x", generator=torch.Generator().manual_seed(0), **kwargs
    ).images
    explicit = _ours()(
        noise_image,
        "x",
        guidance_scale=3.0,
        image_guidance_scale=1.2,
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    ).images
    np.testing.assert_array_equal(configured, explicit)


def test_to_diffusers_shares_modules_and_output(noise_image):
    ours = _ours("ddim")
    theirs = ours.to_diffusers()
    assert theirs.unet is ours.unet
    assert theirs.vae is ours.vae
    theirs.set_progress_bar_config(disable=True)
    kwargs = {"num_inference_steps": 3, "output_type": "np"}
    a = theirs("x", image=noise_image, generator=torch.Generator().manual_seed(0), **kwargs).images
    b = ours(
        noise_image, "x", generator=torch.Generator().manual_seed(0), progress=False, **kwargs
    ).images
    assert np.abs(a - b).max() < 1e-4


def test_text_to_image_unet_is_rejected_with_advice():
    parts = tiny_components(seed=0)
    parts["unet"] = tiny_unet(in_channels=4)
    with pytest.raises(ValueError, match="in_channels must be 8"):
        EditPipeline(**parts)


def test_fp16_vae_overflow_is_recomputed_in_float32():
    pipe = _ours()
    latents = torch.randn(1, 4, 6, 6, generator=torch.Generator().manual_seed(0))
    reference = pipe.decode_latents(latents)
    with torch.no_grad():
        # Weights up to 3e4 still fit fp16 (max 65504), but sums of ~300 such products overflow it.
        weight = pipe.vae.decoder.conv_out.weight
        weight.mul_(3e4 / weight.abs().max())
    expected = pipe.decode_latents(latents)
    pipe.vae.to(torch.float16)
    with torch.no_grad():
        naive = pipe.vae.decode(latents.half() / pipe.vae.config.scaling_factor).sample
    assert not torch.isfinite(naive).all()  # the bug being guarded against
    recovered = pipe.decode_latents(latents)
    assert pipe.vae.dtype == torch.float16
    assert torch.isfinite(recovered).all()
    assert not torch.equal(expected, reference)
    torch.testing.assert_close(
        recovered, expected, rtol=1e-2, atol=1e-2 * expected.abs().max().item()
    )


@pytest.mark.slow
def test_compiled_pipeline_matches_eager(noise_image):
    pipe = _ours()
    kwargs = {"num_inference_steps": 3, "output_type": "np", "progress": False}
    eager = pipe(noise_image, "x", generator=torch.Generator().manual_seed(0), **kwargs).images
    compiled = pipe.compile()(
        noise_image, "x", generator=torch.Generator().manual_seed(0), **kwargs
    ).images
    assert np.abs(compiled - eager).max() < 1e-4
    assert pipe.unet is pipe.to_diffusers().unet  # the module itself is not replaced


@pytest.mark.slow
def test_compiled_channels_last_fused_qkv_matches_eager(noise_image):
    pipe = _ours()
    kwargs = {"num_inference_steps": 3, "output_type": "np", "progress": False}
    eager = pipe(noise_image, "x", generator=torch.Generator().manual_seed(0), **kwargs).images
    pipe.compile(channels_last=True, fuse_qkv=True)
    processors = {type(p).__name__ for p in pipe.unet.attn_processors.values()}
    assert processors == {"FusedAttnProcessor2_0"}
    compiled = pipe(noise_image, "x", generator=torch.Generator().manual_seed(0), **kwargs).images
    assert np.abs(compiled - eager).max() < 1e-4
