"""A tiny causal language model with a byte-level BPE tokenizer trained on the fly."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from instructedit.seeding import seeded

if TYPE_CHECKING:
    from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

__all__ = ["CAPTION_EDIT_CORPUS", "save_tiny_captioner", "tiny_causal_lm", "tiny_lm_tokenizer"]

END_OF_TEXT = "<|endoftext|>"

CAPTION_EDIT_CORPUS: tuple[str, ...] = (
    "a photograph of a girl riding a horse\n##\nhave her ride a dragon\n%%\n"
    "a photograph of a girl riding a dragon\nEND",
    "a red car parked on a quiet street\n##\nmake it snowy\n%%\n"
    "a red car parked on a snowy street\nEND",
    "an oil painting of a lighthouse at dusk\n##\nturn it into a watercolor\n%%\n"
    "a watercolor of a lighthouse at dusk\nEND",
    "a cat sleeping on a wooden table\n##\nmake the cat a dog\n%%\n"
    "a dog sleeping on a wooden table\nEND",
    "a mountain lake under a clear blue sky\n##\nadd fireworks to the sky\n%%\n"
    "a mountain lake under a sky full of fireworks\nEND",
    "portrait of an old man with a beard, 35mm\n##\ngive him sunglasses\n%%\n"
    "portrait of an old man with a beard and sunglasses, 35mm\nEND",
    "a bowl of fruit on a kitchen counter\n##\nreplace the fruit with flowers\n%%\n"
    "a bowl of flowers on a kitchen counter\nEND",
    "a city skyline at night, neon lights\n##\nmake it daytime\n%%\n"
    "a city skyline at noon, bright sunlight\nEND",
    "a red circle on a white background\n##\nmake the circle blue\n%%\n"
    "a blue circle on a white background\nEND",
    "a green square and a yellow triangle on a black background\n##\nremove the square\n%%\n"
    "a yellow triangle on a black background\nEND",
    "café au lait on a marble table — Paris, 1920\n##\nmake it a cup of tea\n%%\n"
    "a cup of tea on a marble table — Paris, 1920\nEND",
)
"""Caption-edit examples in the official fine-tuning format (caption, ``##``, instruction,
``%%``, edited caption, ``END``): the default corpus of the tiny tokenizer."""


def tiny_lm_tokenizer(
    corpus: Iterable[str] = CAPTION_EDIT_CORPUS, *, vocab_size: int = 512
) -> PreTrainedTokenizerFast:
    """Trains a byte-level BPE tokenizer (GPT-2 style) on ``corpus`` and wraps it for transformers.

    Byte-level means every string, in any script, encodes and decodes losslessly. Training is
    deterministic for a given corpus and ``vocab_size``.

    Args:
        corpus: training texts.
        vocab_size: at least 257 (256 bytes and ``<|endoftext|>``).
    """
    if vocab_size < 257:
        raise ValueError(
            f"vocab_size must be at least 257 (256 bytes + 1 special), got {vocab_size}"
        )
    texts: Sequence[str] = list(corpus)
    if not texts:
        raise ValueError("corpus must hold at least one text")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        unk_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
        model_max_length=256,
    )


def tiny_causal_lm(
    *,
    seed: int = 0,
    corpus: Iterable[str] = CAPTION_EDIT_CORPUS,
    vocab_size: int = 512,
) -> tuple[GPT2LMHeadModel, PreTrainedTokenizerFast]:
    """Returns a 2-layer GPT-2 with seeded random weights and its byte-level BPE tokenizer.

    The pair stands in for GPT-3 in tests of caption editing: it fine-tunes, generates and
    round-trips through ``save_pretrained`` / ``from_pretrained`` like any transformers model.

    Args:
        seed: weights are a pure function of the seed.
        corpus: texts the tokenizer is trained on.
        vocab_size: size of the BPE vocabulary.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = tiny_lm_tokenizer(corpus, vocab_size=vocab_size)
    end = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=256,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=end,
        eos_token_id=end,
        pad_token_id=end,
    )
    with seeded(seed):
        model = GPT2LMHeadModel(config)
    return model.eval(), tokenizer


def save_tiny_captioner(
    directory: str | Path, *, caption: str = "a photo of shapes", steps: int = 60, seed: int = 0
) -> Path:
    """Writes a tiny image-to-text model (a 1-layer ViT encoder, a 1-layer GPT-2 decoder over
    the tiny tokenizer, its image processor) taught for ``steps`` steps to say ``caption`` of any
    32² image: a stand-in for BLIP in tests of captioning. Returns the folder."""
    import torch
    from transformers import (
        GPT2Config,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    tokenizer = tiny_lm_tokenizer()
    encoder = ViTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    decoder = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=1,
        n_head=2,
        n_positions=64,
        add_cross_attention=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = tokenizer.bos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    with seeded(seed):
        model = VisionEncoderDecoderModel(config=config)
        images = torch.rand(4, 3, 32, 32) * 2 - 1
    labels = tokenizer([caption + tokenizer.eos_token] * 4, return_tensors="pt").input_ids
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(pixel_values=images, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    path = Path(directory)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path
