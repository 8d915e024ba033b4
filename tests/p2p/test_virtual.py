"""Inversion-free editing (InfEdit's virtual inversion): exact reconstruction, equality with the
reference algorithm's steps on the same weights, and the other real-image methods."""

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, LCMScheduler
from PIL import Image

from instructedit.p2p import PromptToPrompt, SelfAttentionInjection
from instructedit.testing import SD_SCHEDULER_CONFIG, tiny_components

STEPS = 6


@pytest.fixture
def p2p():
    return PromptToPrompt(**tiny_components(in_channels=4, seed=0, scheduler="ddim"))


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))


def _lcm():
    return LCMScheduler(**SD_SCHEDULER_CONFIG)


@pytest.mark.parametrize("sampler", ["ddim", "lcm"])
@pytest.mark.parametrize("eta", [1.0, 0.3])
def test_the_source_prompt_gives_the_image_back_exactly(p2p, image, sampler, eta):
    """In float64, to float64 precision: identical rows of one batch may round differently in
    float32, which the early steps' 1/√ᾱ magnifies to ~1e-4."""
    p2p.to(dtype=torch.float64)
    scheduler = _lcm() if sampler == "lcm" else None
    out = p2p.edit_real(
        image,
        "a red ball",
        "a red ball",
        guidance_scale=7.5,
        source_guidance_scale=7.5,
        num_inference_steps=STEPS if sampler == "ddim" else 4,
        eta=eta,
        scheduler=scheduler,
        output_type="latent",
        progress=False,
    )
    assert out.source.dtype == torch.float64
    assert (out.target - out.source).abs().max() <= 1e-10 * out.source.abs().max()
    edited = p2p.edit_real(
        image,
        "a red ball",
        "a blue cube",
        output_type="latent",
        progress=False,
        num_inference_steps=STEPS,
        scheduler=scheduler,
        eta=eta,
    )
    assert (edited.target - edited.source).abs().max() > 1e-3 * edited.source.abs().max()


def _ddcm(scheduler, index, x_s, x_t, e_s, e_t, x_0, noise, eta):
    """InfEdit's DDCM update, written out from the paper's algorithm."""
    timesteps = scheduler.timesteps
    t = int(timesteps[index])
    prev = int(timesteps[index + 1]) if index + 1 < len(timesteps) else t
    a_t = scheduler.alphas_cumprod[t].double()
    a_prev = (
        scheduler.alphas_cumprod[prev] if prev >= 0 else scheduler.final_alpha_cumprod
    ).double()
    b_t, b_prev = 1 - a_t, 1 - a_prev
    std = eta * b_prev
    e_c = (x_s - a_t**0.5 * x_0) / b_t**0.5
    pred_x0 = x_0 + ((x_t - x_s) - b_t**0.5 * (e_t - e_s)) / a_t**0.5
    direction = (b_prev - std) ** 0.5 * ((e_t - e_s) + e_c)
    prev_xt = a_prev**0.5 * pred_x0 + direction + std**0.5 * noise
    prev_xs = a_prev**0.5 * x_0 + direction + std**0.5 * noise
    return prev_xs, prev_xt, pred_x0


@torch.no_grad()
def test_equals_the_reference_algorithm_step_by_step(p2p, image):
    p2p.to(dtype=torch.float64)  # the batch layouts differ: compare beyond float32 rounding
    source, target, scale, source_scale, eta, seed = "a red ball", "a blue cube", 7.5, 1.5, 0.7, 3
    ours = p2p.edit_real(
        image,
        source,
        target,
        guidance_scale=scale,
        source_guidance_scale=source_scale,
        eta=eta,
        seed=seed,
        num_inference_steps=STEPS,
        output_type="latent",
        progress=False,
    )
    # The reference: InfEdit's loop on the same UNet, six rows a call in its order.
    scheduler = DDIMScheduler.from_config(p2p.scheduler.config, clip_sample=False)
    scheduler.set_timesteps(STEPS)
    generator = torch.Generator().manual_seed(seed)
    x_0 = ours.source
    noise = torch.randn(x_0.shape, generator=generator).double()
    a_first = scheduler.alphas_cumprod[int(scheduler.timesteps[0])].double()
    start = a_first**0.5 * x_0 + (1 - a_first) ** 0.5 * noise
    x_src = x_tgt = x_mut = start
    empty, source_text, target_text = (p2p.encode_text([text]) for text in ("", source, target))
    for index, t in enumerate(scheduler.timesteps):
        rows = torch.cat([x_src, x_tgt, x_mut, x_src, x_tgt, x_mut])
        texts = torch.cat([empty, empty, empty, source_text, target_text, source_text])
        e = p2p.unet(rows, t, encoder_hidden_states=texts).sample
        (s_u, t_u, m_u, s_c, t_c, m_c) = e.chunk(6)
        e_t = t_u + scale * (t_c - t_u)
        e_s = s_u + source_scale * (s_c - s_u)
        e_m = m_u + source_scale * (m_c - m_u)
        noise = torch.randn(x_0.shape, generator=generator).double()
        _, new_tgt, pred = _ddcm(scheduler, index, x_src, x_tgt, e_s, e_t, x_0, noise, eta)
        x_src, x_mut, _ = _ddcm(scheduler, index, x_src, x_mut, e_s, e_m, x_0, noise, eta)
        x_tgt = new_tgt
    assert pred.dtype == torch.float64
    assert (ours.target - pred).abs().max() <= 1e-9 * pred.abs().max()


