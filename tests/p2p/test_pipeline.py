from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from instructedit.p2p import (
    AttentionStore,
    CrossAttentionEdit,
    LocalBlend,
    PromptToPrompt,
    SelfAttentionInjection,
    WordSwap,
    attention_grid,
)
from instructedit.testing import save_tiny_pipeline, tiny_components

STEPS = 8


def _p2p(scheduler="euler_ancestral"):
    return PromptToPrompt(**tiny_components(in_channels=4, seed=0, scheduler=scheduler))


def _diffusers(prompt, seed, scheduler):
    pipe = StableDiffusionPipeline(
        **tiny_components(in_channels=4, seed=0, scheduler=scheduler),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        prompt,
        num_inference_steps=STEPS,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    ).images


@pytest.mark.parametrize("scheduler", ["euler_ancestral", "ddim"])
def test_without_controller_each_image_equals_diffusers(scheduler):
    out = _p2p(scheduler).generate(
        "a red ball",
        "a blue cube",
        seed=3,
        num_inference_steps=STEPS,
        output_type="np",
        progress=False,
    )
    source, target = _diffusers("a red ball", 3, scheduler), _diffusers("a blue cube", 3, scheduler)
    assert np.abs(out.source - source).max() < 1e-4
    assert np.abs(out.target - target).max() < 1e-4
    assert np.abs(source - target).max() > 1e-2  # the prompts do differ


def test_batched_pairs_and_seeds_equal_single_runs():
    p2p = _p2p()
    batch = p2p.generate(
        ["a red ball", "a cat"],
        ["a blue ball", "a dog"],
        seed=[1, 2],
        num_inference_steps=4,
        output_type="np",
        progress=False,
    )
    second = p2p.generate(
        "a cat", "a dog", seed=2, num_inference_steps=4, output_type="np", progress=False
    )
    np.testing.assert_allclose(batch.source[1], second.source[0], atol=1e-4)
    np.testing.assert_allclose(batch.target[1], second.target[0], atol=1e-4)
    assert batch.seeds == [1, 2]


class ExplicitInjection:
    """Self-attention injection with the attention matrix materialised (the paper's formula)."""

    def controls(self, context):
        return not context.is_cross

    def attend(self, query, key, value, context):
        out = []
        pairs = context.num_pairs
        for q, k, v in zip(
            query.chunk(len(context.branches)),
            key.chunk(len(context.branches)),
            value.chunk(len(context.branches)),
            strict=True,
        ):
            p_src = torch.softmax(
                q[:pairs] @ k[:pairs].transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1
            )
            out += [p_src @ v[:pairs], p_src @ v[pairs:]]
        return torch.cat(out)

    def step_end(self, latents, step, num_steps):
        return latents


def test_injection_until_one_keeps_source_and_matches_explicit_formula():
    p2p = _p2p()
    kwargs = {"seed": 5, "num_inference_steps": STEPS, "output_type": "np", "progress": False}
    plain = p2p.generate("a red ball", "a blue ball", **kwargs)
    ours = p2p.generate(
        "a red ball", "a blue ball", controller=SelfAttentionInjection(1.0), **kwargs
    )
    explicit = p2p.generate("a red ball", "a blue ball", controller=ExplicitInjection(), **kwargs)
    np.testing.assert_allclose(ours.source, plain.source, atol=1e-5)
    np.testing.assert_allclose(ours.target, explicit.target, atol=1e-5)
    assert np.abs(ours.target - plain.target).max() > 1e-3  # the injection did change the target


