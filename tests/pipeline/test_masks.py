import numpy as np
import pytest
import torch
from PIL import Image

from instructedit import EditPipeline
from instructedit.pipeline import diffedit_mask, load_mask
from instructedit.testing import tiny_components

STEPS = 4


def _pipe(scheduler="euler_ancestral"):
    return EditPipeline(**tiny_components(seed=0, scheduler=scheduler))


def _left_half(width=32, height=24):
    mask = np.zeros((height, width), np.uint8)
    mask[:, : width // 2] = 255
    return mask


@pytest.mark.parametrize("scheduler", ["ddim", "euler_ancestral"])
def test_a_masked_edit_is_the_hand_written_blend_of_each_step(noise_image, scheduler):
    """After each update, outside the mask: the input's latents noised to the next step by the
    scheduler's own formula (DDIM: √ᾱ·x₀ + √(1−ᾱ)·n; Euler: x₀ + σ·n), the clean ones at the end."""
    pipe = _pipe(scheduler)
    noise = torch.randn((1, 4, 12, 16), generator=torch.Generator().manual_seed(3))
    pixels = torch.from_numpy(np.asarray(noise_image, np.float32) / 127.5 - 1).permute(2, 0, 1)
    clean = pipe.encode_image(pixels[None]) * pipe.vae.config.scaling_factor
    keep = torch.zeros((1, 1, 12, 16))
    keep[..., 8:] = 1.0  # the right half of the latent grid is kept

    def blend(pipeline, index, timestep, tensors):
        scheduler_ = pipeline.scheduler
        if index + 1 == STEPS:
            source = clean
        elif scheduler == "ddim":
            alpha = scheduler_.alphas_cumprod[scheduler_.timesteps[index + 1]]
            source = alpha.sqrt() * clean + (1 - alpha).sqrt() * noise
        else:
            source = clean + scheduler_.sigmas[index + 1] * noise
        return {"latents": (1 - keep) * tensors["latents"] + keep * source}

    common = {
        "num_inference_steps": STEPS,
        "latents": noise,
        "output_type": "latent",
        "generator": torch.Generator().manual_seed(0),
        "progress": False,
    }
    masked = pipe(noise_image, "make it snowy", mask_image=_left_half(), **common)
    common["generator"] = torch.Generator().manual_seed(0)
    by_hand = pipe(noise_image, "make it snowy", callback_on_step_end=blend, **common)
    torch.testing.assert_close(masked.images, by_hand.images, rtol=0, atol=1e-4)
    torch.testing.assert_close(masked.images[..., 8:], clean[..., 8:], rtol=0, atol=1e-5)
    common["generator"] = torch.Generator().manual_seed(0)
    free = pipe(noise_image, "make it snowy", **common)
    assert (free.images[..., :8] - masked.images[..., :8]).abs().max() > 1e-3
    assert masked.masks.shape == (1, 1, 24, 32)
    assert free.masks is None


def test_the_input_is_pasted_back_outside_the_mask(noise_image):
    pipe = _pipe()
    out = pipe(
        [noise_image, noise_image],
        "make it snowy",
        mask_image=_left_half(),
        keep_unmasked_pixels=True,
        mask_feather=0,
        num_inference_steps=2,
        output_type="np",
        progress=False,
    )
    source = np.asarray(noise_image, np.float32) / 255
    assert out.images.shape == (2, 24, 32, 3)
    assert np.abs(out.images[:, :, 16:] - source[:, 16:]).max() < 1 / 255
    assert np.abs(out.images[:, :, :16] - source[:, :16]).mean() > 0.05
    # A feathered edge blends across the boundary instead of cutting.
    soft = pipe(
        noise_image,
        "make it snowy",
        mask_image=_left_half(),
        keep_unmasked_pixels=True,
        mask_feather=2.0,
        num_inference_steps=2,
        output_type="np",
        progress=False,
    )
    assert np.abs(soft.images[0, :, 24:] - source[:, 24:]).max() < 1 / 255
    assert np.abs(soft.images[0, :, 16:18] - source[:, 16:18]).max() > 1 / 255


def test_diffedit_finds_where_the_instruction_acts():
    """A stand-in UNet whose prediction changes with the instruction only in a known square."""
    region = torch.zeros((1, 1, 16, 16))
    region[..., 4:8, 9:13] = 1.0

    def unet(sample, timestep, encoder_hidden_states, return_dict=False):
        batch = sample.shape[0] // 2
        full = region.expand(batch, 4, 16, 16) * 2.0
        return (torch.cat([full, torch.zeros_like(full)]),)

    latents = torch.zeros((1, 4, 16, 16))
    scheduler = tiny_components()["scheduler"]
    mask = diffedit_mask(
        unet,
        scheduler,
        latents,
        latents,
        torch.zeros(1, 77, 32),
        torch.ones(1, 77, 32),
        threshold=0.5,
        generator=torch.Generator().manual_seed(0),
    )
    assert mask.shape == (1, 1, 16, 16)
    assert torch.all(mask[..., 4:8, 9:13] == 1.0)  # the region itself
    assert torch.all(mask[..., :2, :] == 0)
    assert torch.all(mask[..., :, :7] == 0)
    assert torch.all(mask[..., 3, 10] > 0)
    assert torch.all(mask[..., 3, 10] < 1)


def test_diffedit_on_an_edm_schedule_noises_at_its_sigmas():
    """EDM schedulers have no ᾱ: the copies are x + σ·ε at the σ a share of the (Karras, ρ = 7)
    training schedule from its clean end, fed as the scheduler preconditions them."""
    from diffusers import EDMEulerScheduler

    region = torch.zeros((1, 1, 16, 16))
    region[..., 4:8, 9:13] = 1.0
    seen = []

    def unet(sample, timestep, encoder_hidden_states, return_dict=False):
        seen.append((float(timestep), sample[:1, :4].clone()))
        batch = sample.shape[0] // 2
        full = region.expand(batch, 4, 16, 16) * 2.0
        return (torch.cat([full, torch.zeros_like(full)]),)

    scheduler = EDMEulerScheduler(sigma_min=0.002, sigma_max=120.0, sigma_data=1.0)
    scheduler.set_timesteps(3)  # the pipeline's: the mask does not depend on it
    latents = torch.full((1, 4, 16, 16), 0.5)
    arguments = (latents, latents, torch.zeros(1, 77, 32), torch.ones(1, 77, 32))
    mask = diffedit_mask(
        unet, scheduler, *arguments, threshold=0.5, generator=torch.Generator().manual_seed(0)
    )
    assert torch.all(mask[..., 4:8, 9:13] == 1.0)
    assert torch.all(mask[..., :2, :] == 0)
    ramp = np.arange(1001) / 1000  # EDMEulerScheduler's 1000 training steps: 1001 levels
    low, high = 0.002 ** (1 / 7), 120.0 ** (1 / 7)
    karras = (high + ramp * (low - high)) ** 7  # σ_max first
    generator = torch.Generator().manual_seed(0)
    for strength, (timestep, sample) in zip((0.3, 0.5, 0.7), seen, strict=True):
        sigma = karras[1000 - int(strength * 1001)]
        assert timestep == pytest.approx(0.25 * np.log(sigma), rel=1e-5)
        noise = torch.randn((1, 4, 16, 16), generator=generator)
        expected = (0.5 + sigma * noise) / np.sqrt(sigma**2 + 1.0)
        assert torch.allclose(sample, expected.float(), atol=1e-5)


def test_diffedit_names_a_scheduler_it_cannot_noise_with():
    from diffusers import FlowMatchEulerDiscreteScheduler

    latents = torch.zeros((1, 4, 8, 8))
    with pytest.raises(ValueError, match="or an EDM one, got FlowMatchEulerDiscreteScheduler"):
        diffedit_mask(
            None, FlowMatchEulerDiscreteScheduler(), latents, latents,
            torch.zeros(1, 77, 32), torch.ones(1, 77, 32), threshold=0.5,
        )  # fmt: skip


def test_auto_masks_come_back_with_the_result(noise_image):
    out = _pipe()(
        noise_image,
        "make it snowy",
        mask_image="auto",
        num_inference_steps=2,
        output_type="np",
        progress=False,
    )
    assert out.masks.shape == (1, 1, 24, 32)
    assert float(out.masks.min()) >= 0.0
    assert float(out.masks.max()) == pytest.approx(1.0)


def test_masks_of_any_size_and_kind_read_the_same():
    array = _left_half(8, 6)
    as_pil = load_mask(Image.fromarray(array))
    assert as_pil.mode == "L"
    for other in (array > 0, array.astype(np.float32) / 255, torch.from_numpy(array)[None] / 255.0):
        assert np.array_equal(np.asarray(load_mask(other)), np.asarray(as_pil))
    assert np.array_equal(np.asarray(load_mask(Image.fromarray(array).convert("RGB"))), array)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"mask_image": np.full((24, 24), 255, np.uint8)}, ValueError, "aspect ratio"),
        ({"mask_image": np.zeros((24, 32), np.uint8)}, ValueError, "all black: nothing may change"),
        ({"mask_image": np.full((24, 32, 3), 255, np.uint8)}, ValueError, "one channel"),
        ({"mask_image": np.full((24, 32), 2.0)}, ValueError, r"values in \[0, 1\]"),
        ({"mask_image": [_left_half()] * 2}, ValueError, "2 masks, expected 1 or 1"),
        ({"mask_image": "nowhere.png"}, FileNotFoundError, "mask_image: no such file"),
        ({"mask_image": 3}, TypeError, "mask_image must be a PIL image"),
        ({"mask_image": _left_half(), "mask_threshold": 1.5}, ValueError, "mask_threshold"),
        ({"mask_image": _left_half(), "mask_feather": -1.0}, ValueError, "mask_feather"),
        ({"mask_image": _left_half(), "keep_unmasked_pixels": "yes"}, TypeError, "keep_unmasked"),
    ],
)
def test_bad_masks_are_refused_before_any_model_runs(noise_image, kwargs, error, message):
    pipe = _pipe()

    def explode(*args, **kwargs):
        raise AssertionError("the model ran before the mask was checked")

    pipe._unet_forward = explode
    with pytest.raises(error, match=message):
        pipe(noise_image, "make it snowy", num_inference_steps=1, progress=False, **kwargs)


