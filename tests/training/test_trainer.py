import json

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, StableDiffusionInstructPix2PixPipeline
from PIL import Image

from instructedit import EditPipeline
from instructedit.data import write_parquet
from instructedit.testing import SD_SCHEDULER_CONFIG, tiny_components
from instructedit.training import FolderSource, ParquetSource, TrainConfig, Trainer, to_edit_unet


def _trainer(tmp_path, records, noise_scheduler=None, **overrides):
    parts = tiny_components(in_channels=4, seed=0)
    settings = {
        "output_dir": str(tmp_path / "run"),
        "resolution": 16,
        "batch_size": 8,
        "max_steps": 60,
        "learning_rate": 1e-3,
        "checkpoint_every": 30,
        "log_every": 10,
        "ema_decay": 0.99,
        "log_with": "none",
    }
    settings.update(overrides)
    return Trainer(
        TrainConfig(**settings),
        unet=to_edit_unet(parts["unet"]),
        vae=parts["vae"],
        text_encoder=parts["text_encoder"],
        tokenizer=parts["tokenizer"],
        noise_scheduler=noise_scheduler or DDPMScheduler(**SD_SCHEDULER_CONFIG, clip_sample=False),
        train_dataset=records,
    )


def _edit(pipe, image, steps=2):
    return pipe(
        image,
        "make the square red",
        num_inference_steps=steps,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
        progress=False,
    ).images


@pytest.mark.slow
def test_training_lowers_the_loss_and_the_export_loads_everywhere(tmp_path, records):
    from PIL import Image

    validation = tmp_path / "val.png"
    records[0].input_image.save(validation)
    trainer = _trainer(
        tmp_path,
        records,
        validation_prompts=("make the square blue",),
        validation_image=str(validation),
        validation_every=60,
        validation_steps=2,
    )
    losses = trainer.train()
    assert len(losses) == 60
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    metrics = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [m["step"] for m in metrics] == [10, 20, 30, 40, 50, 60]
    assert all(m["images_per_s"] > 0 and m["lr"] == 1e-3 for m in metrics)
    assert Image.open(tmp_path / "run" / "validation" / "step-0000060" / "00.png").size == (16, 16)

    folder = trainer.export()
    ours = EditPipeline.from_pretrained(folder)
    theirs = StableDiffusionInstructPix2PixPipeline.from_pretrained(folder, safety_checker=None)
    theirs.set_progress_bar_config(disable=True)
    image = records[1].input_image
    kwargs = {"num_inference_steps": 4, "output_type": "np"}
    a = ours(
        image,
        "make the square red",
        generator=torch.Generator().manual_seed(0),
        progress=False,
        **kwargs,
    ).images
    b = theirs(
        "make the square red", image=image, generator=torch.Generator().manual_seed(0), **kwargs
    ).images
    assert np.abs(a - b).max() < 1e-4
    # The export holds the EMA weights, not the raw ones.
    raw = trainer.unet.state_dict()["conv_in.weight"]
    assert not torch.equal(ours.unet.state_dict()["conv_in.weight"], raw)


