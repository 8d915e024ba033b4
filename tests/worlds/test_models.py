import pytest
import torch

from instructedit.testing import SD_SCHEDULER_CONFIG, clip_tokenizer
from instructedit.worlds._models import (
    _LoopState,
    finetune_decoder,
    shape_coverage,
    shapes_autoencoder,
    shapes_clip,
    shapes_text_encoder,
    shapes_unet,
    train_autoencoder,
    train_clip,
    train_text_to_image,
)


def _same_weights(a, b):
    return all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_autoencoder_training_resumes_exactly_after_a_kill(tmp_path):
    checkpoint = tmp_path / "ae.pt"
    whole = shapes_autoencoder(0)
    expected = train_autoencoder(whole, steps=4, batch_size=4, size=16, progress=False)
    # "Killed" after step 2: the checkpoint holds steps 1-2; a fresh process continues from it.
    first = shapes_autoencoder(0)
    train_autoencoder(
        first,
        steps=2,
        batch_size=4,
        size=16,
        progress=False,
        checkpoint=checkpoint,
        checkpoint_every=2,
    )
    resumed = shapes_autoencoder(0)
    losses = train_autoencoder(
        resumed,
        steps=4,
        batch_size=4,
        size=16,
        progress=False,
        checkpoint=checkpoint,
        checkpoint_every=2,
    )
    assert losses == expected
    assert _same_weights(resumed, whole)
    assert not checkpoint.with_name("ae.pt.tmp").exists()


def test_decoder_finetuning_keeps_the_latent_space_and_improves_reconstruction():
    import random

    from instructedit.worlds._models import _batch

    vae = shapes_autoencoder(0)
    train_autoencoder(vae, steps=20, batch_size=8, size=16, progress=False, learning_rate=1e-3)
    # A decoder that knows nothing of this encoder: fine-tuning alone must make it decode.
    fresh = shapes_autoencoder(1)
    vae.decoder.load_state_dict(fresh.decoder.state_dict())
    vae.post_quant_conv.load_state_dict(fresh.post_quant_conv.state_dict())
    pixels = _batch(random.Random("held-out"), 8, 16)[0]
    encoder_before = {
        k: v.clone()
        for k, v in vae.state_dict().items()
        if k.startswith(("encoder.", "quant_conv."))
    }
    assert encoder_before

    def round_trip():
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.mode()
            return latents, (vae.decode(latents).sample - pixels).abs().mean().item()

    latents_before, error_before = round_trip()
    vae.encoder.requires_grad_(False)  # frozen by the caller: stays frozen
    losses = finetune_decoder(
        vae, steps=20, batch_size=8, size=16, learning_rate=1e-3, progress=False
    )
    latents_after, error_after = round_trip()

    assert len(losses) == 20
    # The encoder, and so every model trained on its latents, is untouched ...
    assert all(torch.equal(vae.state_dict()[k], v) for k, v in encoder_before.items())
    assert torch.equal(latents_before, latents_after)
    # ... while the decoded scenes get closer to the rendered ones.
    assert error_after < 0.85 * error_before
    assert not any(p.requires_grad for p in vae.encoder.parameters())
    assert all(p.requires_grad for p in vae.decoder.parameters())


def test_shape_coverage_is_the_share_of_each_pixel_the_shapes_cover():
    import numpy as np

    from instructedit.worlds.shapes import COLOURS, Scene, Shape, render

    scene = Scene("black", (Shape("triangle", "white", 0.4, 0.5, 0.3),))
    coverage = shape_coverage([scene, Scene("red", ())], 32)
    assert coverage.shape == (2, 32, 32)
    # White on black, the rendered scene is its own coverage map (independent of region_masks).
    low, high = COLOURS["black"][0], COLOURS["white"][0]
    rendered = (np.asarray(render(scene), np.float32)[..., 0] - low) / (high - low)
    assert np.abs(coverage[0].numpy() - rendered).max() < 0.01
    assert 0.0 < coverage[0].mean() < 1.0
    assert coverage[1].abs().max() == 0.0


