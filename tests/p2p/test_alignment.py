import pytest
import torch

from instructedit.p2p import (
    AttentionStore,
    CrossAttentionEdit,
    LocalBlend,
    Refine,
    Reweight,
    WordSwap,
    align_tokens,
    edited_words,
    refinement_mapper,
    swap_mapper,
    word_token_indices,
)
from instructedit.testing import clip_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return clip_tokenizer()


def test_word_token_indices(tokenizer):
    assert word_token_indices("a photo of a cat", "cat", tokenizer) == [5]
    assert word_token_indices("a photo of a cat", 1, tokenizer) == [2]
    assert word_token_indices("a cat and a cat", "cat", tokenizer) == [2, 5]
    # A word the BPE splits: all its tokens.
    pieces = tokenizer("hippopotamus", add_special_tokens=False).input_ids
    assert word_token_indices("a hippopotamus", "hippopotamus", tokenizer) == list(
        range(2, 2 + len(pieces))
    )
    with pytest.raises(ValueError, match="'dog' is not in the prompt"):
        word_token_indices("a cat", "dog", tokenizer)


def test_swap_mapper_maps_unchanged_tokens_and_the_swapped_word(tokenizer):
    mapper = swap_mapper("a photo of a cat", "a photo of a dog", tokenizer)
    assert mapper.shape == (77, 77)
    assert torch.equal(mapper[:7, :7], torch.eye(7))  # one-token swap: the identity
    assert torch.equal(mapper.sum(0), torch.ones(77))
    split = swap_mapper("a cat", "a hippopotamus", tokenizer)
    width = len(tokenizer("hippopotamus", add_special_tokens=False).input_ids)
    assert torch.allclose(split[2, 2 : 2 + width], torch.full((width,), 1.0 / width))
    assert split[3, 2 + width] == 1.0  # the end token stays aligned after the longer word


def test_word_swap_needs_equal_word_counts(tokenizer):
    with pytest.raises(ValueError, match="same number of words"):
        WordSwap.from_prompts(["a cat"], ["a black cat"], tokenizer)


def test_needleman_wunsch_alignment():
    # Hand-checked: inserting 7 aligns the rest, the new token gets −1.
    assert align_tokens([1, 2, 3], [1, 7, 2, 3]) == [0, -1, 1, 2]
    assert align_tokens([1, 2, 3], [1, 2, 3]) == [0, 1, 2]
    assert align_tokens([1, 2, 9, 3], [1, 2, 3]) == [0, 1, 3]


def test_refinement_mapper(tokenizer):
    mapper, alphas = refinement_mapper("a cat", "a black cat", tokenizer)
    # tokens: <s> a black cat </s> vs <s> a cat </s>
    assert mapper[:5].tolist() == [0, 1, 0, 2, 3]
    assert alphas[:5].tolist() == [1.0, 1.0, 0.0, 1.0, 1.0]
    assert torch.equal(mapper[5:], torch.arange(5, 77))
    refine = Refine.from_prompts(["a cat"], ["a black cat"], tokenizer)
    w_src, w_tgt = refine.weights()
    assert w_src[0, 2, 3] == 1.0  # target "cat" (3) reads source "cat" (2)
    assert w_tgt[0, 2, 2] == 1.0  # "black" keeps its own map


def test_reweight_words(tokenizer):
    edit = Reweight.from_words(["a photo of a red ball"], {"red": 2.5}, tokenizer)
    position = word_token_indices("a photo of a red ball", "red", tokenizer)[0]
    assert edit.equalizer[0, position] == 2.5
    assert edit.equalizer[0].sum() == 76 + 2.5
    with pytest.raises(ValueError, match="'blue' is not in the prompt"):
        Reweight.from_words(["a red ball"], {"blue": 2.0}, tokenizer)


def test_prompt_schedules_from_google_style_arguments(tokenizer):
    controller = CrossAttentionEdit.for_prompts(
        None, ["a photo of a dog"], tokenizer, 10, cross_replace_steps={"default_": 1.0, "dog": 0.4}
    )
    dog = word_token_indices("a photo of a dog", "dog", tokenizer)[0]
    assert controller.cross_alphas.shape == (1, 10, 77)
    assert controller.cross_alphas[0, :, dog].tolist() == [1.0] * 4 + [0.0] * 6
    assert controller.cross_alphas[0, :, 1].tolist() == [1.0] * 10


def test_local_blend_mask_and_blend():
    maps = torch.zeros(2, 4, 4, 77)
    maps[0, 0, 0, 2] = 1.0  # source word at the top-left
    maps[1, 3, 3, 3] = 1.0  # target word at the bottom-right
    store = AttentionStore()
    store.current = {(4, 4): [maps.view(2, 16, 77)]}
    blend = LocalBlend([[2]], [[3]], threshold=0.3, start=0.0, resolution=4)
    mask = blend.mask(store, (4, 4))
    expected = torch.zeros(4, 4)
    expected[:2, :2] = 1.0  # 3×3 max-pool around each hot spot, union of both
    expected[2:, 2:] = 1.0
    assert torch.equal(mask[0, 0], expected)
    latents = torch.randn(2, 4, 4, 4)
    out = blend.apply(latents, store, step=5, num_steps=10)
    assert torch.equal(out[0], latents[0])
    assert torch.equal(out[1][:, :2, 2:], latents[0][:, :2, 2:])  # outside: the source
    torch.testing.assert_close(out[1][:, 3, 3], latents[1][:, 3, 3])  # inside: the target


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [
        # A colour swap: the colour and the noun it describes, in both prompts.
        (
            "a red circle on a white background",
            "a green circle on a white background",
            ([1, 2], [1, 2]),
        ),
        # The background's colour: the colour and "background".
        (
            "a red circle on a white background",
            "a red circle on a orange background",
            ([5, 6], [5, 6]),
        ),
        # An added shape: only target words; a removed one: only source words.
        (
            "a red circle on a white background",
            "a red circle and a blue square on a white background",
            ([], [3, 4, 5, 6]),
        ),
        (
            "a red circle and a blue square on a white background",
            "a blue square on a white background",
            ([0, 1, 2, 3], []),  # "a red circle and": the shape's words and a joint
        ),
        # A swap at the end has no noun after it; identical prompts change nothing.
        ("a red ball", "a red cube", ([2], [2])),
        ("a red ball", "a red ball", ([], [])),
    ],
)
def test_edited_words(source, target, expected):
    assert edited_words(source, target) == expected


def test_local_blend_from_edits_uses_the_edited_words_tokens(tokenizer):
    sources = ["a red ball on a white floor", "a red ball and a blue cube"]
    targets = ["a green ball on a white floor", "a red ball"]
    blend = LocalBlend.from_edits(sources, targets, tokenizer, threshold=0.5)
    positions = word_token_indices  # (prompt, word) -> token positions, start token = 0
    assert blend.source_tokens == [
        positions(sources[0], "red", tokenizer) + positions(sources[0], "ball", tokenizer),
        [t for w in (3, 4, 5, 6) for t in positions(sources[1], w, tokenizer)],
    ]
    assert blend.source_tokens[1] == [4, 5, 6, 7]  # one token per word, after the start token
    assert blend.target_tokens == [
        positions(targets[0], "green", tokenizer) + positions(targets[0], "ball", tokenizer),
        [],
    ]
    assert blend.threshold == 0.5
    with pytest.raises(ValueError, match="as many sources as targets"):
        LocalBlend.from_edits(sources, targets[:1], tokenizer)
