"""Each controller against a direct, explicit-softmax implementation of its formula."""

import pytest
import torch

from instructedit.attention import AttentionContext
from instructedit.p2p import (
    CrossAttentionEdit,
    LocalBlend,
    Refine,
    Reweight,
    SelfAttentionInjection,
    StepWindow,
    WordSwap,
    injection_active,
)
from instructedit.testing import clip_tokenizer

HEADS, QUERIES, DIM, TOKENS = 2, 16, 8, 77


def _context(
    is_cross, *, step=0, num_steps=10, resolution=(4, 4), branches=("cond", "uncond"), pairs=2
):
    return AttentionContext(
        layer="up_blocks.1.attentions.0.transformer_blocks.0.attn2.processor",
        place="up",
        is_cross=is_cross,
        step=step,
        num_steps=num_steps,
        resolution=resolution,
        branches=branches,
        num_pairs=pairs,
    )


def _qkv(is_cross, rows, seed=0):
    g = torch.Generator().manual_seed(seed)
    keys = TOKENS if is_cross else QUERIES
    q = torch.randn(rows, HEADS, QUERIES, DIM, generator=g)
    k = torch.randn(rows, HEADS, keys, DIM, generator=g)
    v = torch.randn(rows, HEADS, keys, DIM, generator=g)
    return q, k, v


def _probabilities(q, k):
    """The attention matrix, materialised: softmax(Q Kᵀ / √d)."""
    return torch.softmax(q @ k.transpose(-1, -2) / DIM**0.5, dim=-1)


def _split(t, branches, pairs):
    return [(c[:pairs], c[pairs:]) for c in t.chunk(branches)]


def test_self_attention_injection_equals_explicit_formula():
    ctx = _context(False, branches=("cond", "uncond"), pairs=2)
    q, k, v = _qkv(False, 8)
    controller = SelfAttentionInjection(until=[1.0, 0.0])  # pair 0 injected, pair 1 not
    got = controller.attend(q, k, v, ctx)
    expected = []
    for (qs, qt), (ks, kt), (vs, vt) in zip(
        _split(q, 2, 2), _split(k, 2, 2), _split(v, 2, 2), strict=True
    ):
        p_src, p_tgt = _probabilities(qs, ks), _probabilities(qt, kt)
        expected += [p_src @ vs, torch.stack([p_src[0] @ vt[0], p_tgt[1] @ vt[1]])]
    torch.testing.assert_close(got, torch.cat(expected), rtol=0, atol=1e-5)


def _google_edit(q, k, v, ctx, *, mapper=None, refine=None, equalizer=None, alpha):
    """google/prompt-to-prompt's AttentionControlEdit.forward for cross-attention, literally."""
    pairs = ctx.num_pairs
    out = []
    for name, (qs, qt), (ks, kt), (vs, vt) in zip(
        ctx.branches, _split(q, 2, pairs), _split(k, 2, pairs), _split(v, 2, pairs), strict=True
    ):
        p_src, p_tgt = _probabilities(qs, ks), _probabilities(qt, kt)
        out.append(p_src @ vs)
        if name != "cond":
            out.append(p_tgt @ vt)
            continue
        rows = []
        for i in range(pairs):
            base, own = p_src[i], p_tgt[i]  # [h, p, w]
            if refine is not None:
                index, alphas = refine
                replaced = base[:, :, index[i]] * alphas[i] + own * (1 - alphas[i])
            elif mapper is not None:
                replaced = torch.einsum("hpw,wn->hpn", base, mapper[i])
            else:
                replaced = base
            if equalizer is not None:
                replaced = replaced * equalizer[i]
            new = replaced * alpha[i] + (1 - alpha[i]) * own
            rows.append(new @ vt[i])
        out.append(torch.stack(rows))
    return torch.cat(out)


def _random_setup(seed=1):
    g = torch.Generator().manual_seed(seed)
    mapper = torch.rand(2, TOKENS, TOKENS, generator=g)
    index = torch.randint(0, TOKENS, (2, TOKENS), generator=g)
    alphas = (torch.rand(2, TOKENS, generator=g) > 0.3).float()
    equalizer = torch.rand(2, TOKENS, generator=g) * 3
    step_alpha = (torch.rand(2, TOKENS, generator=g) > 0.5).float()
    return mapper, index, alphas, equalizer, step_alpha


