import pytest
import torch

from instructedit.guidance import DualGuidance, dual_guidance
from instructedit.sampling import (
    NO_SAMPLE_PREDICTION,
    SCHEDULERS,
    BranchConditioning,
    check_sampler,
    denoise,
    scheduler_from_name,
    scheduler_step_kwargs,
)
from instructedit.testing import tiny_scheduler, tiny_unet


class RecordingUNet:
    """Wraps a UNet and records the batch size of every call."""

    def __init__(self, unet):
        self.unet = unet
        self.batches: list[int] = []

    def __call__(self, sample, timestep, **kwargs):
        self.batches.append(sample.shape[0])
        return self.unet(sample, timestep, **kwargs)


class ThreeBranchReference:
    """Runs all three branches every step and combines them with the paper's formula.

    Its weights do not describe its combination, so it must run unfused (see _reference_run).
    """

    branch_names = ("full", "image", "uncond")
    guidance_rescale = 0.0
    backend = "torch"

    def __init__(self, text_scale, image_scale):
        self.text_scale, self.image_scale = text_scale, image_scale

    def weights(self, step, num_steps):
        return {"full": 1.0, "image": 1.0, "uncond": 1.0}

    def combine(self, predictions, step, num_steps):
        return dual_guidance(
            predictions["full"],
            predictions["image"],
            predictions["uncond"],
            text_scale=self.text_scale,
            image_scale=self.image_scale,
        )


def assert_close_scaled(actual, expected, tol=1e-5):
    """|actual − expected| ≤ tol · max|expected|: float32 rounding differs with the UNet batch
    size, and latents of a random UNet reach magnitudes of ~100, so an absolute 1e-5 would
    demand more than float32 precision."""
    error = (actual - expected).abs().max().item()
    scale = expected.abs().max().item()
    assert error <= tol * scale, f"max error {error:.3g} > {tol} × {scale:.3g}"


def _setup(scheduler_name="euler_ancestral", steps=8, batch=2):
    unet = tiny_unet(in_channels=8, seed=0)
    scheduler = tiny_scheduler(scheduler_name)
    scheduler.set_timesteps(steps)
    g = torch.Generator().manual_seed(0)
    text = torch.randn(batch, 77, 32, generator=g)
    empty = torch.randn(batch, 77, 32, generator=g)
    image = torch.randn(batch, 4, 8, 8, generator=g)
    conditioning = {
        "full": BranchConditioning(text, image),
        "image": BranchConditioning(empty, image),
        "uncond": BranchConditioning(empty, torch.zeros_like(image)),
    }
    latents = torch.randn(batch, 4, 8, 8, generator=g) * scheduler.init_noise_sigma
    return unet, scheduler, conditioning, latents


def _reference_run(text_scale, image_scale, scheduler_name="euler_ancestral"):
    # Asking the callback for noise_pred forces guidance.combine and scheduler.step.
    return _run(
        ThreeBranchReference(text_scale, image_scale),
        scheduler_name,
        callback=lambda i, t, x: None,
        tensor_inputs=("latents", "noise_pred"),
    )


def _run(guidance, scheduler_name="euler_ancestral", callback=None, tensor_inputs=("latents",)):
    unet, scheduler, conditioning, latents = _setup(scheduler_name)
    recorder = RecordingUNet(unet)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        out = denoise(
            recorder,
            scheduler,
            guidance,
            latents,
            conditioning,
            step_kwargs=scheduler_step_kwargs(scheduler, generator),
            callback_on_step_end=callback,
            callback_tensor_inputs=tensor_inputs,
            progress=False,
        )
    return out, recorder.batches


@pytest.mark.parametrize("scheduler_name", ["euler_ancestral", "ddim", "dpm_solver++"])
@pytest.mark.parametrize(("text_scale", "image_scale"), [(7.5, 1.0), (7.5, 7.5)])
def test_skipping_a_zero_weight_branch_equals_three_branches(
    scheduler_name, text_scale, image_scale
):
    reference, ref_batches = _reference_run(text_scale, image_scale, scheduler_name)
    skipped, batches = _run(
        DualGuidance(text_scale=text_scale, image_scale=image_scale), scheduler_name
    )
    assert ref_batches == [6] * 8
    assert batches == [4] * 8  # 2·B instead of 3·B
    assert_close_scaled(skipped, reference)


