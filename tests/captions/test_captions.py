import json

import pytest
import torch

from instructedit.captions import (
    CaptionEdit,
    LanguageModelCaptionEditor,
    Rejection,
    SamplingConfig,
    TemplateCaptionEditor,
    TemplateRule,
    finetune_caption_editor,
    format_completion,
    format_prompt,
    is_identity_edit,
    judge_completion,
    parse_completion,
    read_caption_edits,
)
from instructedit.testing import seeded, tiny_causal_lm

EDITS = [
    CaptionEdit(
        f"a {c} {s} on a {b} background", f"make the {s} {n}", f"a {n} {s} on a {b} background"
    )
    for c, n in [("red", "blue"), ("green", "yellow"), ("blue", "red")]
    for s in ["circle", "square"]
    for b in ["white", "black"]
]


def test_official_format_round_trips():
    assert format_prompt("a cat") == "a cat\n##\n"
    completion = format_completion("make it a dog", "a dog")
    assert completion == "make it a dog\n%%\na dog\nEND"
    assert parse_completion(completion) == ("make it a dog", "a dog")
    assert parse_completion("make it a dog\n%%\na dog\nEND\nsome trailing text") == (
        "make it a dog",
        "a dog",
    )
    for bad in ["no separator", "\n%%\na dog\nEND", "x\n%%\n\nEND", "x\n%%\na\nb\nEND"]:
        assert parse_completion(bad) is None


def test_identity_edits_ignore_case_and_punctuation():
    assert is_identity_edit("A red car.", "a red car!")
    assert is_identity_edit("a red car", "A RED CAR?")
    assert not is_identity_edit("a red car", "a blue car")


def test_a_completion_is_judged_an_edit_or_a_named_rejection():
    assert judge_completion("a cat", "make it a dog\n%%\na dog\nEND") == CaptionEdit(
        "a cat", "make it a dog", "a dog"
    )
    assert judge_completion("a cat", "a dog") == Rejection("a cat", "unparseable", "a dog")
    same = "keep it\n%%\nA cat.\nEND"
    assert judge_completion("a cat", same) == Rejection("a cat", "identity", same)


def test_reading_edits_accepts_caption_for_input_and_names_bad_lines(tmp_path):
    good = tmp_path / "edits.jsonl"
    good.write_text(
        json.dumps({"input": "a cat", "edit": "make it a dog", "output": "a dog"})
        + "\n\n"
        + json.dumps({"caption": "a car", "edit": "make it red", "output": "a red car"})
        + "\n"
    )
    assert [e.input for e in read_caption_edits(good)] == ["a cat", "a car"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"input": "a cat", "edit": "x", "output": "y"})
        + "\n"
        + json.dumps({"input": "a", "edit": ""})
        + "\n"
    )
    with pytest.raises(ValueError, match=r"bad.jsonl:2: field 'edit' is missing or empty"):
        list(read_caption_edits(bad))
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"broken.jsonl:1: not valid JSON"):
        list(read_caption_edits(broken))


def test_tiny_language_model_learns_to_write_parseable_edits():
    model, tokenizer = tiny_causal_lm(seed=0)
    losses = finetune_caption_editor(
        model, tokenizer, EDITS, epochs=150, learning_rate=3e-3, batch_size=12, progress=False
    )
    assert losses[-1] < 0.2 * losses[0]
    editor = LanguageModelCaptionEditor(
        model, tokenizer, sampling=SamplingConfig(max_new_tokens=40)
    )
    torch.manual_seed(0)
    results = editor.edit([e.input for e in EDITS[:6]])
    edits = [r for r in results if isinstance(r, CaptionEdit)]
    assert len(edits) >= 4
    for edit in edits:
        assert edit.instruction.startswith("make the")
        assert not is_identity_edit(edit.input, edit.output)


class ScriptedModel(torch.nn.Module):
    """A 'language model' whose generate() returns scripted completions, one call at a time."""

    def __init__(self, tokenizer, completions):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.tokenizer = tokenizer
        self.completions = list(completions)
        self.calls = 0

    def generate(self, input_ids, attention_mask, **kwargs):
        self.calls += 1
        rows = []
        for _ in range(input_ids.shape[0]):
            text = self.completions.pop(0)
            rows.append(self.tokenizer(text, add_special_tokens=False).input_ids)
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        new = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        return torch.cat([input_ids, new], dim=1)


def test_malformed_outputs_are_rejected_with_reasons_and_retried():
    _, tokenizer = tiny_causal_lm(seed=0)
    model = ScriptedModel(
        tokenizer,
        [
            # attempt 1 for captions 0, 1, 2
            "gibberish without format",
            "make it red\n%%\na red car\nEND",
            "make it blue\n%%\na cat\nEND",  # identity for caption 2
            # attempt 2 for captions 0, 2
            "still broken",
            "make it a dog\n%%\na dog\nEND",
            # attempt 3 for caption 0
            "broken again",
        ],
    )
    editor = LanguageModelCaptionEditor(model, tokenizer, sampling=SamplingConfig(retries=3))
    results = editor.edit(["a bike", "a car", "a cat", ""])
    assert isinstance(results[0], Rejection)
    assert results[0].reason == "unparseable"
    assert results[0].text == "broken again"
    assert results[1] == CaptionEdit("a car", "make it red", "a red car")
    assert results[2] == CaptionEdit("a cat", "make it a dog", "a dog")
    assert results[3] == Rejection("", "empty")
    assert model.calls == 3


def test_sampling_config_validation():
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(temperature=0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=1.5)


def test_template_editor_is_deterministic_and_varied():
    rule = TemplateRule(
        r"\b(red|blue|green)\b",
        ["red", "blue", "green"],
        ["make it {new}", "turn the {old} one {new}"],
    )
    editor = TemplateCaptionEditor([rule], seed=3)
    captions = [f"a red ball number {i}" for i in range(30)]
    with seeded(0):
        first = editor.edit(captions)
    with seeded(0):
        assert editor.edit(captions) == first
    # A caption that occurs many times gets independent edits, as a language model's would.
    with seeded(1):
        repeats = editor.edit(["a red ball"] * 40)
    assert len({(e.instruction, e.output) for e in repeats}) > 1
    assert all(isinstance(e, CaptionEdit) and "red" not in e.output for e in first)
    assert len({e.instruction.split()[0] for e in first}) == 2  # both phrasings occur
    assert editor.edit(["a square"]) == [Rejection("a square", "no_rule")]


@pytest.mark.parametrize(
    ("captions", "message"),
    [
        ("a red ball", "captions must be a list of str, got str"),
        (["a red ball", 3], r"captions\[1\] must be a str, got int"),
    ],
)
def test_editors_refuse_a_single_caption_string_and_non_strings(captions, message):
    rule = TemplateRule(r"\b(red)\b", ["blue"], ["make it {new}"])
    model, tokenizer = tiny_causal_lm(seed=0)
    for editor in (
        TemplateCaptionEditor([rule], seed=0),
        LanguageModelCaptionEditor(model, tokenizer),
    ):
        with pytest.raises(TypeError, match=message):
            editor.edit(captions)


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        ({"temperature": "0.7"}, TypeError, "temperature must be a number, got str"),
        ({"max_new_tokens": 0}, ValueError, "max_new_tokens must be an int >= 1, got 0"),
        ({"retries": 2.5}, ValueError, "retries must be an int >= 1, got 2.5"),
    ],
)
def test_sampling_config_names_the_bad_setting(settings, error, message):
    with pytest.raises(error, match=message):
        SamplingConfig(**settings)