def test_word_swap_with_store_local_blend_and_grid(tmp_path):
    p2p = _p2p()
    tokenizer = p2p.tokenizer
    sources, targets = ["a red ball"], ["a blue ball"]
    blend = LocalBlend.from_words(sources, targets, [("red", "blue")], tokenizer, start=0.0)
    store = AttentionStore()
    controller = CrossAttentionEdit.for_prompts(
        WordSwap.from_prompts(sources, targets, tokenizer),
        targets,
        tokenizer,
        STEPS,
        local_blend=blend,
        store=store,
    )
    out = p2p.generate(
        sources,
        targets,
        controller=controller,
        seed=0,
        num_inference_steps=STEPS,
        output_type="np",
        progress=False,
    )
    plain = p2p.generate(
        sources, targets, seed=0, num_inference_steps=STEPS, output_type="np", progress=False
    )
    assert np.abs(out.source - plain.source).max() < 1e-4  # the source renders as without control
    assert np.abs(out.target - plain.target).max() > 1e-3
    maps = store.aggregate((16, 16))
    assert maps.shape == (2, 16, 16, 77)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 16, 16), rtol=0, atol=1e-4)
    grid = attention_grid(maps, "a red ball", tokenizer, tile=32)
    assert grid.size == (32 * 4, 32 + 16)  # a, red, ball, end token


class _ExplodingUNet:
    """Stands in for the UNet: any call means validation came too late."""

    def __init__(self, unet):
        self.config, self.dtype, self.device = unet.config, unet.dtype, unet.device

    def __call__(self, *args, **kwargs):
        raise AssertionError("the model ran before the input was validated")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"source_prompt": []}, ValueError, "source_prompt must be one item or a non-empty list"),
        ({"target_prompt": ["a", None]}, TypeError, r"target_prompt\[1\] must be a str"),
        (
            {"source_prompt": ["a", "b"], "target_prompt": ["c"] * 3},
            ValueError,
            "2 source prompts and 3",
        ),
        ({"seed": [0, 1]}, ValueError, "got 2 seed values for 1 items"),
        ({"seed": "7"}, ValueError, "seed must be an int or a list of 1"),
        ({"guidance_scale": [7.5, 3.0]}, ValueError, "got 2 guidance_scale values"),
        ({"num_inference_steps": True}, ValueError, "num_inference_steps must be an int >= 1"),
        ({"output_type": "jpeg"}, ValueError, "output_type must be one of"),
        ({"guidance_scale": -1.0}, ValueError, "guidance_scale must be a finite number >= 0"),
        (
            {"source_prompt": ["a", "b"], "guidance_scale": [7.5, float("nan")]},
            ValueError,
            r"guidance_scale\[1\] must be a finite number >= 0, got nan",
        ),
        ({"height": 0}, ValueError, "height must be a positive multiple of 2, got 0"),
        ({"width": 33}, ValueError, "width must be a positive multiple of 2, got 33"),
        ({"height": 32.0}, TypeError, "height must be an int"),
        ({"width": True}, TypeError, "width must be an int"),
    ],
)
def test_bad_generate_arguments_are_rejected_before_any_model_runs(kwargs, error, message):
    p2p = _p2p()
    p2p.unet = _ExplodingUNet(p2p.unet)
    arguments = {"source_prompt": "a red ball", "target_prompt": "a blue ball", "progress": False}
    arguments.update(kwargs)
    with pytest.raises(error, match=message):
        p2p.generate(num_inference_steps=arguments.pop("num_inference_steps", 1), **arguments)


def test_bad_prompts_are_rejected():
    p2p = _p2p()
    with pytest.raises(
        ValueError, match=r"source_prompt\[0\] has \d+ tokens; the text encoder allows 77"
    ):
        p2p.generate("word " * 100, "a cat", num_inference_steps=1, progress=False)
    with pytest.raises(ValueError, match="height must be a positive multiple of 2"):
        p2p.generate("a", "b", height=33, num_inference_steps=1, progress=False)
    with pytest.raises(ValueError, match="text-to-image UNet"):
        PromptToPrompt(**tiny_components(in_channels=8))


