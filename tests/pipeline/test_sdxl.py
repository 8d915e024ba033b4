"""Stable Diffusion XL editors: EditPipeline against diffusers' StableDiffusionXLInstructPix2PixPipeline
on tiny SDXL components, loading and saving, caching and masks on SDXL, and the layout errors."""

import json
import shutil

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLInstructPix2PixPipeline
from PIL import Image

from instructedit import EditPipeline
from instructedit.caching import DeepCacheUNet
from instructedit.testing import save_tiny_pipeline, tiny_components, tiny_sdxl_components

STEPS = 4
HEIGHT, WIDTH = 24, 32  # the noise_image fixture's size


def _diffusers(scheduler="euler_ancestral", **parts):
    pipe = StableDiffusionXLInstructPix2PixPipeline(
        **tiny_sdxl_components(seed=0, scheduler=scheduler), add_watermarker=False, **parts
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _ours(scheduler="euler_ancestral", **kwargs):
    return EditPipeline(**tiny_sdxl_components(seed=0, scheduler=scheduler), **kwargs)


def _reference(pipe, image, instruction, seed, **kwargs):
    return pipe(
        instruction,
        image=image,
        height=HEIGHT,
        width=WIDTH,
        generator=torch.Generator().manual_seed(seed),
        **kwargs,
    ).images


@pytest.mark.parametrize("scheduler", ["euler_ancestral", "ddim", "dpm_solver++"])
@pytest.mark.parametrize("image_scale", [1.5, 1.0])
def test_output_equals_diffusers_sdxl(noise_image, scheduler, image_scale):
    kwargs = {"num_inference_steps": STEPS, "image_guidance_scale": image_scale}
    expected = _reference(
        _diffusers(scheduler), noise_image, "make it snowy", 0, output_type="np", **kwargs
    )
    ours = _ours(scheduler)
    assert ours.is_xl
    got = ours(
        noise_image,
        "make it snowy",
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        progress=False,
        **kwargs,
    ).images
    assert got.shape == expected.shape == (1, HEIGHT, WIDTH, 3)
    assert np.abs(got - expected).max() < 1e-4
    other = ours(
        noise_image,
        "make it snowy",
        generator=torch.Generator().manual_seed(1),
        output_type="np",
        progress=False,
        **kwargs,
    ).images
    assert np.abs(other - expected).max() > 1e-2


def test_image_guidance_one_runs_two_branches(noise_image):
    pipe = _ours()
    batches: list[int] = []
    handle = pipe.unet.register_forward_pre_hook(
        lambda module, args: batches.append(args[0].shape[0])
    )
    pipe(noise_image, "add a hat", num_inference_steps=3, image_guidance_scale=1.0, progress=False)
    pipe(noise_image, "add a hat", num_inference_steps=3, image_guidance_scale=1.5, progress=False)
    handle.remove()
    assert batches == [2, 2, 2, 3, 3, 3]


def test_latents_negative_instruction_and_micro_conditioning_equal_diffusers(noise_image):
    kwargs = {
        "num_inference_steps": STEPS,
        "output_type": "latent",
        "original_size": (48, 64),
        "crops_coords_top_left": (4, 8),
        "target_size": (24, 32),
    }
    expected = _reference(
        _diffusers("ddim"), noise_image, "add a hat", 3, negative_prompt="blurry", **kwargs
    )
    got = _ours("ddim")(
        noise_image,
        "add a hat",
        negative_instruction="blurry",
        generator=torch.Generator().manual_seed(3),
        progress=False,
        **kwargs,
    ).images
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()
    # The size ids reach the UNet: other ids give other latents.
    moved = _ours("ddim")(
        noise_image,
        "add a hat",
        negative_instruction="blurry",
        generator=torch.Generator().manual_seed(3),
        progress=False,
        **{**kwargs, "original_size": (24, 32), "crops_coords_top_left": (0, 0)},
    ).images
    assert (moved - expected).abs().max() > 1e-4


def test_zero_negative_follows_the_stored_setting(noise_image):
    kwargs = {"num_inference_steps": 2, "output_type": "latent"}
    zeros = _ours()(noise_image, "add a hat", generator=torch.Generator().manual_seed(0), **kwargs)
    empty = _ours(force_zeros_for_empty_prompt=False)(
        noise_image, "add a hat", generator=torch.Generator().manual_seed(0), **kwargs
    )
    expected = _reference(
        _diffusers(force_zeros_for_empty_prompt=False), noise_image, "add a hat", 0, **kwargs
    )
    assert (empty.images - expected).abs().max() <= 1e-5 * expected.abs().max()
    assert (zeros.images - empty.images).abs().max() > 1e-4


@pytest.mark.parametrize(
    ("scheduler", "image_scale"),
    [("euler_ancestral", 1.5), ("ddim", 1.0), ("dpm_solver++", 1.5), ("dpm_solver++", 1.0)],
)
def test_loads_a_folder_diffusers_saved_and_saves_one_it_reads(
    noise_image, tmp_path, scheduler, image_scale
):
    folder = save_tiny_pipeline(tmp_path / "xl", kind="edit_xl", scheduler=scheduler)
    kwargs = {
        "num_inference_steps": STEPS,
        "image_guidance_scale": image_scale,
        "output_type": "np",
    }
    theirs = StableDiffusionXLInstructPix2PixPipeline.from_pretrained(folder)
    expected = _reference(theirs, noise_image, "make it red", 0, **kwargs)
    loaded = EditPipeline.from_pretrained(folder)
    assert loaded.is_xl
    assert type(loaded.scheduler) is type(theirs.scheduler)
    got = loaded(
        noise_image,
        "make it red",
        generator=torch.Generator().manual_seed(0),
        progress=False,
        **kwargs,
    ).images
    assert np.abs(got - expected).max() < 1e-4
    saved = loaded.save_pretrained(tmp_path / "again")
    index = json.loads((saved / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLInstructPix2PixPipeline"
    again = _reference(
        StableDiffusionXLInstructPix2PixPipeline.from_pretrained(saved),
        noise_image,
        "make it red",
        0,
        **kwargs,
    )
    assert np.abs(again - expected).max() < 1e-5


def test_caching_on_sdxl(noise_image):
    pipe = _ours("ddim")
    kwargs = {"num_inference_steps": 6, "output_type": "latent", "progress": False}
    exact = pipe(noise_image, "add a hat", generator=torch.Generator().manual_seed(0), **kwargs)
    same = pipe(
        noise_image,
        "add a hat",
        generator=torch.Generator().manual_seed(0),
        cache_interval=1,
        **kwargs,
    )
    assert torch.equal(exact.images, same.images)
    # A full call of the cached UNet is the UNet's own forward, added conditioning included.
    sample = torch.randn(2, 8, 12, 16, generator=torch.Generator().manual_seed(0))
    hidden = torch.randn(2, 77, 64, generator=torch.Generator().manual_seed(1))
    added = {
        "text_embeds": torch.randn(2, 32, generator=torch.Generator().manual_seed(2)),
        "time_ids": torch.tensor([[24.0, 32, 0, 0, 24, 32]] * 2),
    }
    cached = DeepCacheUNet(pipe.unet, interval=2)
    with torch.no_grad():
        own = pipe.unet(sample, 500, hidden, added_cond_kwargs=added).sample
        first = cached(sample, 500, hidden, added_cond_kwargs=added)[0]
        second = cached(sample, 480, hidden, added_cond_kwargs=added)[0]
    assert (first - own).abs().max() < 1e-5
    assert second.shape == own.shape
    assert (second - own).abs().max() > 1e-6
    fast = pipe(
        noise_image, "add a hat", generator=torch.Generator().manual_seed(0), speed="fast", **kwargs
    )
    difference = (fast.images - exact.images).abs().max()
    assert 0 < difference < exact.images.abs().max()


def test_masks_on_sdxl(noise_image):
    pipe = _ours("ddim")
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    mask[:, : WIDTH // 2] = 255
    kwargs = {"num_inference_steps": 4, "output_type": "np", "progress": False}
    kept = pipe(
        noise_image,
        "make it red",
        mask_image=Image.fromarray(mask),
        keep_unmasked_pixels=True,
        mask_feather=0.0,
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    )
    source = np.asarray(noise_image, dtype=np.float32) / 255
    assert np.abs(kept.images[0][:, WIDTH // 2 :] - source[:, WIDTH // 2 :]).max() < 1e-2
    found = pipe(
        noise_image,
        "make it red",
        mask_image="auto",
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    )
    assert found.masks is not None
    assert found.masks.shape == (1, 1, HEIGHT, WIDTH)


def test_sdxl_layout_errors(tmp_path):
    parts = tiny_sdxl_components()
    with pytest.raises(ValueError, match=r"text_encoder_2 .* and tokenizer_2 are required"):
        EditPipeline(**{**parts, "text_encoder_2": None})
    sd = tiny_components()
    with pytest.raises(ValueError, match="text_encoder_2 and tokenizer_2 are SDXL's"):
        EditPipeline(**sd, text_encoder_2=parts["text_encoder_2"], tokenizer_2=parts["tokenizer_2"])
    from diffusers import UNet2DConditionModel

    config = dict(parts["unet"].config)
    config["projection_class_embeddings_input_dim"] = 72
    wrong = UNet2DConditionModel.from_config(config)
    with pytest.raises(ValueError, match=r"takes 72 features .* gives 80"):
        EditPipeline(**{**parts, "unet": wrong})
    with pytest.raises(ValueError, match="SDXL's micro-conditioning"):
        EditPipeline(**sd)(np.zeros((8, 8, 3), np.uint8), "x", original_size=(8, 8))
    with pytest.raises(ValueError, match="original_size must be a pair"):
        EditPipeline(**parts)(np.zeros((8, 8, 3), np.uint8), "x", original_size=(8,))


def test_folder_layout_errors(tmp_path):
    xl = save_tiny_pipeline(tmp_path / "xl", kind="edit_xl")
    shutil.rmtree(xl / "tokenizer_2")
    with pytest.raises(FileNotFoundError, match=r"not a complete SDXL pipeline .*'tokenizer_2'"):
        EditPipeline.from_pretrained(xl)
    other = tmp_path / "other"
    (other / "transformer").mkdir(parents=True)
    (other / "vae").mkdir()
    with pytest.raises(FileNotFoundError, match=r"found \['transformer', 'vae'\]"):
        EditPipeline.from_pretrained(other)
    # An SD folder whose UNet is SDXL's.
    sd = save_tiny_pipeline(tmp_path / "sd", kind="edit")
    mixed = save_tiny_pipeline(tmp_path / "mixed", kind="edit_xl")
    shutil.rmtree(sd / "unet")
    shutil.copytree(mixed / "unet", sd / "unet")
    with pytest.raises(ValueError, match=r"Stable Diffusion 1\.x/2\.x layout but its UNet"):
        EditPipeline.from_pretrained(sd)


def test_to_edit_unet_widens_an_sdxl_unet():
    from instructedit.testing import tiny_sdxl_unet
    from instructedit.training import to_edit_unet

    text_to_image = tiny_sdxl_unet(in_channels=4)
    edit = to_edit_unet(text_to_image)
    assert edit.config.in_channels == 8
    assert edit.config.addition_embed_type == "text_time"
    generator = torch.Generator().manual_seed(0)
    noisy = torch.randn(1, 4, 8, 8, generator=generator)
    image = torch.randn(1, 4, 8, 8, generator=generator)
    hidden = torch.randn(1, 77, 64, generator=generator)
    added = {
        "text_embeds": torch.randn(1, 32, generator=generator),
        "time_ids": torch.tensor([[16.0, 16, 0, 0, 16, 16]]),
    }
    with torch.no_grad():
        before = text_to_image(noisy, 10, hidden, added_cond_kwargs=added).sample
        after = edit(torch.cat([noisy, image], 1), 10, hidden, added_cond_kwargs=added).sample
    assert torch.equal(before, after)  # zero-initialised image channels
    EditPipeline(**{**tiny_sdxl_components(), "unet": edit})  # an SDXL editor


@pytest.mark.parametrize("scheduler_class", ["EDMEulerScheduler", "EDMDPMSolverMultistepScheduler"])
def test_a_cosxl_style_editor_samples_its_edm_schedule(noise_image, tmp_path, scheduler_class):
    """A v-prediction editor on an EDM schedule with the scaled image condition (CosXL Edit's
    layout) equals diffusers' pipeline, also after a save and load."""
    import diffusers

    def parts():
        components = tiny_sdxl_components(seed=0)
        components["scheduler"] = getattr(diffusers, scheduler_class)(
            sigma_min=0.002, sigma_max=120.0, sigma_data=1.0, prediction_type="v_prediction"
        )
        return components

    theirs = StableDiffusionXLInstructPix2PixPipeline(
        **parts(), add_watermarker=False, is_cosxl_edit=True
    )
    theirs.set_progress_bar_config(disable=True)
    expected = _reference(
        theirs, noise_image, "make it red", 0, num_inference_steps=STEPS, output_type="np"
    )
    kwargs = {"num_inference_steps": STEPS, "output_type": "np", "progress": False}
    ours = EditPipeline(**parts(), is_cosxl_edit=True)
    got = ours(
        noise_image, "make it red", generator=torch.Generator().manual_seed(0), **kwargs
    ).images
    assert np.abs(got - expected).max() < 1e-4
    unscaled = EditPipeline(**parts())(
        noise_image, "make it red", generator=torch.Generator().manual_seed(0), **kwargs
    ).images
    assert np.abs(unscaled - expected).max() > 1e-3  # the image condition's scale matters
    loaded = EditPipeline.from_pretrained(ours.save_pretrained(tmp_path / "cosxl"))
    assert loaded.is_cosxl_edit
    assert not EditPipeline.from_pretrained(tmp_path / "cosxl", is_cosxl_edit=False).is_cosxl_edit
    assert type(loaded.scheduler).__name__ == scheduler_class
    again = loaded(noise_image, "make it red", generator=torch.Generator().manual_seed(0), **kwargs)
    assert np.abs(again.images - expected).max() < 1e-4
    masked = loaded(noise_image, "make it red", mask_image="auto", **kwargs)  # DiffEdit on σ
    assert masked.masks is not None
    assert 0.0 < float(masked.masks.mean()) < 1.0  # part of the image, found on σ
    assert np.isfinite(masked.images).all()


def test_the_edit_command_runs_an_sdxl_folder(tmp_path, noise_image):
    from instructedit.cli import main

    folder = save_tiny_pipeline(tmp_path / "xl", kind="edit_xl")
    image = tmp_path / "in.png"
    noise_image.save(image)
    out = tmp_path / "out"
    args = ["--instruction", "make it red", "--steps", "3", "--seed", "0", "--output", str(out)]
    assert main(["edit", str(image), "--model", str(folder), *args]) == 0
    written = np.asarray(Image.open(out / "in.png"), dtype=np.float32) / 255
    direct = EditPipeline.from_pretrained(folder)(
        noise_image,
        "make it red",
        num_inference_steps=3,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        progress=False,
    ).images[0]
    assert np.abs(written - direct).max() <= 1 / 255