def test_shape_weight_weighs_each_pixel_by_the_shapes_coverage():
    import random

    from instructedit.testing import seeded
    from instructedit.worlds._models import _batch
    from instructedit.worlds.shapes import region_masks

    def first_loss(shape_weight):
        return finetune_decoder(
            shapes_autoencoder(0),
            steps=1,
            batch_size=4,
            size=16,
            seed=3,
            shape_weight=shape_weight,
            progress=False,
        )[0]

    # The first step's batch and posterior noise, drawn as the loop draws them, by hand.
    vae = shapes_autoencoder(0)
    pixels, _, scenes = _batch(random.Random("decoder:3"), 4, 16)
    with seeded(3), torch.no_grad():
        difference = vae.decode(vae.encode(pixels).latent_dist.sample()).sample - pixels
    per_pixel = difference.abs() + difference**2
    cover = torch.stack(
        [torch.from_numpy(region_masks(scene, 16)).sum(0).clamp(max=1.0) for scene in scenes]
    )[:, None]
    weight = 1.0 + 4.0 * cover
    assert first_loss(0.0) == pytest.approx(per_pixel.mean().item(), rel=1e-5)
    assert first_loss(4.0) == pytest.approx(
        (per_pixel * weight).sum().item() / weight.expand_as(per_pixel).sum().item(), rel=1e-5
    )
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="shape_weight must be a finite number >= 0"):
            finetune_decoder(shapes_autoencoder(0), steps=1, shape_weight=bad)


def test_shape_weight_spends_the_decoder_on_the_shapes():
    import copy
    import random

    from instructedit.worlds._models import _batch

    start = shapes_autoencoder(0)
    train_autoencoder(start, steps=40, batch_size=8, size=16, progress=False)
    pixels, _, scenes = _batch(random.Random("held-out"), 32, 16)
    inside = shape_coverage(scenes, 16)[:, None].expand_as(pixels) > 0.5

    def errors(shape_weight):
        vae = copy.deepcopy(start)
        finetune_decoder(
            vae,
            steps=60,
            batch_size=8,
            size=16,
            learning_rate=1e-3,
            shape_weight=shape_weight,
            progress=False,
        )
        with torch.no_grad():
            error = (vae.decode(vae.encode(pixels).latent_dist.mode()).sample - pixels).abs()
        return error[inside].mean().item(), error[~inside].mean().item()

    plain, weighted = errors(0.0), errors(4.0)
    # Weighted, the shapes' pixels are reconstructed better, the background's worse.
    assert weighted[0] < plain[0]
    assert weighted[1] > plain[1]


def test_decoder_finetuning_resumes_exactly_after_a_kill(tmp_path):
    checkpoint = tmp_path / "decoder.pt"
    whole = shapes_autoencoder(0)
    expected = finetune_decoder(whole, steps=4, batch_size=4, size=16, progress=False)
    options = {"batch_size": 4, "size": 16, "progress": False, "checkpoint": checkpoint}
    finetune_decoder(shapes_autoencoder(0), steps=2, checkpoint_every=2, **options)
    resumed = shapes_autoencoder(0)
    losses = finetune_decoder(resumed, steps=4, checkpoint_every=2, **options)
    assert losses == expected
    assert _same_weights(resumed, whole)
    # The run may go on further; another loss weight or learning rate is another run, refused
    # before a step is taken (the restored optimiser would bring its old rate back silently).
    other = shapes_autoencoder(0)
    for changed in ({"shape_weight": 4.0}, {"learning_rate": 1e-3}):
        with pytest.raises(ValueError, match=f"other settings \\({next(iter(changed))} "):
            finetune_decoder(other, steps=6, checkpoint_every=2, **options, **changed)
    assert _same_weights(other, shapes_autoencoder(0))
    assert len(finetune_decoder(other, steps=6, checkpoint_every=2, **options)) == 6
    # A checkpoint written before the settings were recorded resumes as it did.
    state = torch.load(checkpoint, weights_only=True)
    del state["options"]
    torch.save(state, checkpoint)
    old = shapes_autoencoder(0)
    kwargs = {**options, "shape_weight": 4.0}
    assert len(finetune_decoder(old, steps=8, checkpoint_every=2, **kwargs)) == 8
    with pytest.raises(ValueError, match="steps must be >= 0"):
        finetune_decoder(shapes_autoencoder(0), steps=-1)