def test_sample_pairs_parameters_are_seeded_and_batch_independent():
    p2p = _p2p()
    kwargs = {"num_inference_steps": 3, "seed": 7, "progress": False}
    one = p2p.sample_pairs("a red ball", "a blue ball", num_samples=3, batch_size=1, **kwargs)
    three = p2p.sample_pairs("a red ball", "a blue ball", num_samples=3, batch_size=3, **kwargs)
    assert [(c.seed, c.injection, c.guidance_scale) for c in one] == [
        (c.seed, c.injection, c.guidance_scale) for c in three
    ]
    assert all(0.1 <= c.injection <= 0.9 and 7.5 <= c.guidance_scale <= 15 for c in one)
    assert len({c.seed for c in one}) == 3
    for a, b in zip(one, three, strict=True):
        assert (
            np.abs(np.asarray(a.target, dtype=float) - np.asarray(b.target, dtype=float)).max() <= 1
        )
    assert isinstance(one[0].source, Image.Image)


def _assert_hand_built(p2p, source, target, candidates, steps, local_blend=None):
    """The candidates' targets equal google's edit built by hand from the public controllers: a
    word swap, each pair's cross-attention replaced for its own p, self-attention for the first
    0.4 of the steps."""
    tokenizer = p2p.tokenizer
    alphas = torch.cat(
        [
            CrossAttentionEdit.for_prompts(
                None, [target], tokenizer, steps, cross_replace_steps=c.injection
            ).cross_alphas
            for c in candidates
        ]
    )
    count = len(candidates)
    controller = CrossAttentionEdit(
        WordSwap.from_prompts([source] * count, [target] * count, tokenizer),
        alphas,
        self_window=0.4,
        self_max_resolution=None,
        local_blend=local_blend,
    )
    manual = p2p.generate(
        [source] * count,
        [target] * count,
        controller=controller,
        seed=[c.seed for c in candidates],
        num_inference_steps=steps,
        guidance_scale=[c.guidance_scale for c in candidates],
        progress=False,
    )
    for candidate, image in zip(candidates, manual.target, strict=True):
        np.testing.assert_array_equal(np.asarray(candidate.target), np.asarray(image))


def test_sample_pairs_cross_attention_control_is_googles_edit_per_sample():
    p2p = _p2p()
    kwargs = {"num_inference_steps": 3, "seed": 5, "progress": False, "batch_size": 2}
    swap = p2p.sample_pairs("a red ball", "a blue ball", 2, control="cross_attention", **kwargs)
    _assert_hand_built(p2p, "a red ball", "a blue ball", swap, 3)
    official = p2p.sample_pairs("a red ball", "a blue ball", 2, **kwargs)
    assert [c.seed for c in official] == [c.seed for c in swap]  # same draws, other control
    assert any(
        not np.array_equal(np.asarray(a.target), np.asarray(b.target))
        for a, b in zip(official, swap, strict=True)
    )
    # Different word counts: refinement instead of a swap.
    refined = p2p.sample_pairs(
        "a red ball", "a red ball and a blue cube", 2, control="cross_attention", **kwargs
    )
    assert len(refined) == 2
    with pytest.raises(ValueError, match="control must be one of"):
        p2p.sample_pairs("a", "b", 1, control="local", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="self_replace_steps must be in"):
        p2p.sample_pairs("a", "b", 1, self_replace_steps=1.5, **kwargs)
    # Ranges are checked before any sampling: p within [0, 1], guidance not negative.
    with pytest.raises(ValueError, match=r"injection_range must be \(low, high\) with 0 <= low"):
        p2p.sample_pairs("a", "b", 1, injection_range=(0.5, 1.5), **kwargs)
    with pytest.raises(ValueError, match="guidance_range must be"):
        p2p.sample_pairs("a", "b", 1, guidance_range=(-2.0, 7.5), **kwargs)