def test_three_branches_run_when_every_weight_is_nonzero():
    reference, _ = _reference_run(7.5, 1.5)
    out, batches = _run(DualGuidance(text_scale=7.5, image_scale=1.5))
    assert batches == [6] * 8
    assert_close_scaled(out, reference)


def test_guidance_interval_runs_one_branch_outside_it():
    _, batches = _run(DualGuidance(interval=(0.0, 0.5)))
    assert batches == [6] * 4 + [2] * 4


def test_fused_and_unfused_paths_agree():
    fused, _ = _run(DualGuidance())
    # Asking the callback for noise_pred turns fusion off.
    unfused, _ = _run(
        DualGuidance(), callback=lambda i, t, x: None, tensor_inputs=("latents", "noise_pred")
    )
    assert_close_scaled(fused, unfused)


def test_callback_can_replace_latents_and_stop():
    seen = []

    def callback(index, timestep, tensors):
        seen.append((index, sorted(tensors)))
        if index == 2:
            return {"latents": torch.zeros_like(tensors["latents"]), "stop": True}
        return None

    out, batches = _run(DualGuidance(), callback=callback)
    assert [s[0] for s in seen] == [0, 1, 2]
    assert seen[0][1] == ["latents"]
    assert len(batches) == 3
    assert torch.equal(out, torch.zeros_like(out))


def test_missing_branch_and_unknown_callback_tensor_are_errors():
    unet, scheduler, conditioning, latents = _setup()
    del conditioning["uncond"]
    with pytest.raises(ValueError, match="lacks branches"):
        denoise(unet, scheduler, DualGuidance(), latents, conditioning, progress=False)
    with pytest.raises(ValueError, match="callback_tensor_inputs"):
        denoise(
            unet,
            scheduler,
            DualGuidance(),
            latents,
            conditioning,
            callback_tensor_inputs=("x",),
            progress=False,
        )


def test_scheduler_from_name_turns_clipping_off_and_keeps_the_schedule():
    euler = tiny_scheduler("euler_ancestral")
    ddim = scheduler_from_name("ddim", euler.config)
    assert type(ddim).__name__ == "DDIMScheduler"
    assert ddim.config.clip_sample is False
    assert ddim.config.beta_schedule == euler.config.beta_schedule
    dpm = scheduler_from_name("dpm_solver++", euler.config)
    assert dpm.config.algorithm_type == "dpmsolver++"
    with pytest.raises(ValueError, match="scheduler must be one of"):
        scheduler_from_name("fast", euler.config)


_BACKENDS = {"lms": "scipy", "dpm_solver_sde": "torchsde"}


def _steps(name, prediction_type):
    """Five steps of the named scheduler on Stable Diffusion's schedule, with a constant model."""
    from diffusers import DDPMScheduler

    from instructedit.testing import SD_SCHEDULER_CONFIG

    if name in _BACKENDS:
        pytest.importorskip(_BACKENDS[name])
    base = DDPMScheduler(**{**SD_SCHEDULER_CONFIG, "prediction_type": prediction_type})
    scheduler = scheduler_from_name(name, base.config)
    scheduler.set_timesteps(5)
    sample = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    sample = sample * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(sample, t)
        output = torch.zeros_like(sample) if prediction_type != "sample" else 0.1 * model_input
        sample = scheduler.step(output, t, sample).prev_sample
    return sample


# Some diffusers schedulers hand torch tensors to numpy, which warns thousands of times.
_NUMPY_WRAP = pytest.mark.filterwarnings(
    "ignore:__array_wrap__ must accept context:DeprecationWarning"
)


@_NUMPY_WRAP
@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_named_scheduler_samples(name):
    assert torch.isfinite(_steps(name, "epsilon")).all()


@_NUMPY_WRAP
@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_the_schedulers_refused_for_clean_latent_models_are_those_diffusers_cannot_step(name):
    if name in NO_SAMPLE_PREDICTION:
        with pytest.raises((ValueError, NotImplementedError)):
            _steps(name, "sample")
        with pytest.raises(ValueError, match=f"sampler {name!r} cannot sample a 'sample'"):
            check_sampler(name, "sample", argument="sampler")
    else:
        assert torch.isfinite(_steps(name, "sample")).all()
        check_sampler(name, "sample", argument="sampler")
    check_sampler(name, "epsilon", argument="sampler")


def test_check_sampler_names_the_argument():
    check_sampler(None, "sample", argument="sampler")
    with pytest.raises(ValueError, match=r"config.sampler must be one of \[.*\] or None, got 'x'"):
        check_sampler("x", "epsilon", argument="config.sampler")
