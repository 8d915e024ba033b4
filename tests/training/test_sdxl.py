"""Training SDXL editors: the first step against a hand-written reference step, the latent
cache, export (diffusers loads it), LoRA on SDXL, and the config-file run on an SDXL folder."""

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, StableDiffusionXLInstructPix2PixPipeline
from PIL import Image

from instructedit import EditPipeline
from instructedit.data import EditRecord, write_parquet
from instructedit.testing import (
    SD_SCHEDULER_CONFIG,
    save_tiny_pipeline,
    tiny_sdxl_components,
)
from instructedit.training import (
    GuidanceDistiller,
    StepBatches,
    TrainConfig,
    Trainer,
    TrainingExamples,
    train_from_config,
)
from instructedit.training._data import _mix

PROBABILITY = 0.3  # conditioning dropout high enough that a batch of 8 drops rows


def _records(count=8):
    """Edits whose inputs are 20 wide and 24 high, so the size ids are not the trained size."""
    rng = np.random.default_rng(0)
    records = []
    for index in range(count):
        before = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
        after = before.copy()
        after[4:12, 4:12] = (220, 30, 30) if index % 2 else (30, 30, 220)
        records.append(
            EditRecord(
                Image.fromarray(before),
                "make the square red" if index % 2 else "make the square blue",
                Image.fromarray(after),
                "a square",
                "a coloured square",
            )
        )
    return records


def _trainer(tmp_path, name="run", records=None, **overrides):
    parts = tiny_sdxl_components(seed=0)
    settings = {
        "output_dir": str(tmp_path / name),
        "resolution": 16,
        "resize_resolution": 20,
        "batch_size": 8,
        "max_steps": 2,
        "learning_rate": 1e-3,
        "checkpoint_every": 1,
        "log_every": 1,
        "ema_decay": None,
        "conditioning_dropout": PROBABILITY,
        "log_with": "none",
    }
    settings.update(overrides)
    return Trainer(
        TrainConfig(**settings),
        unet=parts["unet"],
        vae=parts["vae"],
        text_encoder=parts["text_encoder"],
        tokenizer=parts["tokenizer"],
        text_encoder_2=parts["text_encoder_2"],
        tokenizer_2=parts["tokenizer_2"],
        noise_scheduler=DDPMScheduler(**SD_SCHEDULER_CONFIG, clip_sample=False),
        train_dataset=records if records is not None else _records(),
    )


def _encode(parts, prompts):
    """diffusers' SDXL script's prompt encoding, written out: each encoder's penultimate
    hidden states side by side, and the second encoder's pooled output."""
    hidden = []
    for tokenizer, encoder in (
        (parts["tokenizer"], parts["text_encoder"]),
        (parts["tokenizer_2"], parts["text_encoder_2"]),
    ):
        ids = tokenizer(
            prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        ).input_ids
        output = encoder(ids, output_hidden_states=True)
        hidden.append(output.hidden_states[-2])
    return torch.cat(hidden, dim=-1), output[0]


@torch.no_grad()
def test_the_first_step_equals_a_reference_step(tmp_path):
    trainer = _trainer(tmp_path)
    parts = tiny_sdxl_components(seed=0)
    unet, vae = copy.deepcopy(parts["unet"]), parts["vae"]
    config = trainer.config
    # The first micro-batch, as the run draws it.
    keys = next(iter(StepBatches(8, 8, seed=config.seed, start=0, stop=1, rank=0, ranks=1)))
    examples = TrainingExamples(trainer.source, resolution=16, resize=20, flip=True)
    items = [examples[key] for key in keys]
    edited = torch.stack([item["edited_pixels"] for item in items])
    original = torch.stack([item["input_pixels"] for item in items])
    # Reference: diffusers' SDXL script's step, with the draws in the Trainer's order.
    generator = torch.Generator().manual_seed(_mix(config.seed, 0, 0, 3))
    posterior = vae.encode(edited).latent_dist
    latents = (
        posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
    ) * vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=generator)
    timesteps = torch.randint(0, 1000, (8,), generator=generator)
    noisy = trainer.noise_scheduler.add_noise(latents, noise, timesteps)
    hidden, pooled = _encode(parts, [item["edit_prompt"] for item in items])
    null_hidden, null_pooled = _encode(parts, [""])
    image_embeds = vae.encode(original).latent_dist.mode()  # the pipeline's argmax
    r = torch.rand(8, generator=generator)
    prompt_mask = r < 2 * PROBABILITY
    hidden = torch.where(prompt_mask.view(-1, 1, 1), null_hidden, hidden)
    pooled = torch.where(prompt_mask.view(-1, 1), null_pooled, pooled)  # dropped with the text
    image_mask = 1 - ((r >= PROBABILITY).float() * (r < 3 * PROBABILITY).float())
    image_embeds = image_mask.view(-1, 1, 1, 1) * image_embeds
    assert prompt_mask.any()
    assert (~prompt_mask).any()
    assert (image_mask == 0).any()
    # Each example's own size ids: 24 high, 20 wide, its crop's corner, then the trained size.
    time_ids = torch.tensor(
        [[24, 20, int(item["crop"][0]), int(item["crop"][1]), 16, 16] for item in items],
        dtype=torch.float32,
    )
    assert len({tuple(row.tolist()) for row in time_ids}) > 1  # the crops differ
    prediction = unet(
        torch.cat([noisy, image_embeds], dim=1),
        timesteps,
        hidden,
        added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids},
    ).sample
    expected = F.mse_loss(prediction.float(), noise.float()).item()
    with torch.enable_grad():
        (loss,) = trainer.train(until=1, progress=False)
    assert loss == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_cached_sdxl_latents_give_the_same_losses(tmp_path):
    settings = {"resize_resolution": None, "random_flip": False, "max_steps": 3}
    plain = _trainer(tmp_path, "plain", **settings).train(progress=False)
    cached = _trainer(tmp_path, "cached", cache_latents=True, **settings).train(progress=False)
    np.testing.assert_allclose(cached, plain, rtol=1e-5, atol=1e-6)


