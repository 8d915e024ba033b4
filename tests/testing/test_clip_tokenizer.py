import html
import json

import ftfy
import pytest
from open_clip.tokenizer import SimpleTokenizer

from instructedit.testing import (
    CLIP_CONTEXT_LENGTH,
    CLIP_VOCAB_SIZE,
    clip_tokenizer,
    clip_tokenizer_dir,
)

TRICKY = [
    "a photo of a cat",
    "Hello, World!!! ... (really?) -- yes; #1 @home",
    "café naïve résumé Ünïcödé Ångström",
    "make it 🐱 snowy 🎄❄️ 👩‍👩‍👧",
    "东京的夜景 和 さくら 한국어",
    "",
    "  multiple   spaces\tand\nnewlines ",
    "don't it's we're I'll they've",
    "A1B2 3.14159 $100 50% x^2",
    "ALL CAPS Mixed Case",
]


@pytest.fixture(scope="module")
def tokenizer():
    return clip_tokenizer()


@pytest.fixture(scope="module")
def reference():
    return SimpleTokenizer(context_length=CLIP_CONTEXT_LENGTH)


def _open_clip_ids(reference, text):
    ids = reference([text])[0].tolist()
    return ids[: ids.index(reference.eot_token_id) + 1]


@pytest.mark.parametrize("text", TRICKY)
def test_ids_equal_open_clip(tokenizer, reference, text):
    ours = tokenizer(text, truncation=True, max_length=CLIP_CONTEXT_LENGTH).input_ids
    assert ours == _open_clip_ids(reference, text)


def test_truncation_at_77_keeps_end_token(tokenizer, reference):
    text = "a very long caption " * 40
    ours = tokenizer(text, truncation=True, max_length=CLIP_CONTEXT_LENGTH).input_ids
    assert len(ours) == CLIP_CONTEXT_LENGTH
    assert ours[0] == 49406
    assert ours[-1] == 49407
    assert ours == reference([text])[0].tolist()


def test_padding_to_max_length_uses_end_token(tokenizer):
    batch = tokenizer(["a cat", "a dog on a sofa"], padding="max_length", return_tensors="pt")
    assert tuple(batch.input_ids.shape) == (2, CLIP_CONTEXT_LENGTH)
    assert batch.input_ids[0, 3:].eq(49407).all()


@pytest.mark.parametrize("text", ["fish &amp; chips", "ﬁne ligatures", "â€œmojibakeâ€\x9d"])
def test_only_difference_is_open_clips_text_cleaning(tokenizer, reference, text):
    cleaned = html.unescape(html.unescape(ftfy.fix_text(text)))
    ours = tokenizer(cleaned, truncation=True, max_length=CLIP_CONTEXT_LENGTH).input_ids
    assert ours == _open_clip_ids(reference, text)


def test_vocabulary_is_complete(tokenizer):
    assert len(tokenizer) == CLIP_VOCAB_SIZE
    vocab = tokenizer.get_vocab()
    assert vocab["<|startoftext|>"] == 49406
    assert vocab["<|endoftext|>"] == 49407
    assert tokenizer.model_max_length == CLIP_CONTEXT_LENGTH


def test_files_are_written_once_and_reused(tmp_path):
    folder = clip_tokenizer_dir(tmp_path / "tok")
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == CLIP_VOCAB_SIZE
    merges = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0].startswith("#version")
    assert len(merges) - 1 == CLIP_VOCAB_SIZE - 514
    stamp = (folder / "vocab.json").stat().st_mtime_ns
    assert clip_tokenizer_dir(tmp_path / "tok") == folder
    assert (folder / "vocab.json").stat().st_mtime_ns == stamp
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging dir left behind"


def test_save_and_reload_tokenizes_identically(tokenizer, tmp_path):
    from transformers import CLIPTokenizer

    tokenizer.save_pretrained(tmp_path)
    again = CLIPTokenizer.from_pretrained(tmp_path)
    for text in TRICKY:
        assert again(text).input_ids == tokenizer(text).input_ids