@pytest.mark.slow
def test_text_to_image_and_clip_training_resume_exactly(tmp_path):
    from diffusers import DDPMScheduler

    def text_to_image(steps, checkpoint=None):
        unet, text_encoder = shapes_unet(0), shapes_text_encoder(0)
        vae = shapes_autoencoder(0)
        losses = train_text_to_image(
            unet,
            text_encoder,
            clip_tokenizer(),
            vae,
            DDPMScheduler(**SD_SCHEDULER_CONFIG, clip_sample=False),
            steps=steps,
            batch_size=2,
            progress=False,
            checkpoint=checkpoint,
            checkpoint_every=1,
        )
        return losses, unet

    expected, whole = text_to_image(2)
    text_to_image(1, tmp_path / "t2i.pt")
    losses, resumed = text_to_image(2, tmp_path / "t2i.pt")
    assert losses == expected
    assert _same_weights(resumed, whole)

    import open_clip

    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    whole_clip = shapes_clip(0)
    expected = train_clip(whole_clip, tokenizer, steps=2, batch_size=4, progress=False)
    train_clip(
        shapes_clip(0),
        tokenizer,
        steps=1,
        batch_size=4,
        progress=False,
        checkpoint=tmp_path / "clip.pt",
        checkpoint_every=1,
    )
    resumed_clip = shapes_clip(0)
    losses = train_clip(
        resumed_clip,
        tokenizer,
        steps=2,
        batch_size=4,
        progress=False,
        checkpoint=tmp_path / "clip.pt",
        checkpoint_every=1,
    )
    assert losses == expected
    assert _same_weights(resumed_clip, whole_clip)


def _text_to_image(steps, **options):
    from diffusers import DDPMScheduler

    unet, text_encoder = shapes_unet(0), shapes_text_encoder(0)
    losses = train_text_to_image(
        unet,
        text_encoder,
        clip_tokenizer(),
        shapes_autoencoder(0),
        DDPMScheduler(**SD_SCHEDULER_CONFIG, clip_sample=False),
        steps=steps,
        batch_size=2,
        size=16,
        progress=False,
        **options,
    )
    return losses, unet, text_encoder


@pytest.mark.slow
def test_text_to_image_ends_with_the_moving_average_of_its_weights(tmp_path):
    # The same run without the average passes through W1 and W2 (the average changes nothing
    # the training sees); by hand: ema1 = d1·W0 + (1 − d1)·W1, ema2 = d2·ema1 + (1 − d2)·W2 with
    # the decays of diffusers' EMAModel (the first update copies, the k-th uses k / (9 + k)), or
    # the constant decay without the warm-up.
    decay = 0.75
    initial = shapes_unet(0).state_dict()
    _, after_one, _ = _text_to_image(1)
    plain_losses, after_two, text_after_two = _text_to_image(2)
    one, two = after_one.state_dict(), after_two.state_dict()
    from diffusers.training_utils import EMAModel

    reference = EMAModel(torch.nn.Linear(1, 1).parameters(), decay=decay)
    assert [reference.get_decay(k) for k in (1, 2)] == pytest.approx([0.0, 2 / 11])
    for warmup, (d1, d2) in ((False, (decay, decay)), (True, (0.0, 2 / 11))):
        losses, averaged, averaged_text = _text_to_image(2, ema_decay=decay, ema_warmup=warmup)
        assert losses == plain_losses
        for name, weight in averaged.state_dict().items():
            ema1 = d1 * initial[name] + (1 - d1) * one[name]
            expected = d2 * ema1 + (1 - d2) * two[name]
            torch.testing.assert_close(weight, expected, rtol=1e-5, atol=1e-6)
    assert not _same_weights(averaged, after_two)
    assert not _same_weights(averaged_text, text_after_two)  # the text encoder is averaged too
    # Decay 0 keeps only the last weights: the plain run's.
    _, last, _ = _text_to_image(2, ema_decay=0.0)
    assert _same_weights(last, after_two)
    # The average is checkpointed: a run killed after step 1 resumes to the same average (and
    # the same warm-up step).
    _text_to_image(1, ema_decay=decay, checkpoint=tmp_path / "t.pt", checkpoint_every=1)
    resumed_losses, resumed, _ = _text_to_image(
        2, ema_decay=decay, checkpoint=tmp_path / "t.pt", checkpoint_every=1
    )
    assert resumed_losses == losses
    assert _same_weights(resumed, averaged)
    with pytest.raises(ValueError, match=r"ema_decay must be in \[0, 1\)"):
        _text_to_image(1, ema_decay=1.0)
    with pytest.raises(ValueError, match="schedule must be 'constant' or 'cosine'"):
        _text_to_image(1, schedule="linear")