@pytest.mark.parametrize(
    "kind", ["swap", "refine", "reweight", "reweight_on_refine", "reweight_on_swap"]
)
def test_cross_attention_edits_equal_google_formula(kind):
    mapper, index, alphas, equalizer, step_alpha = _random_setup()
    ctx = _context(True, step=3)
    q, k, v = _qkv(True, 8, seed=2)
    swap, refine = WordSwap(mapper), Refine(index, alphas)
    edit = {
        "swap": swap,
        "refine": refine,
        "reweight": Reweight(equalizer),
        "reweight_on_refine": Reweight(equalizer, base=refine),
        "reweight_on_swap": Reweight(equalizer, base=swap),
    }[kind]
    alphas_table = torch.zeros(2, 10, TOKENS)
    alphas_table[:, 3] = step_alpha
    controller = CrossAttentionEdit(edit, alphas_table, self_window=0.0)
    got = controller.attend(q, k, v, ctx)
    expected = _google_edit(
        q,
        k,
        v,
        ctx,
        mapper=mapper if "swap" in kind else None,
        refine=(index, alphas) if "refine" in kind else None,
        equalizer=equalizer if "reweight" in kind else None,
        alpha=step_alpha,
    )
    # Random mappers and equalizers push outputs to ~15: compare relative to that scale too.
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_self_replacement_window_and_resolution():
    controller = CrossAttentionEdit(
        None, torch.zeros(1, 10, TOKENS), self_window=(0.2, 0.5), self_max_resolution=4
    )
    touched = [s for s in range(10) if controller.controls(_context(False, step=s, pairs=1))]
    assert touched == [2, 3, 4]
    assert not controller.controls(_context(False, step=3, resolution=(8, 8), pairs=1))
    ctx = _context(False, step=3, pairs=1)
    q, k, v = _qkv(False, 4)
    got = controller.attend(q, k, v, ctx)
    (qs, qt), (ks, kt), (vs, vt) = _split(q, 2, 1)[0], _split(k, 2, 1)[0], _split(v, 2, 1)[0]
    expected_cond = torch.cat([_probabilities(qs, ks) @ vs, _probabilities(qs, ks) @ vt])
    torch.testing.assert_close(got[:2], expected_cond, rtol=0, atol=1e-5)
    # The unconditional branch is not edited (google edits only the conditional half).
    (qs, qt), (ks, kt), (vs, vt) = _split(q, 2, 1)[1], _split(k, 2, 1)[1], _split(v, 2, 1)[1]
    torch.testing.assert_close(
        got[2:],
        torch.cat([_probabilities(qs, ks) @ vs, _probabilities(qt, kt) @ vt]),
        rtol=0,
        atol=1e-5,
    )


def test_injection_schedule_follows_the_official_rule():
    until = torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64)
    # Official: inject while i / (num_sigmas − 2) < p, num_sigmas = steps + 1.
    steps = 11
    for i in range(steps):
        expected = torch.tensor([i / (steps - 1) < p for p in until.tolist()])
        assert torch.equal(injection_active(until, i, steps), expected)
    controller = SelfAttentionInjection(0.5, max_resolution=4)
    assert controller.controls(_context(False, step=4, num_steps=11, pairs=1))
    assert not controller.controls(_context(False, step=5, num_steps=11, pairs=1))
    assert not controller.controls(_context(False, step=0, resolution=(8, 8), pairs=1))
    assert not controller.controls(_context(True, step=0, pairs=1))


def test_step_window_uses_googles_integer_bounds():
    window = StepWindow(0.0, 0.4)
    assert [s for s in range(50) if window.contains(s, 50)] == list(range(20))
    assert [s for s in range(7) if window.contains(s, 7)] == [0, 1]  # int(7·0.4) = 2


