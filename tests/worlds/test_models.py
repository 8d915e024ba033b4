import pytest
import torch

from instructedit.testing import SD_SCHEDULER_CONFIG, clip_tokenizer
from instructedit.worlds._models import (
    finetune_decoder,
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
