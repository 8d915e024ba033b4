import copy

import pytest
import torch

from instructedit.guidance import (
    dual_guidance,
    dual_guidance_weights,
    fused_guided_step,
    fused_guided_step_torch,
)
from instructedit.guidance._fused import (
    AffineUpdate,
    advance_scheduler,
    affine_update,
    draw_step_noise,
)
from instructedit.testing import tiny_scheduler

FUSABLE = [
    ("ddim", {}, {"eta": 0.0}),
    ("ddim", {}, {"eta": 0.7}),
    ("ddim", {"prediction_type": "v_prediction"}, {"eta": 0.0}),
    ("euler", {}, {}),
    ("euler", {"prediction_type": "v_prediction"}, {}),
    ("euler_ancestral", {}, {}),
    ("euler_ancestral", {"prediction_type": "v_prediction"}, {}),
]


def _scheduler(name, overrides, steps=12):
    base = tiny_scheduler(name)
    scheduler = type(base).from_config(base.config, **overrides)
    scheduler.set_timesteps(steps)
    return scheduler


@pytest.mark.parametrize(("name", "overrides", "step_kwargs"), FUSABLE)
def test_fused_step_equals_guidance_then_scheduler_step(name, overrides, step_kwargs):
    reference = _scheduler(name, overrides)
    fused = copy.deepcopy(reference)
    torch.manual_seed(0)
    x_ref = torch.randn(2, 4, 8, 8) * reference.init_noise_sigma
    x_fused = x_ref.clone()
    weights = dual_guidance_weights(text_scale=7.5, image_scale=1.5)
    gen_ref, gen_fused = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for t in reference.timesteps:
        branches = torch.randn(6, 4, 8, 8)
        full, image, uncond = branches.chunk(3)
        eps = dual_guidance(full, image, uncond, text_scale=7.5, image_scale=1.5)
        reference.scale_model_input(x_ref, t)
        x_ref = reference.step(eps, t, x_ref, generator=gen_ref, **step_kwargs).prev_sample

        fused.scale_model_input(x_fused, t)
        update = affine_update(fused, t, {**step_kwargs, "generator": gen_fused})
        assert update is not None
        noise = draw_step_noise(x_fused, gen_fused) if update.draws_noise else None
        x_fused = fused_guided_step_torch(
            branches, [weights["full"], weights["image"], weights["uncond"]], x_fused, update, noise
        )
        advance_scheduler(fused)
        torch.testing.assert_close(x_fused, x_ref, rtol=1e-5, atol=1e-4)
    # The scheduler state and the random stream end exactly where step() leaves them.
    assert getattr(fused, "step_index", None) == getattr(reference, "step_index", None)
    assert torch.equal(gen_fused.get_state(), gen_ref.get_state())


@pytest.mark.parametrize(
    ("name", "overrides", "step_kwargs"),
    [
        ("pndm", {}, {}),
        ("dpm_solver++", {}, {}),
        ("ddpm", {}, {}),
        ("ddim", {"clip_sample": True}, {}),
        ("ddim", {"thresholding": True}, {}),
        ("euler", {}, {"s_churn": 1.0}),
        ("ddim", {"prediction_type": "sample"}, {}),
    ],
)
def test_schedulers_without_an_exact_affine_form_are_not_fused(name, overrides, step_kwargs):
    scheduler = _scheduler(name, overrides)
    assert affine_update(scheduler, scheduler.timesteps[0], step_kwargs) is None


def test_subclasses_are_not_assumed_to_share_the_update():
    base = tiny_scheduler("euler")

    class Custom(type(base)):
        pass

    scheduler = Custom.from_config(base.config)
    scheduler.set_timesteps(4)
    assert affine_update(scheduler, scheduler.timesteps[0]) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_torch_fused_step_accumulates_in_float32(dtype):
    torch.manual_seed(1)
    branches = torch.randn(6, 4, 8, 8).to(dtype)
    sample = torch.randn(2, 4, 8, 8).to(dtype)
    noise = torch.randn(2, 4, 8, 8).to(dtype)
    update = AffineUpdate(a=0.9, b=-0.4, c=0.3, draws_noise=True)
    weights = [7.5, -6.0, -0.5]
    full, image, uncond = branches.double().chunk(3)
    exact = (
        0.9 * sample.double()
        - 0.4 * (7.5 * full - 6.0 * image - 0.5 * uncond)
        + 0.3 * noise.double()
    )
    got = fused_guided_step(branches, weights, sample, update, noise, backend="torch")
    assert got.dtype == dtype
    # At most half an ulp of the output dtype from the exact value: one rounding, at the end.
    ulp = {torch.float32: 2**-23, torch.float16: 2**-10, torch.bfloat16: 2**-7}[dtype]
    bound = exact.abs() * ulp + (1e-5 if dtype == torch.float32 else ulp * 1e-2)
    assert ((got.double() - exact).abs() <= bound).all()


def test_shape_mismatch_and_missing_noise_are_errors():
    update = AffineUpdate(a=1.0, b=0.5, c=0.2, draws_noise=True)
    with pytest.raises(ValueError, match="branches has batch"):
        fused_guided_step_torch(
            torch.zeros(5, 4, 2, 2), [1.0, 1.0], torch.zeros(2, 4, 2, 2), update
        )
    with pytest.raises(ValueError, match="noise is required"):
        fused_guided_step_torch(
            torch.zeros(4, 4, 2, 2), [1.0, 1.0], torch.zeros(2, 4, 2, 2), update
        )


def test_explicit_triton_on_cpu_fails_loudly(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    update = AffineUpdate(a=1.0, b=0.5, c=0.0, draws_noise=False)
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        fused_guided_step(
            torch.zeros(2, 4, 2, 2), [1.0, 1.0], torch.zeros(1, 4, 2, 2), update, backend="triton"
        )