def test_an_sdxl_editor_exports_for_diffusers(tmp_path, noise_image):
    trainer = _trainer(tmp_path)
    trainer.train(progress=False)
    folder = trainer.export()
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLInstructPix2PixPipeline"
    assert index["force_zeros_for_empty_prompt"] is False  # trained with the empty instruction
    ours = EditPipeline.from_pretrained(folder)
    assert ours.is_xl
    assert not ours.force_zeros_for_empty_prompt
    kwargs = {"num_inference_steps": 3, "output_type": "np"}
    got = ours(
        noise_image,
        "make it red",
        generator=torch.Generator().manual_seed(0),
        progress=False,
        **kwargs,
    ).images
    theirs = StableDiffusionXLInstructPix2PixPipeline.from_pretrained(folder)
    theirs.set_progress_bar_config(disable=True)
    expected = theirs(
        "make it red",
        image=noise_image,
        height=24,
        width=32,
        guidance_scale=ours.guidance.text_scale,
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    ).images
    assert np.abs(got - expected).max() < 1e-4


def test_lora_on_sdxl_loads_in_diffusers(tmp_path, noise_image):
    pytest.importorskip("peft")
    trainer = _trainer(tmp_path, lora_rank=2, lora_train_conv_in=False, learning_rate=1e-2)
    trainer.train(progress=False)
    folder = trainer.export()
    merged = EditPipeline.from_pretrained(folder)
    kwargs = {"num_inference_steps": 3, "output_type": "np"}
    expected = merged(
        noise_image,
        "make it red",
        generator=torch.Generator().manual_seed(0),
        progress=False,
        **kwargs,
    ).images
    theirs = StableDiffusionXLInstructPix2PixPipeline(
        **tiny_sdxl_components(seed=0), add_watermarker=False, force_zeros_for_empty_prompt=False
    )
    theirs.scheduler = merged.scheduler
    theirs.set_progress_bar_config(disable=True)
    theirs.load_lora_weights(folder / "lora")
    got = theirs(
        "make it red",
        image=noise_image,
        height=24,
        width=32,
        guidance_scale=merged.guidance.text_scale,
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    ).images
    assert np.abs(got - expected).max() < 1e-4
    base = EditPipeline(**tiny_sdxl_components(seed=0), force_zeros_for_empty_prompt=False)
    base.scheduler = merged.scheduler
    base_output = base(
        noise_image,
        "make it red",
        generator=torch.Generator().manual_seed(0),
        progress=False,
        **kwargs,
    ).images
    assert np.abs(base_output - expected).max() > 1e-3


def test_a_config_file_trains_an_sdxl_editor_from_a_text_to_image_folder(tmp_path, records):
    base = save_tiny_pipeline(tmp_path / "sdxl", kind="text_to_image_xl")
    data = write_parquet(records[:4], tmp_path / "data.parquet")
    config = tmp_path / "run.json"
    config.write_text(
        json.dumps(
            {
                "model": str(base),
                "data": {"parquet": str(data)},
                "train": {
                    "output_dir": str(tmp_path / "out"),
                    "resolution": 16,
                    "batch_size": 2,
                    "max_steps": 1,
                    "log_with": "none",
                    "ema_decay": None,
                },
            }
        )
    )
    exported = EditPipeline.from_pretrained(train_from_config(config=config))
    assert exported.is_xl
    assert exported.unet.config.in_channels == 8


def test_sdxl_refusals(tmp_path):
    parts = tiny_sdxl_components(seed=0)
    with pytest.raises(ValueError, match=r"train_text_encoder trains SD 1\.x/2\.x text encoders"):
        _trainer(tmp_path, train_text_encoder=True)
    with pytest.raises(ValueError, match=r"text_encoder_2 .* are required"):
        Trainer(
            TrainConfig(output_dir=str(tmp_path), resolution=16, log_with="none"),
            unet=parts["unet"],
            vae=parts["vae"],
            text_encoder=parts["text_encoder"],
            tokenizer=parts["tokenizer"],
            noise_scheduler=DDPMScheduler(**SD_SCHEDULER_CONFIG),
            train_dataset=_records(2),
        )
    with pytest.raises(ValueError, match="the teacher is SDXL's"):
        GuidanceDistiller(
            TrainConfig(output_dir=str(tmp_path), resolution=16, log_with="none"),
            teacher=parts["unet"],
            vae=parts["vae"],
            text_encoder=parts["text_encoder"],
            tokenizer=parts["tokenizer"],
            noise_scheduler=DDPMScheduler(**SD_SCHEDULER_CONFIG),
            train_dataset=_records(2),
        )