def test_loop_learning_rate_follows_its_schedule_through_a_resume(tmp_path):
    import math
    import random

    def run(steps, path):
        torch.manual_seed(0)
        model = torch.nn.Linear(2, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        seen = []

        def loss_of_step(step):
            seen.append(optimizer.param_groups[0]["lr"])
            return model(torch.ones(1, 2)).pow(2).sum()

        state = _LoopState(path, 1, {"model": model}, optimizer, random.Random(0))
        cosine = lambda step: 0.5 * (1 + math.cos(math.pi * step / 4))  # noqa: E731
        state.run(steps, loss_of_step, desc="t", progress=False, lr_factor=cosine)
        return seen, model

    seen, whole = run(4, None)
    assert seen == pytest.approx(
        [0.1, 0.1 * (1 + math.sqrt(0.5)) / 2, 0.05, 0.1 * (1 - math.sqrt(0.5)) / 2]
    )
    first, _ = run(2, tmp_path / "loop.pt")
    rest, resumed = run(4, tmp_path / "loop.pt")
    assert first + rest == pytest.approx(seen)
    assert _same_weights(resumed, whole)


def test_checkpoint_every_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="checkpoint_every must be >= 1"):
        train_autoencoder(
            shapes_autoencoder(0),
            steps=1,
            batch_size=2,
            size=16,
            progress=False,
            checkpoint=tmp_path / "x.pt",
            checkpoint_every=0,
        )


def test_a_wider_unet_keeps_the_interface_and_refuses_odd_widths():
    narrow, wide = shapes_unet(0), shapes_unet(0, block_out_channels=(96, 192))
    assert tuple(wide.config.block_out_channels) == (96, 192)
    count = sum(p.numel() for p in wide.parameters())
    assert 2 * sum(p.numel() for p in narrow.parameters()) < count < 10_000_000
    latents, text = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 64)
    with torch.no_grad():
        out = wide(latents, torch.tensor([10, 500]), text).sample
    assert out.shape == latents.shape
    for bad in ((96,), (96, 100), (16, 32), (64, 128, 256)):
        with pytest.raises(ValueError, match="block_out_channels must be two multiples of 32"):
            shapes_unet(0, block_out_channels=bad)


def test_the_autoencoder_downsamples_as_asked_and_the_unet_takes_its_latents():
    scenes = torch.rand(2, 3, 32, 32) * 2 - 1
    for downsampling, side in ((4, 8), (2, 16)):
        vae = shapes_autoencoder(0, downsampling)
        with torch.no_grad():
            latents = vae.encode(scenes).latent_dist.mode()
            assert latents.shape == (2, 4, side, side)
            assert vae.decode(latents).sample.shape == scenes.shape
            out = shapes_unet(0, sample_size=side)(
                latents, torch.tensor([10, 500]), torch.randn(2, 77, 64)
            ).sample
        assert out.shape == latents.shape
    with pytest.raises(ValueError, match="downsampling must be 2 or 4, got 8"):
        shapes_autoencoder(0, 8)
    for bad in (0, 16.0, True):
        with pytest.raises(ValueError, match="sample_size must be an int >= 2"):
            shapes_unet(0, sample_size=bad)


@pytest.mark.slow
def test_text_to_image_trains_the_same_with_data_workers():
    # Each step's scenes come from the run seed and the step: processes rendering ahead of the
    # loop give the very batches, losses and weights of the loop rendering them itself.
    losses, unet, text_encoder = _text_to_image(3, ema_decay=0.5)
    parallel_losses, parallel_unet, parallel_text = _text_to_image(3, ema_decay=0.5, data_workers=2)
    assert parallel_losses == losses
    assert _same_weights(parallel_unet, unet)
    assert _same_weights(parallel_text, text_encoder)
    # The seed still matters: another draws other batches.
    assert _text_to_image(3, ema_decay=0.5, seed=1)[0] != losses
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="data_workers must be an int >= 0"):
            _text_to_image(1, data_workers=bad)


def test_prefetcher_starts_late_resumes_anywhere_and_ends_its_processes():
    import multiprocessing
    import os
    from concurrent.futures.process import BrokenProcessPool

    from instructedit.worlds._models import _Prefetcher

    before = set(multiprocessing.active_children())
    inline = _Prefetcher(str, 0, 6)
    assert [inline.get(step) for step in range(6)] == [str(s) for s in range(6)]
    assert inline.pool is None
    ahead = _Prefetcher(str, 2, 6)
    assert ahead.pool is None  # no process before the first request (a finished run asks none)
    try:
        # A resumed loop starts at its checkpoint's step.
        assert [ahead.get(step) for step in range(2, 6)] == ["2", "3", "4", "5"]
        assert ahead.pool is not None
    finally:
        ahead.close()
    assert set(multiprocessing.active_children()) <= before
    # A worker that dies raises instead of leaving the loop waiting for its batch.
    dying = _Prefetcher(os._exit, 1, 3)
    try:
        with pytest.raises(BrokenProcessPool):
            dying.get(0)
    finally:
        dying.close()
    assert set(multiprocessing.active_children()) <= before