def test_unsupported_samplers_and_targets_are_refused(p2p, image):
    from diffusers import EulerDiscreteScheduler

    euler = EulerDiscreteScheduler(**SD_SCHEDULER_CONFIG)
    with pytest.raises(ValueError, match="virtual inversion takes the timesteps of"):
        p2p.edit_real(image, "a", "b", scheduler=euler, progress=False)
    v_model = DDIMScheduler(**{**SD_SCHEDULER_CONFIG, "prediction_type": "v_prediction"})
    with pytest.raises(ValueError, match="this model predicts 'v_prediction'"):
        p2p.edit_real(image, "a", "b", scheduler=v_model, progress=False)


def test_strength_runs_diffusers_share_of_the_steps(p2p, image):
    from instructedit.p2p import VirtualInversion

    sampler = VirtualInversion(DDIMScheduler(**SD_SCHEDULER_CONFIG), torch.zeros(1, 4, 4, 4))
    for strength, steps in ((1.0, 10), (0.55, 5), (0.5, 5), (0.05, 1)):
        sampler.strength = strength
        sampler.set_timesteps(10)
        assert len(sampler.timesteps) == steps


def test_strength_starts_partway(p2p, image):
    kwargs = {"num_inference_steps": STEPS, "output_type": "latent", "progress": False}
    full = p2p.edit_real(image, "a red ball", "a blue cube", **kwargs)
    half = p2p.edit_real(image, "a red ball", "a blue cube", strength=0.5, **kwargs)
    # Fewer steps from a less noisy start stay closer to the image.
    assert (half.target - half.source).abs().mean() < (full.target - full.source).abs().mean()


@pytest.mark.parametrize("method", ["ddim", "null_text"])
def test_inversion_methods_edit_through_the_same_call(p2p, image, method):
    out = p2p.edit_real(
        image,
        "a red ball",
        "a blue ball",
        method=method,
        controller=SelfAttentionInjection(0.5),
        num_inference_steps=3,
        output_type="np",
        progress=False,
    )
    assert out.source.shape == out.target.shape == (1, 32, 32, 3)
    assert np.abs(out.source - out.target).max() > 1e-3


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"method": "invert"}, ValueError, "method must be one of"),
        ({"controller": SelfAttentionInjection(0.5)}, ValueError, "controller applies with"),
        ({"eta": 1.5}, ValueError, r"eta must be in \[0, 1\], got 1.5"),
        ({"strength": 0.0}, ValueError, r"strength must be in \(0, 1\], got 0.0"),
        ({"guidance_scale": float("nan")}, ValueError, "guidance_scale must be a finite number"),
        ({"target_prompt": None}, TypeError, "target_prompt must be a str"),
    ],
)
def test_bad_real_edit_arguments_are_refused(p2p, image, kwargs, error, message):
    arguments = {"source_prompt": "a red ball", "target_prompt": "a blue ball", "progress": False}
    arguments.update(kwargs)
    with pytest.raises(error, match=message):
        p2p.edit_real(image, **arguments)


def test_the_edit_real_command_writes_the_edit_and_the_reconstruction(tmp_path, image):
    from instructedit.cli import main
    from instructedit.testing import save_tiny_pipeline

    model = save_tiny_pipeline(tmp_path / "t2i", kind="text_to_image", scheduler="ddim")
    photo = tmp_path / "photo.png"
    image.save(photo)
    out = tmp_path / "out" / "edited.png"
    arguments = ["--source", "a red ball", "--target", "a blue cube", "--model", str(model)]
    assert main(["edit-real", str(photo), str(out), *arguments, "--steps", "4", "--seed", "2"]) == 0
    direct = PromptToPrompt.from_pretrained(model).edit_real(
        image, "a red ball", "a blue cube", num_inference_steps=4, seed=2, output_type="np",
        progress=False,
    )  # fmt: skip
    written = np.asarray(Image.open(out), np.float32) / 255
    assert np.abs(written - direct.target[0]).max() <= 1 / 255
    source = np.asarray(Image.open(out.with_name("edited-source.png")), np.float32) / 255
    assert np.abs(source - direct.source[0]).max() <= 1 / 255
    with pytest.raises(SystemExit):
        main(["edit-real", str(photo), str(tmp_path / "x.gif"), *arguments])