def test_sample_pairs_local_blend_is_googles_blend_around_the_edited_words():
    p2p = _p2p()
    kwargs = {"num_inference_steps": 4, "seed": 2, "progress": False, "batch_size": 2}
    source, target = "a red ball on a table", "a blue ball on a table"
    # A random tiny model's maps are nearly flat: a high threshold makes a partial mask.
    blended = p2p.sample_pairs(
        source, target, 2, control="cross_attention", local_blend=0.95, **kwargs
    )
    plain = p2p.sample_pairs(source, target, 2, control="cross_attention", **kwargs)
    # By hand: "red ball" / "blue ball" are the edited words (tokens 2-3 after the start token).
    blend = LocalBlend([[2, 3]] * 2, [[2, 3]] * 2, threshold=0.95)
    _assert_hand_built(p2p, source, target, blended, 4, local_blend=blend)
    for a, b in zip(blended, plain, strict=True):
        np.testing.assert_array_equal(np.asarray(a.source), np.asarray(b.source))
    # The mask is partial: the blend changed the targets, which still differ from the sources.
    assert any(
        not np.array_equal(np.asarray(a.target), np.asarray(b.target))
        for a, b in zip(blended, plain, strict=True)
    )
    assert all(not np.array_equal(np.asarray(c.target), np.asarray(c.source)) for c in blended)
    # Threshold 0 keeps every attended position (all of them): the same as no blending.
    everywhere = p2p.sample_pairs(
        source, target, 2, control="cross_attention", local_blend=0.0, **kwargs
    )
    for a, b in zip(everywhere, plain, strict=True):
        diff = np.abs(np.asarray(a.target, dtype=float) - np.asarray(b.target, dtype=float))
        assert diff.max() <= 1
    with pytest.raises(ValueError, match="local_blend needs control='cross_attention'"):
        p2p.sample_pairs(source, target, 1, local_blend=0.3, **kwargs)
    with pytest.raises(ValueError, match=r"local_blend must be a threshold in \[0, 1\)"):
        p2p.sample_pairs(source, target, 1, control="cross_attention", local_blend=1.0, **kwargs)


def test_from_pretrained_text_to_image_folder(tmp_path):
    folder = save_tiny_pipeline(tmp_path / "t2i", kind="text_to_image")
    loaded = PromptToPrompt.from_pretrained(folder)
    direct = _p2p()
    a = loaded.generate("a", "b", num_inference_steps=2, output_type="np", progress=False)
    b = direct.generate("a", "b", num_inference_steps=2, output_type="np", progress=False)
    np.testing.assert_array_equal(a.target, b.target)


class ConstantNoiseUNet(torch.nn.Module):
    """A denoiser for which DDIM inversion is exact: ε does not depend on x, only on the text.

    ε(x, t, c) = ε₀ + 5·(m(c) − μ), m(c) the mean of the text embedding's first feature: exact
    for the caption (m = μ), biased for any other text, so guidance with the empty prompt spoils
    the reconstruction unless null-text inversion moves the unconditional embedding's m to μ.
    """

    def __init__(self, caption_embedding):
        super().__init__()
        self.config = SimpleNamespace(in_channels=4, sample_size=16)
        self.mu = caption_embedding[:, :, 0].mean()
        self.eps = torch.nn.Parameter(
            torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
        )

    def forward(self, sample, timestep, encoder_hidden_states, return_dict=True):
        bias = 5.0 * (encoder_hidden_states[:, :, 0].mean(dim=1) - self.mu).view(-1, 1, 1, 1)
        eps = self.eps.expand_as(sample) + bias
        return (eps,) if not return_dict else SimpleNamespace(sample=eps)


@pytest.mark.slow
def test_null_text_inversion_reconstructs_the_input():
    parts = tiny_components(in_channels=4, seed=0, scheduler="ddim")
    p2p = PromptToPrompt(**parts)
    p2p.unet = ConstantNoiseUNet(p2p.encode_text(["a red ball"]))
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    plain = p2p.invert(image, "a red ball", num_inference_steps=10, null_text=False, progress=False)
    plain.guidance_scale = 7.5  # reconstruct with the guidance an edit uses
    # The paper's early-stop thresholds are for latents of std ≈ 1; these are ~20× smaller.
    tuned = p2p.invert(
        image,
        "a red ball",
        num_inference_steps=10,
        inner_steps=50,
        early_stop=0.0,
        early_stop_slope=0.0,
        progress=False,
    )
    x0 = tuned.trajectory[0]
    plain_error = (
        (p2p.edit_inverted(plain, "a red ball", output_type="latent", progress=False).source - x0)
        .abs()
        .max()
    )
    reconstruction = p2p.edit_inverted(
        tuned, "a red ball", output_type="latent", progress=False
    ).source
    tuned_error = (reconstruction - x0).abs().max()
    assert plain_error > 0.1 * x0.abs().max()  # the empty prompt's guidance drifts
    assert tuned_error < 1e-2 * x0.abs().max()  # null-text inversion brings it back
    assert tuned_error < plain_error / 20


