import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from instructedit.testing import CAPTION_EDIT_CORPUS, tiny_causal_lm, tiny_lm_tokenizer

SAMPLES = [
    "a red car\n##\nmake it snowy\n%%\na red car in snow\nEND",
    "东京 café 🐱 naïve",
    "",
    "\t\n  x",
]


def test_tokenizer_training_is_deterministic():
    a, b = tiny_lm_tokenizer(), tiny_lm_tokenizer()
    assert a.get_vocab() == b.get_vocab()
    assert len(a) == 512


@pytest.mark.parametrize("text", SAMPLES)
def test_byte_level_round_trip_is_lossless(text):
    tokenizer = tiny_lm_tokenizer()
    assert tokenizer.decode(tokenizer(text).input_ids) == text


def test_bpe_learned_merges_from_the_corpus():
    tokenizer = tiny_lm_tokenizer()
    caption = CAPTION_EDIT_CORPUS[0]
    assert len(tokenizer(caption).input_ids) < len(caption.encode("utf-8")) / 2


def test_too_small_vocabulary_is_rejected():
    with pytest.raises(ValueError, match="vocab_size"):
        tiny_lm_tokenizer(vocab_size=100)
    with pytest.raises(ValueError, match="corpus"):
        tiny_lm_tokenizer([])


def test_model_is_seeded_and_round_trips(tmp_path):
    model, tokenizer = tiny_causal_lm(seed=0)
    same, _ = tiny_causal_lm(seed=0)
    other, _ = tiny_causal_lm(seed=1)
    ids = tokenizer(SAMPLES[0], return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
        assert torch.equal(same(ids).logits, logits)
        assert not torch.equal(other(ids).logits, logits)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model2 = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    tokenizer2 = AutoTokenizer.from_pretrained(tmp_path)
    assert tokenizer2(SAMPLES[1]).input_ids == tokenizer(SAMPLES[1]).input_ids
    with torch.no_grad():
        assert torch.equal(model2(ids).logits, logits)


def test_model_generates_and_learns():
    model, tokenizer = tiny_causal_lm(seed=0)
    batch = tokenizer(list(CAPTION_EDIT_CORPUS[:4]), return_tensors="pt", padding=True)
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(30):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    prompt = tokenizer("a red car\n##\n", return_tensors="pt")
    out = model.generate(
        **prompt, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id
    )
    assert out.shape[1] > prompt.input_ids.shape[1]
