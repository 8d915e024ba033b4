import pytest
import torch

from instructedit.testing import SD_SCHEDULER_CONFIG, clip_tokenizer
from instructedit.worlds._models import (
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
