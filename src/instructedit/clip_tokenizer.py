"""The real CLIP tokenizer, derived offline from the BPE vocabulary that open_clip ships."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import TYPE_CHECKING

from instructedit._cache import cache_dir, materialize_dir

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

__all__ = ["CLIP_CONTEXT_LENGTH", "CLIP_VOCAB_SIZE", "clip_tokenizer", "clip_tokenizer_dir"]

CLIP_CONTEXT_LENGTH = 77
"""Tokens per prompt, start and end tokens included (CLIP and Stable Diffusion v1)."""

CLIP_VOCAB_SIZE = 49408
"""256 byte symbols, their 256 word-final forms, 48,894 merges and 2 special tokens."""

_NUM_MERGES = CLIP_VOCAB_SIZE - 2 * 256 - 2
_BOS = "<|startoftext|>"
_EOS = "<|endoftext|>"


def _bytes_to_unicode() -> dict[int, str]:
    """Returns GPT-2's reversible map from bytes to printable unicode characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {byte: chr(code) for byte, code in zip(printable, codes, strict=True)}


def _open_clip_bpe_path() -> Path:
    try:
        from open_clip.tokenizer import default_bpe
    except ImportError as error:  # pragma: no cover - open_clip is a core dependency
        raise ImportError(
            "the CLIP vocabulary comes from open_clip: pip install open_clip_torch"
        ) from error
    return Path(default_bpe())


def _write_vocabulary(directory: Path) -> None:
    """Writes ``vocab.json``, ``merges.txt`` and the tokenizer configs into ``directory``."""
    with gzip.open(_open_clip_bpe_path()) as file:
        lines = file.read().decode("utf-8").split("\n")
    merges = lines[1 : _NUM_MERGES + 1]  # line 0 is a version header
    if len(merges) != _NUM_MERGES:
        raise RuntimeError(f"open_clip's BPE file has {len(merges)} merges, expected {_NUM_MERGES}")
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [symbol + "</w>" for symbol in symbols]
    vocab += ["".join(merge.split()) for merge in merges]
    vocab += [_BOS, _EOS]
    (directory / "vocab.json").write_text(
        json.dumps({token: index for index, token in enumerate(vocab)}, ensure_ascii=False),
        encoding="utf-8",
    )
    (directory / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8"
    )
    # The special tokens of openai/clip-vit-large-patch14, the tokenizer of Stable Diffusion v1.
    (directory / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": _BOS, "eos_token": _EOS, "unk_token": _EOS, "pad_token": _EOS}),
        encoding="utf-8",
    )
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "CLIPTokenizer",
                "model_max_length": CLIP_CONTEXT_LENGTH,
                "bos_token": _BOS,
                "eos_token": _EOS,
                "unk_token": _EOS,
                "pad_token": _EOS,
                "do_lower_case": True,
            }
        ),
        encoding="utf-8",
    )


def clip_tokenizer_dir(directory: str | Path | None = None) -> Path:
    """Returns a folder holding the CLIP tokenizer files, writing them on first use.

    The files are derived from open_clip's ``bpe_simple_vocab_16e6.txt.gz`` exactly as OpenAI's
    CLIP builds its vocabulary, so no download is involved. The folder is written atomically.

    Args:
        directory: where to write; defaults to ``<cache>/clip-tokenizer`` (see
            ``INSTRUCTEDIT_CACHE``).
    """
    target = Path(directory) if directory is not None else cache_dir() / "clip-tokenizer"
    return materialize_dir(target, _write_vocabulary, marker="tokenizer_config.json")


def clip_tokenizer(directory: str | Path | None = None) -> CLIPTokenizer:
    """Returns the real CLIP tokenizer (the one Stable Diffusion v1 uses), built offline.

    Token ids equal open_clip's ``SimpleTokenizer`` for text that needs no cleaning. open_clip
    additionally runs ``ftfy.fix_text`` and ``html.unescape`` before tokenizing (so ``&amp;`` or
    the ligature ``ﬁ`` differ), as does OpenAI's original tokenizer; transformers' tokenizer, and so
    every diffusers pipeline, does not.

    Args:
        directory: where the vocabulary files live or are written; see :func:`clip_tokenizer_dir`.

    Example:
        >>> tokenizer = clip_tokenizer()
        >>> tokenizer("a photo of a cat").input_ids
        [49406, 320, 1125, 539, 320, 2368, 49407]
    """
    from transformers import CLIPTokenizer

    # Loading from a folder, not CLIPTokenizer(vocab_file=...): transformers 5 silently builds a
    # two-token vocabulary from the latter.
    path = clip_tokenizer_dir(directory)
    tokenizer = CLIPTokenizer.from_pretrained(str(path), model_max_length=CLIP_CONTEXT_LENGTH)
    if len(tokenizer) != CLIP_VOCAB_SIZE:
        raise RuntimeError(
            f"CLIP tokenizer in {path} has {len(tokenizer)} tokens, expected {CLIP_VOCAB_SIZE}"
        )
    return tokenizer