@pytest.mark.slow
def test_resume_reproduces_the_uninterrupted_run(tmp_path, records, capfd):
    settings = {
        "max_steps": 6,
        "checkpoint_every": 3,
        "gradient_accumulation_steps": 2,
        "batch_size": 4,
    }
    full = _trainer(tmp_path / "a", records, **settings).train()
    assert "training: 100%" in capfd.readouterr().err  # the progress bar
    first = _trainer(tmp_path / "b", records, **settings)
    head = first.train(until=3, progress=False)
    assert "training" not in capfd.readouterr().err
    assert (tmp_path / "b" / "run" / "checkpoints" / "step-0000003").is_dir()
    tail = _trainer(tmp_path / "b", records, **settings).train()  # a new process would do the same
    assert len(head) == 3
    assert len(tail) == 3
    np.testing.assert_allclose(head + tail, full, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_cached_latents_train_exactly_as_the_uncached_run(tmp_path, records):
    from dataclasses import replace

    from PIL import Image

    def marked(image):  # a stripe on the left: the flipped example differs from the other
        pixels = np.asarray(image).copy()
        pixels[:, :3] = (250, 250, 0)
        return Image.fromarray(pixels)

    records = [
        replace(r, input_image=marked(r.input_image), edited_image=marked(r.edited_image))
        for r in records
    ]
    settings = {"max_steps": 6, "checkpoint_every": 3, "batch_size": 4}  # random_flip is on
    plain = _trainer(tmp_path / "a", records, **settings)
    expected = plain.train()
    head = _trainer(tmp_path / "b", records, cache_latents=True, **settings).train(until=3)
    # A resumed run (a new process) builds the cache again and continues exactly.
    resumed = _trainer(tmp_path / "b", records, cache_latents=True, **settings)
    tail = resumed.train()
    np.testing.assert_allclose(head + tail, expected, rtol=0, atol=1e-5)
    # Adam magnifies float noise where its second moment is ~0, so a rare weight differs by up
    # to ~4e-4 (six steps at 1e-3 move weights by up to 6e-3); on average they agree to 1e-6.
    for name, weight in plain.unet.state_dict().items():
        difference = (resumed.unet.state_dict()[name] - weight).abs()
        assert difference.mean() < 1e-6, name
        assert difference.max() < 2e-3, name


@pytest.mark.parametrize("cache_latents", [False, True])
def test_corrupt_row_stops_training_with_its_name(
    tmp_path, records, make_folder_dataset, cache_latents
):
    make_folder_dataset(tmp_path / "data", records[:4])
    (tmp_path / "data" / "0000002" / "2_1.jpg").write_bytes(b"not a jpeg")
    trainer = _trainer(
        tmp_path,
        FolderSource(tmp_path / "data", "all"),
        max_steps=2,
        batch_size=4,
        cache_latents=cache_latents,
    )
    with pytest.raises(ValueError, match=r"0000002 seed 2: 2_1.jpg is not a readable image"):
        trainer.train()
    if cache_latents:  # found while caching, before the first step
        assert trainer.losses == []
        assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_parquet_source_feeds_training(tmp_path, records):
    path = write_parquet(records[:4], tmp_path / "d.parquet")
    source = ParquetSource(path)
    assert len(source) == 4
    assert source.record(2).edit_prompt == records[2].edit_prompt
    losses = _trainer(tmp_path, source, max_steps=2, batch_size=2, checkpoint_every=2).train()
    assert len(losses) == 2


def test_train_config_validation():
    with pytest.raises(ValueError, match="resolution must be a multiple of 8"):
        TrainConfig(resolution=30)
    with pytest.raises(ValueError, match="conditioning_dropout"):
        TrainConfig(conditioning_dropout=0.5)
    with pytest.raises(ValueError, match="validation_prompts need a validation_image"):
        TrainConfig(validation_prompts=("x",))
    with pytest.raises(ValueError, match=r"unknown training settings \['lr'\]"):
        TrainConfig.from_dict({"lr": 1e-4})
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainConfig(mixed_precision="fp8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cache_latents needs resize_resolution"):
        TrainConfig(resolution=16, resize_resolution=24, cache_latents=True)
    assert TrainConfig(resolution=16, resize_resolution=16, cache_latents=True).cache_latents
    with pytest.raises(
        ValueError, match=r"sampler must be one of \[.*'ddim'.*\] or None, got 'dpm'"
    ):
        TrainConfig(sampler="dpm")
    with pytest.raises(ValueError, match="sampler 'euler_ancestral' cannot sample a 'sample'"):
        TrainConfig(sampler="euler_ancestral", prediction_type="sample")


def test_the_export_samples_with_the_configured_sampler(tmp_path, records):
    from dataclasses import replace

    trainer = _trainer(tmp_path, records, max_steps=1, batch_size=4)
    trainer.train(progress=False)
    # A training schedule that clips (DDPMScheduler's default), which DDIM would inherit.
    trainer.noise_scheduler = DDPMScheduler(**SD_SCHEDULER_CONFIG)
    paper = trainer.export(tmp_path / "paper")
    trainer.config = replace(trainer.config, sampler="ddim")
    ddim = trainer.export(tmp_path / "ddim")
    index = json.loads((ddim / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", "DDIMScheduler"]
    saved = json.loads((ddim / "scheduler" / "scheduler_config.json").read_text())
    # The training noise schedule, without DDIM's default clipping (which ruins latents).
    assert saved["clip_sample"] is False
    for key in ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps"):
        assert saved[key] == SD_SCHEDULER_CONFIG[key]

    # The export samples as diffusers' DDIM built on the training noise schedule does, and not
    # as the default (Euler ancestral) export does.
    image = records[0].input_image
    shipped = _edit(EditPipeline.from_pretrained(ddim), image, steps=3)
    default = EditPipeline.from_pretrained(paper)
    assert type(default.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    assert np.abs(shipped - _edit(default, image, steps=3)).max() > 1e-3
    default.scheduler = DDIMScheduler.from_config(trainer.noise_scheduler.config, clip_sample=False)
    np.testing.assert_allclose(shipped, _edit(default, image, steps=3), atol=1e-6)


def test_text_to_image_unet_is_rejected(tmp_path, records):
    parts = tiny_components(in_channels=4, seed=0)
    with pytest.raises(ValueError, match="to_edit_unet"):
        Trainer(
            TrainConfig(output_dir=str(tmp_path)),
            unet=parts["unet"],
            vae=parts["vae"],
            text_encoder=parts["text_encoder"],
            tokenizer=parts["tokenizer"],
            noise_scheduler=DDPMScheduler(**SD_SCHEDULER_CONFIG),
            train_dataset=records,
        )


def test_hugging_face_datasets_source(tmp_path, records):
    import datasets

    from instructedit.training import DatasetsSource

    path = write_parquet(records[:3], tmp_path / "d.parquet")
    dataset = datasets.load_dataset("parquet", data_files=str(path), split="train")
    source = DatasetsSource(dataset)
    assert len(source) == 3
    np.testing.assert_array_equal(
        np.asarray(source.record(1).edited_image), np.asarray(records[1].edited_image)
    )
    broken = dataset.map(
        lambda row, i: {"edit_prompt": "" if i == 2 else row["edit_prompt"]}, with_indices=True
    )
    with pytest.raises(ValueError, match="dataset row 2: field 'edit_prompt' is missing or empty"):
        DatasetsSource(broken).record(2)
    with pytest.raises(ValueError, match="no column"):
        DatasetsSource(dataset.remove_columns("edited_image"))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_the_loss_targets_the_configured_prediction(tmp_path, records, prediction_type):
    trainer = _trainer(
        tmp_path, records, max_steps=1, batch_size=4, prediction_type=prediction_type
    )
    assert trainer.noise_scheduler.config.prediction_type == prediction_type
    seen = {}
    add_noise = trainer.noise_scheduler.add_noise

    def recording_add_noise(latents, noise, timesteps):
        seen.update(latents=latents, noise=noise, timesteps=timesteps)
        return add_noise(latents, noise, timesteps)

    trainer.noise_scheduler.add_noise = recording_add_noise
    # The UNet predicts zeros, so the loss is the mean square of the target.
    trainer.unet.register_forward_hook(
        lambda module, args, output: type(output)(sample=output.sample * 0.0)
    )
    (loss,) = trainer.train(progress=False)
    alpha_bar = trainer.noise_scheduler.alphas_cumprod[seen["timesteps"]].view(-1, 1, 1, 1)
    x0, noise = seen["latents"], seen["noise"]
    target = {  # Salimans & Ho's velocity: v = √ᾱ·ε − √(1 − ᾱ)·x₀
        "epsilon": noise,
        "v_prediction": alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0,
        "sample": x0,
    }[prediction_type]
    assert loss == pytest.approx(float(target.pow(2).mean()), rel=1e-5)
    # Sampling follows: the exported pipeline's scheduler predicts the same thing, and samples.
    folder = trainer.export(tmp_path / "export")
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert config["prediction_type"] == prediction_type
    pipe = EditPipeline.from_pretrained(folder)
    assert pipe.scheduler.config.prediction_type == prediction_type
    image = _edit(pipe, records[0].input_image)
    assert image.shape == (1, 16, 16, 3)
    assert np.isfinite(image).all()


def test_resuming_with_another_prediction_type_is_refused(tmp_path, records):
    settings = {"max_steps": 2, "checkpoint_every": 1, "batch_size": 2}
    _trainer(tmp_path, records, **settings).train(until=1, progress=False)
    other = _trainer(tmp_path, records, prediction_type="v_prediction", **settings)
    with pytest.raises(ValueError, match="trained the UNet to predict 'epsilon', this run asks"):
        other.train(progress=False)
    # The same target resumes.
    assert len(_trainer(tmp_path, records, **settings).train(progress=False)) == 1


def test_a_sampler_that_cannot_take_the_schedules_target_is_refused(tmp_path, records):
    # The target comes from the noise scheduler (prediction_type=None), so only the Trainer
    # knows it: it refuses before training, not at the export.
    schedule = DDPMScheduler(**{**SD_SCHEDULER_CONFIG, "prediction_type": "sample"})
    with pytest.raises(ValueError, match=r"config\.sampler 'pndm' cannot sample a 'sample'"):
        _trainer(tmp_path, records, noise_scheduler=schedule, sampler="pndm")


def test_prediction_type_is_checked(tmp_path, records):
    with pytest.raises(ValueError, match="prediction_type must be one of"):
        TrainConfig(prediction_type="flow")  # type: ignore[arg-type]
    schedule = DDPMScheduler(**{**SD_SCHEDULER_CONFIG, "prediction_type": "flow"})
    with pytest.raises(ValueError, match=r"noise_scheduler.config.prediction_type must be one of"):
        _trainer(tmp_path, records, noise_scheduler=schedule)


@pytest.mark.slow
def test_training_the_text_encoder(tmp_path, records):
    settings = {"max_steps": 6, "checkpoint_every": 3, "batch_size": 4}
    frozen = _trainer(tmp_path / "frozen", records, **settings)
    before = {k: v.clone() for k, v in frozen.text_encoder.state_dict().items()}
    frozen_losses = frozen.train(progress=False)
    assert all(torch.equal(v, frozen.text_encoder.state_dict()[k]) for k, v in before.items())

    trained = _trainer(tmp_path / "trained", records, train_text_encoder=True, **settings)
    losses = trained.train(progress=False)
    # The same weights and draws give the same first loss; the updates then differ.
    assert losses[0] == pytest.approx(frozen_losses[0], abs=1e-6)
    assert not np.allclose(losses[1:], frozen_losses[1:], atol=1e-6)
    # Every parameter of the text encoder moved.
    state = trained.text_encoder.state_dict()
    parameters = [name for name, _ in trained.text_encoder.named_parameters()]
    assert len(parameters) > 10
    assert all(not torch.equal(before[name], state[name]) for name in parameters)

    # The export holds the averaged text encoder, and ours and diffusers' pipelines agree on it.
    folder = trained.export()
    ours = EditPipeline.from_pretrained(folder)
    exported = ours.text_encoder.state_dict()
    name = next(k for k in exported if k.endswith("final_layer_norm.weight"))
    assert not torch.equal(exported[name], state[name])  # not the raw weights
    assert not torch.equal(exported[name], before[name])  # nor the starting ones
    averaged = trained._averaged(trained.text_encoder, trained.text_encoder_ema).state_dict()
    assert torch.equal(exported[name], averaged[name])
    theirs = StableDiffusionInstructPix2PixPipeline.from_pretrained(folder, safety_checker=None)
    theirs.set_progress_bar_config(disable=True)
    image = records[1].input_image
    kwargs = {"num_inference_steps": 2, "output_type": "np"}
    a = ours(
        image, "make it red", generator=torch.Generator().manual_seed(0), progress=False, **kwargs
    )
    b = theirs("make it red", image=image, generator=torch.Generator().manual_seed(0), **kwargs)
    assert np.abs(a.images - b.images).max() < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("cache_latents", [False, True])
def test_training_the_text_encoder_resumes_exactly(tmp_path, records, cache_latents):
    settings = {
        "max_steps": 4,
        "checkpoint_every": 2,
        "batch_size": 4,
        "train_text_encoder": True,
        "text_encoder_learning_rate": 5e-4,
        "cache_latents": cache_latents,
    }
    full = _trainer(tmp_path / "a", records, **settings)
    expected = full.train(progress=False)
    head = _trainer(tmp_path / "b", records, **settings).train(until=2, progress=False)
    checkpoint = tmp_path / "b" / "run" / "checkpoints" / "step-0000002"
    assert (checkpoint / "ema_text_encoder.pt").is_file()
    resumed = _trainer(tmp_path / "b", records, **settings)
    tail = resumed.train(progress=False)
    np.testing.assert_allclose(head + tail, expected, rtol=0, atol=1e-5)
    for model in ("text_encoder", "unet"):
        ours, reference = getattr(resumed, model).state_dict(), getattr(full, model).state_dict()
        for name, weight in reference.items():
            assert (ours[name] - weight).abs().mean() < 1e-6, (model, name)
    a = resumed._averaged(resumed.text_encoder, resumed.text_encoder_ema).state_dict()
    b = full._averaged(full.text_encoder, full.text_encoder_ema).state_dict()
    assert all((a[k] - b[k]).abs().mean() < 1e-6 for k in b)


def test_text_encoder_settings_are_checked(tmp_path, records):
    with pytest.raises(ValueError, match="text_encoder_learning_rate needs train_text_encoder"):
        TrainConfig(text_encoder_learning_rate=1e-4)
    with pytest.raises(ValueError, match="text_encoder_learning_rate must be > 0"):
        TrainConfig(train_text_encoder=True, text_encoder_learning_rate=-1.0)
    parts = tiny_components(in_channels=4, seed=0)
    with pytest.raises(ValueError, match="text_encoder's weights in float32"):
        Trainer(
            TrainConfig(output_dir=str(tmp_path / "half"), train_text_encoder=True),
            unet=to_edit_unet(parts["unet"]),
            vae=parts["vae"],
            text_encoder=parts["text_encoder"].half(),
            tokenizer=parts["tokenizer"],
            noise_scheduler=DDPMScheduler(**SD_SCHEDULER_CONFIG, clip_sample=False),
            train_dataset=records,
        )
    settings = {"max_steps": 1, "checkpoint_every": 1, "batch_size": 2}
    _trainer(tmp_path, records, **settings).train(progress=False)
    resumed = _trainer(tmp_path, records, train_text_encoder=True, **{**settings, "max_steps": 2})
    with pytest.raises(ValueError, match="train_text_encoder=False, this run asks for True"):
        resumed.train(progress=False)


@pytest.mark.slow
def test_training_the_text_encoder_with_checkpointing_and_validation(tmp_path, records):
    validation = tmp_path / "val.png"
    records[0].input_image.save(validation)
    settings = {
        "max_steps": 3,
        "checkpoint_every": 3,
        "batch_size": 4,
        "train_text_encoder": True,
        "validation_prompts": ("make the square blue",),
        "validation_image": str(validation),
        "validation_every": 3,
        "validation_steps": 2,
    }
    plain = _trainer(tmp_path / "plain", records, **settings)
    expected = plain.train(progress=False)
    checkpointed = _trainer(tmp_path / "ckpt", records, gradient_checkpointing=True, **settings)
    # Recomputing activations in the backward pass changes nothing but memory.
    np.testing.assert_allclose(checkpointed.train(progress=False), expected, rtol=0, atol=1e-5)
    # The validation edit used the averaged text encoder, as the export does.
    image = tmp_path / "ckpt" / "run" / "validation" / "step-0000003" / "00.png"
    exported = EditPipeline.from_pretrained(checkpointed.export())
    edit = exported(
        records[0].input_image,
        "make the square blue",
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    ).images[0]
    assert np.array_equal(np.asarray(edit), np.asarray(Image.open(image)))