@pytest.mark.slow
def test_the_default_editor_changes_only_the_masked_half():
    from instructedit import load_default
    from instructedit.worlds.shapes import Scene, Shape, render

    pipe = load_default()
    scene = Scene(
        "white",
        (Shape("circle", "red", 0.25, 0.5, 0.15), Shape("square", "blue", 0.75, 0.5, 0.15)),
    )
    image = render(scene)
    source = np.asarray(image, np.float32) / 255
    mask = np.zeros((32, 32), np.uint8)
    mask[:, :16] = 255

    def edit(**kwargs):
        return pipe(
            image,
            "put it on a black background",
            num_inference_steps=20,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
            progress=False,
            **kwargs,
        ).images[0]

    masked = edit(mask_image=mask, keep_unmasked_pixels=True)
    assert np.abs(masked[:, 16:] - source[:, 16:]).mean() < 0.03
    assert np.abs(masked[:, :16] - source[:, :16]).mean() > 0.2  # the left half turned dark
    whole = edit(mask_image="none")  # the default stores "auto": "none" edits everywhere
    assert np.abs(whole[:, 16:] - source[:, 16:]).mean() > 0.2  # unmasked, the whole scene


def test_the_stored_editing_config_fills_the_masking_arguments(noise_image):
    from instructedit.pipeline import EditingConfig

    common = {
        "num_inference_steps": 3,
        "generator": torch.Generator().manual_seed(0),
        "output_type": "pt",
        "progress": False,
    }
    plain = _pipe()
    unmasked = plain(noise_image, "make it snowy", **common)
    stored = _pipe()
    stored.editing = EditingConfig(
        mask_image="auto", mask_threshold=0.3, keep_unmasked_pixels=True, mask_feather=0.0
    )
    common["generator"] = torch.Generator().manual_seed(0)
    by_default = stored(noise_image, "make it snowy", **common)
    common["generator"] = torch.Generator().manual_seed(0)
    spelled_out = plain(
        noise_image,
        "make it snowy",
        mask_image="auto",
        mask_threshold=0.3,
        keep_unmasked_pixels=True,
        mask_feather=0,
        **common,
    )
    torch.testing.assert_close(by_default.images, spelled_out.images, rtol=0, atol=0)
    torch.testing.assert_close(by_default.masks, spelled_out.masks, rtol=0, atol=0)
    # "none" turns the stored mask off: the output is the unmasked pipeline's, bit for bit.
    common["generator"] = torch.Generator().manual_seed(0)
    off = stored(noise_image, "make it snowy", mask_image="none", **common)
    assert off.masks is None
    assert torch.equal(off.images, unmasked.images)
    # A call's own value beats the stored one.
    common["generator"] = torch.Generator().manual_seed(0)
    own = stored(noise_image, "make it snowy", mask_threshold=0.9, **common)
    assert not torch.equal(own.masks, by_default.masks)