@pytest.mark.parametrize("value", [-0.1, 1.5, (0.6, 0.2), float("nan")])
def test_windows_outside_unit_interval_are_rejected(value):
    with pytest.raises(ValueError, match="self_replace_steps"):
        CrossAttentionEdit(None, torch.zeros(1, 1, TOKENS), self_window=value)
    with pytest.raises(ValueError, match="until"):
        SelfAttentionInjection(until=value if isinstance(value, float) else 2.0)


def test_per_pair_until_count_must_match_pairs():
    controller = SelfAttentionInjection(until=[0.2, 0.4, 0.6])
    with pytest.raises(ValueError, match="3 values for 2 prompt pairs"):
        controller.controls(_context(False, pairs=2))


@pytest.mark.parametrize(
    ("until", "error", "message"),
    [
        ([], ValueError, "until is empty"),
        ("0.5", TypeError, "until must be a fraction or a list of fractions"),
        ([0.5, None], TypeError, "until must be a fraction or a list of fractions"),
        (True, TypeError, "until must be a fraction"),
    ],
)
def test_until_of_the_wrong_kind_is_refused(until, error, message):
    with pytest.raises(error, match=message):
        SelfAttentionInjection(until=until)


@pytest.mark.parametrize("value", [(0.1,), (0.1, 0.2, 0.3), "0.4", (0.1, None)])
def test_malformed_windows_are_refused_naming_the_argument(value):
    with pytest.raises(ValueError, match="self_replace_steps must be a fraction or a"):
        CrossAttentionEdit(None, torch.zeros(1, 1, TOKENS), self_window=value)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"threshold": float("nan")}, ValueError, "threshold must be in \\[0, 1\\), got nan"),
        ({"threshold": 1.0}, ValueError, "threshold must be in"),
        ({"start": -0.1}, ValueError, "start must be a fraction in"),
        ({"threshold": "0.3"}, TypeError, "threshold must be a number"),
        ({"resolution": 0}, ValueError, "resolution must be an int >= 1"),
        ({"target_tokens": []}, ValueError, "one token list per pair each, got 1 and 0"),
    ],
)
def test_local_blend_parameters_are_checked(kwargs, error, message):
    arguments = {"source_tokens": [[1]], "target_tokens": [[1]], **kwargs}
    with pytest.raises(error, match=message):
        LocalBlend(**arguments)


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda t: WordSwap.from_prompts("a cat", "a dog", t), TypeError, "sources must be a list"),
        (lambda t: Refine.from_prompts([], [], t), ValueError, "sources is empty"),
        (
            lambda t: WordSwap.from_prompts(["a cat"], ["a dog", "a cow"], t),
            ValueError,
            "got 1 sources and 2 targets",
        ),
        (
            lambda t: Refine.from_prompts(["a cat"], [None], t),
            TypeError,
            r"targets\[0\] must be a str",
        ),
        (
            lambda t: Reweight.from_words(["a cat"], {"cat": "2"}, t),
            TypeError,
            r"words\['cat'\] must be a number",
        ),
        (lambda t: Reweight.from_words(["a cat"], {}, t), ValueError, "words must be a non-empty"),
        (
            lambda t: LocalBlend.from_edits([], [], t),
            ValueError,
            "LocalBlend.from_edits: sources is empty",
        ),
        (
            lambda t: LocalBlend.from_words(["a cat"], ["a dog"], [], t),
            ValueError,
            "got 0 for 1 pairs",
        ),
    ],
)
def test_prompt_lists_of_controllers_are_checked(build, error, message):
    with pytest.raises(error, match=message):
        build(clip_tokenizer())


def test_recorded_maps_do_not_overflow_in_half_precision():
    from instructedit.p2p._controllers import attention_probabilities

    query = torch.full((1, 2, 4, 8), 300.0, dtype=torch.float16)
    key = torch.cat([query[:, :, :3], -query[:, :, :3]], dim=2)  # 6 keys
    assert not torch.isfinite(query @ key.transpose(-1, -2)).all()  # the half product overflows
    maps = attention_probabilities(query, key)
    assert maps.dtype == torch.float32
    assert torch.allclose(maps[..., :3], torch.full_like(maps[..., :3], 1 / 3))
    assert attention_probabilities(query.double(), key.double()).dtype == torch.float64
