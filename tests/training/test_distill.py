"""Guidance distillation: the target, the student's start, training, and one pass a step."""

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, UNet2DConditionModel

from instructedit import DualGuidance, EditPipeline
from instructedit.guidance import is_distilled, scale_embedding
from instructedit.testing import SD_SCHEDULER_CONFIG, tiny_components, tiny_unet
from instructedit.training import (
    GuidanceDistiller,
    TrainConfig,
    guidance_target,
    to_distilled_unet,
)


def _inputs(unet, batch=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    channels = unet.config.in_channels // 2
    noisy = torch.randn(batch, channels, 8, 8, generator=generator)
    image = torch.randn(batch, channels, 8, 8, generator=generator)
    text = torch.randn(batch, 77, unet.config.cross_attention_dim, generator=generator)
    empty = torch.randn(1, 77, unet.config.cross_attention_dim, generator=generator)
    return noisy, image, text, empty


@torch.inference_mode()
def test_the_target_is_the_teachers_dual_guidance_row_by_row():
    teacher = tiny_unet(seed=0)
    noisy, image, text, empty = _inputs(teacher)
    timesteps = torch.tensor([10, 500, 990])
    text_scale = torch.tensor([7.5, 3.0, 1.0])
    image_scale = torch.tensor([1.5, 1.0, 2.5])
    target = guidance_target(teacher, noisy, image, text, empty, timesteps, text_scale, image_scale)
    for row in range(3):

        def branch(latents, hidden, row=row):
            x = torch.cat([noisy[row : row + 1], latents[row : row + 1]], dim=1)
            return teacher(x, timesteps[row : row + 1], hidden).sample

        predictions = {
            "full": branch(image, text[row : row + 1]),
            "image": branch(image, empty),
            "uncond": branch(torch.zeros_like(image), empty),
        }
        guidance = DualGuidance(
            text_scale=float(text_scale[row]), image_scale=float(image_scale[row])
        )
        expected = guidance.combine(predictions, 0, 1)
        torch.testing.assert_close(target[row : row + 1], expected, rtol=0, atol=1e-4)


@torch.inference_mode()
def test_the_student_starts_as_the_teachers_conditional_branch(tmp_path):
    teacher = tiny_unet(seed=0)
    student = to_distilled_unet(teacher)
    assert is_distilled(student)
    assert not is_distilled(teacher)
    assert student.config.time_cond_proj_dim == 256
    noisy, image, text, _ = _inputs(teacher)
    x = torch.cat([noisy, image], dim=1)
    condition = scale_embedding(torch.full((3,), 7.5), torch.full((3,), 1.5), 256)
    expected = teacher(x, 500, text).sample
    torch.testing.assert_close(student(x, 500, text, timestep_cond=condition).sample, expected)
    # The folder is a plain diffusers UNet.
    student.save_pretrained(tmp_path / "unet")
    loaded = UNet2DConditionModel.from_pretrained(tmp_path / "unet")
    assert loaded.config.time_cond_proj_dim == 256
    with pytest.raises(ValueError, match="already a guidance-distilled editor"):
        to_distilled_unet(student)


def _distiller(tmp_path, records, **overrides):
    parts = tiny_components(seed=0)
    settings = {
        "output_dir": str(tmp_path / "run"),
        "resolution": 16,
        "batch_size": 4,
        "max_steps": 4,
        "learning_rate": 1e-3,
        "checkpoint_every": 2,
        "log_every": 1,
        "log_with": "none",
    }
    settings.update(overrides)
    return GuidanceDistiller(
        TrainConfig(**settings),
        teacher=parts["unet"],
        vae=parts["vae"],
        text_encoder=parts["text_encoder"],
        tokenizer=parts["tokenizer"],
        noise_scheduler=DDPMScheduler(**SD_SCHEDULER_CONFIG, clip_sample=False),
        train_dataset=records,
    )


@pytest.mark.slow
def test_a_distilled_editor_trains_resumes_and_edits_in_one_pass_a_step(tmp_path, records):
    from PIL import Image

    noise_image = Image.fromarray(
        np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    )
    whole = _distiller(tmp_path / "whole", records[:8])
    losses = whole.train(progress=False)
    assert len(losses) == 4
    # Stopped after step 2 and run again: the same losses as the uninterrupted run.
    head = _distiller(tmp_path / "split", records[:8]).train(until=2, progress=False)
    tail = _distiller(tmp_path / "split", records[:8]).train(progress=False)
    np.testing.assert_allclose(head + tail, losses, rtol=0, atol=1e-6)

    pipe = EditPipeline.from_pretrained(whole.export())
    assert is_distilled(pipe.unet)
    seen = []

    def spy(module, args, kwargs):
        seen.append((args[0].shape[0], kwargs.get("timestep_cond")))

    pipe.unet.register_forward_pre_hook(spy, with_kwargs=True)

    def edit(**kwargs):
        return pipe(
            noise_image,
            "make it snowy",
            num_inference_steps=3,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
            progress=False,
            **kwargs,
        ).images

    default = edit(guidance_scale=7.5, image_guidance_scale=1.5)
    assert [batch for batch, _ in seen] == [1, 1, 1]  # one branch a step, not three
    expected = scale_embedding(torch.tensor([7.5]), torch.tensor([1.5]), 256)
    torch.testing.assert_close(seen[0][1], expected)
    other = edit(guidance_scale=3.0, image_guidance_scale=1.0)
    assert np.abs(other - default).max() > 1e-6  # the scales reach the student
    assert pipe.estimate((32, 24), steps=3).unet_evaluations == 3


def test_chosen_timesteps_are_the_only_ones_trained(tmp_path, records):
    parts = tiny_components(seed=0)
    teacher = parts["unet"]
    seen: list[torch.Tensor] = []
    distiller = GuidanceDistiller(
        TrainConfig(
            output_dir=str(tmp_path), resolution=16, batch_size=4, max_steps=2, log_with="none"
        ),
        teacher=teacher,
        timesteps=torch.tensor([980.4, 500.0, 19.6]),  # an Euler schedule's: rounded
        vae=parts["vae"],
        text_encoder=parts["text_encoder"],
        tokenizer=parts["tokenizer"],
        noise_scheduler=DDPMScheduler(**SD_SCHEDULER_CONFIG, clip_sample=False),
        train_dataset=records[:8],
    )
    distiller.unet.register_forward_pre_hook(lambda module, args: seen.append(args[1]))
    distiller.train(progress=False)
    drawn = torch.cat(seen)
    assert set(drawn.tolist()) <= {980, 500, 20}
    assert len(drawn) == 8


@pytest.mark.parametrize(
    ("overrides", "kwargs", "message"),
    [
        ({"train_text_encoder": True}, {}, "keeps the text encoder frozen"),
        ({"prediction_type": "v_prediction"}, {}, "distils an ε-predicting teacher"),
        ({"lora_rank": 4}, {}, "config.lora_rank would freeze it"),
        ({}, {"text_scales": (7.5, 3.0)}, r"text_scales must be a \(low, high\) pair"),
        ({}, {"image_scales": (-1.0, 2.0)}, r"image_scales must be a \(low, high\) pair"),
        (
            {},
            {"timesteps": [999, 1000]},
            r"timesteps must be a non-empty list of integers in \[0, 1000\)",
        ),
        ({}, {"timesteps": []}, "timesteps must be a non-empty list"),
    ],
)
def test_bad_distillation_settings_are_refused(tmp_path, records, overrides, kwargs, message):
    parts = tiny_components(seed=0)
    config = TrainConfig(output_dir=str(tmp_path), resolution=16, log_with="none", **overrides)
    with pytest.raises(ValueError, match=message):
        GuidanceDistiller(
            config,
            teacher=parts["unet"],
            vae=parts["vae"],
            text_encoder=parts["text_encoder"],
            tokenizer=parts["tokenizer"],
            noise_scheduler=DDPMScheduler(**SD_SCHEDULER_CONFIG, clip_sample=False),
            train_dataset=records[:2],
            **kwargs,
        )