@pytest.mark.slow
def test_null_text_inversion_improves_a_real_unet_and_edits_keep_the_source():
    p2p = _p2p("ddim")
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    plain = p2p.invert(image, "a red ball", num_inference_steps=10, null_text=False, progress=False)
    plain.guidance_scale = 7.5
    tuned = p2p.invert(image, "a red ball", num_inference_steps=10, progress=False)
    assert len(tuned.uncond_embeddings) == 10
    x0 = tuned.trajectory[0]
    plain_out = p2p.edit_inverted(plain, "a red ball", output_type="latent", progress=False).source
    tuned_out = p2p.edit_inverted(tuned, "a red ball", output_type="latent", progress=False).source
    # A random UNet is no denoiser, so inversion is approximate; the optimisation still helps.
    assert (tuned_out - x0).pow(2).mean() < 0.8 * (plain_out - x0).pow(2).mean()
    edited = p2p.edit_inverted(
        tuned,
        "a blue ball",
        controller=SelfAttentionInjection(0.5),
        output_type="np",
        progress=False,
    )
    reconstructed = p2p.edit_inverted(tuned, "a red ball", output_type="np", progress=False)
    assert np.abs(edited.source - reconstructed.source).max() < 1e-3


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"source_prompt": ["a red ball"]}, TypeError, "source_prompt must be a str"),
        ({"num_samples": 1.5}, ValueError, "num_samples must be an int >= 1, got 1.5"),
        ({"batch_size": 0}, ValueError, "batch_size must be an int >= 1, got 0"),
        ({"num_inference_steps": 0}, ValueError, "num_inference_steps must be an int >= 1"),
        ({"height": 33}, ValueError, "height must be a positive multiple of 2, got 33"),
        ({"self_replace_steps": float("nan")}, ValueError, "self_replace_steps must be in"),
    ],
)
def test_bad_sample_pairs_arguments_are_rejected_before_any_model_runs(kwargs, error, message):
    p2p = _p2p()
    p2p.unet = _ExplodingUNet(p2p.unet)
    arguments = {"source_prompt": "a red ball", "target_prompt": "a blue ball", "progress": False}
    arguments.update(kwargs)
    with pytest.raises(error, match=message):
        p2p.sample_pairs(num_samples=arguments.pop("num_samples", 1), **arguments)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"height": 33, "width": 32},
            ValueError,
            "height must be a positive multiple of 8, got 33",
        ),
        ({"height": 32}, ValueError, "pass both height and width"),
        ({"guidance_scale": -2.0}, ValueError, "guidance_scale must be a finite number >= 0"),
        ({"num_inference_steps": 0}, ValueError, "num_inference_steps must be an int >= 1"),
        ({"inner_steps": 0}, ValueError, "inner_steps must be an int >= 1"),
        ({"prompt": None}, TypeError, "prompt must be a str"),
        ({"inner_step": 3}, TypeError, r"unknown keyword argument\(s\) \['inner_step'\]"),
    ],
)
def test_bad_inversion_arguments_are_rejected_before_any_model_runs(kwargs, error, message):
    p2p = _p2p()
    p2p.unet = _ExplodingUNet(p2p.unet)
    arguments = {"image": Image.new("RGB", (32, 32)), "prompt": "a red ball", "progress": False}
    arguments.update(kwargs)
    with pytest.raises(error, match=message):
        p2p.invert(arguments.pop("image"), arguments.pop("prompt"), **arguments)
