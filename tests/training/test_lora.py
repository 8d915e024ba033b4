"""LoRA fine-tuning: what trains, exact resume, the adapter in diffusers' format, loading and
unloading it, and the errors."""

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, StableDiffusionInstructPix2PixPipeline

from instructedit import EditPipeline
from instructedit.lora import CONV_IN_NAME, LORA_WEIGHTS_NAME
from instructedit.testing import (
    SD_SCHEDULER_CONFIG,
    tiny_components,
    tiny_sdxl_components,
)
from instructedit.training import TrainConfig, Trainer

pytest.importorskip("peft")


def _trainer(tmp_path, records, name="run", **overrides):
    parts = tiny_components(seed=0)  # an 8-channel editor: a LoRA fine-tune of it
    settings = {
        "output_dir": str(tmp_path / name),
        "resolution": 16,
        "batch_size": 4,
        "max_steps": 4,
        "learning_rate": 1e-2,
        "checkpoint_every": 2,
        "log_every": 1,
        "ema_decay": 0.9,
        "log_with": "none",
        "lora_rank": 4,
        "lora_alpha": 8.0,
    }
    settings.update(overrides)
    return Trainer(
        TrainConfig(**settings),
        unet=parts["unet"],
        vae=parts["vae"],
        text_encoder=parts["text_encoder"],
        tokenizer=parts["tokenizer"],
        noise_scheduler=DDPMScheduler(**SD_SCHEDULER_CONFIG, clip_sample=False),
        train_dataset=records[:8],
    )


def _edit(pipe, image, seed=0):
    return pipe(
        image,
        "make the square blue",
        num_inference_steps=3,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
        progress=False,
    ).images


def test_only_the_adapter_and_the_input_convolution_train(tmp_path, records):
    base = tiny_components(seed=0)["unet"].state_dict()
    trainer = _trainer(tmp_path, records)
    trainer.train(progress=False)
    trained = {
        name: parameter
        for name, parameter in trainer.unet.named_parameters()
        if parameter.requires_grad
    }
    assert trained, "nothing trains"
    assert all("lora_" in name or name.startswith("conv_in.") for name in trained)
    lora = sum(p.numel() for name, p in trained.items() if "lora_" in name)
    assert 0 < lora < 0.2 * sum(p.numel() for p in trainer.unet.parameters())
    # The frozen base weights are bit for bit the base model's.
    for name, value in trainer.unet.state_dict().items():
        plain = name.replace(".base_layer", "")
        if "lora_" in name or plain.startswith("conv_in."):
            continue
        assert torch.equal(value, base[plain]), name
    assert not torch.equal(trainer.unet.conv_in.weight, base["conv_in.weight"])


@pytest.mark.slow
def test_a_lora_run_resumes_to_the_uninterrupted_losses(tmp_path, records):
    whole = _trainer(tmp_path, records, "whole").train(progress=False)
    head = _trainer(tmp_path, records, "split").train(until=2, progress=False)
    tail = _trainer(tmp_path, records, "split").train(progress=False)
    assert len(whole) == 4
    np.testing.assert_allclose(head + tail, whole, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="trained with lora_rank=4, this run asks for None"):
        _trainer(tmp_path, records, "split", lora_rank=None, lora_alpha=None, max_steps=6).train(
            progress=False
        )


def test_the_adapter_loads_in_diffusers_and_in_editpipeline(tmp_path, records, noise_image):
    trainer = _trainer(tmp_path, records, lora_train_conv_in=False)
    trainer.train(progress=False)
    folder = trainer.export()
    adapter = folder / "lora"
    assert (adapter / LORA_WEIGHTS_NAME).is_file()
    assert not (adapter / CONV_IN_NAME).exists()
    merged = EditPipeline.from_pretrained(folder)
    expected = _edit(merged, noise_image)

    base = tiny_components(seed=0)
    theirs = StableDiffusionInstructPix2PixPipeline(
        **base, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    theirs.scheduler = merged.scheduler
    theirs.set_progress_bar_config(disable=True)
    theirs.load_lora_weights(adapter)
    got = theirs(
        "make the square blue",
        image=noise_image,
        num_inference_steps=3,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    assert np.abs(got - expected).max() < 1e-4

    ours = EditPipeline(**tiny_components(seed=0))
    ours.scheduler = merged.scheduler
    plain = _edit(ours, noise_image)
    assert np.abs(plain - expected).max() > 1e-3  # the adapter matters
    assert np.abs(_edit(ours.load_lora_weights(adapter), noise_image) - expected).max() < 1e-4
    # Saved with the adapter loaded: the merged weights, an ordinary folder.
    resaved = EditPipeline.from_pretrained(ours.save_pretrained(tmp_path / "resaved"))
    resaved.scheduler = merged.scheduler
    assert np.abs(_edit(resaved, noise_image) - expected).max() < 1e-4
    assert np.array_equal(_edit(ours.unload_lora_weights(), noise_image), plain)


def test_the_trained_input_convolution_ships_beside_the_adapter(tmp_path, records, noise_image):
    trainer = _trainer(tmp_path, records)
    trainer.train(progress=False)
    folder = trainer.export()
    assert (folder / "lora" / CONV_IN_NAME).is_file()
    merged = EditPipeline.from_pretrained(folder)
    ours = EditPipeline(**tiny_components(seed=0))
    ours.scheduler = merged.scheduler
    plain = _edit(ours, noise_image)
    loaded = _edit(ours.load_lora_weights(folder / "lora"), noise_image)
    assert np.abs(loaded - _edit(merged, noise_image)).max() < 1e-4
    # A failed second load under the same name changes nothing.
    with pytest.raises(ValueError, match=r"already in use|already exists"):
        ours.load_lora_weights(folder / "lora")
    assert np.array_equal(_edit(ours, noise_image), loaded)
    assert np.array_equal(_edit(ours.unload_lora_weights(), noise_image), plain)


def test_an_adapter_for_another_base_is_refused(tmp_path, records):
    trainer = _trainer(tmp_path, records, max_steps=1)
    trainer.train(progress=False)
    adapter = trainer.export() / "lora"
    other = EditPipeline(**tiny_sdxl_components(seed=0))
    with pytest.raises(ValueError, match="trained on another base"):
        other.load_lora_weights(adapter)
    with pytest.raises(FileNotFoundError, match="no LoRA weights at"):
        other.load_lora_weights(tmp_path / "missing")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"lora_rank": 0}, "lora_rank must be a positive int or None, got 0"),
        ({"lora_rank": 4, "lora_alpha": -1.0}, "lora_alpha must be a number > 0"),
        ({"lora_alpha": 4.0}, "lora_alpha needs lora_rank"),
        ({"lora_rank": 4, "lora_targets": ()}, "lora_targets must be a non-empty list"),
        ({"lora_rank": 4, "train_text_encoder": True}, "use one or the other"),
    ],
)
def test_bad_lora_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**settings)


def test_targets_that_match_nothing_are_refused(tmp_path, records):
    trainer = _trainer(tmp_path, records, lora_targets=("to_nowhere",))
    with pytest.raises(ValueError, match=r"lora_targets \['to_nowhere'\] match no module"):
        trainer.train(progress=False)
