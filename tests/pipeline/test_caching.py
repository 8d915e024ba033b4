"""Feature caching (DeepCache) on the tiny editing UNet."""

import numpy as np
import pytest
import torch

from instructedit import EditPipeline
from instructedit.caching import DeepCacheUNet
from instructedit.testing import tiny_components, tiny_unet


@pytest.fixture(scope="module")
def unet():
    return tiny_unet(seed=0)


def _inputs(unet, batch=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, unet.config.in_channels, 12, 16, generator=generator)
    hidden = torch.randn(batch, 77, unet.config.cross_attention_dim, generator=generator)
    return sample, hidden


@torch.inference_mode()
def test_interval_one_and_full_calls_are_the_unet_itself(unet):
    sample, hidden = _inputs(unet)
    expected = unet(sample, 500, encoder_hidden_states=hidden, return_dict=False)[0]
    same = DeepCacheUNet(unet, interval=1)(sample, 500, hidden)[0]
    assert torch.equal(same, expected)
    # A full call of a caching UNet is diffusers' forward, re-run block by block: bit for bit.
    cached = DeepCacheUNet(unet, interval=3)
    assert torch.equal(cached(sample, 500, hidden)[0], expected)
    assert (cached.calls, cached.full_calls) == (1, 1)


@torch.inference_mode()
def test_a_cached_call_equals_a_hand_run_of_the_shallow_blocks(unet):
    first, hidden = _inputs(unet, seed=0)
    second, _ = _inputs(unet, seed=1)
    cached = DeepCacheUNet(unet, interval=2, depth=1)
    cached(first, 700, hidden)
    got = cached(second, 650, hidden)[0]
    assert (cached.calls, cached.full_calls) == (2, 1)

    # By hand: the feature entering the last up block on the first input...
    kept = {}

    def keep(module, args, kwargs):
        kept["sample"] = kwargs["hidden_states"]

    handle = unet.up_blocks[-1].register_forward_pre_hook(keep, with_kwargs=True)
    unet(first, 700, encoder_hidden_states=hidden, return_dict=False)
    handle.remove()
    # ...then, on the second input, conv_in, the first down block and the last up block.
    emb = unet.time_embedding(unet.get_time_embed(sample=second, timestep=650))
    x = unet.conv_in(second)
    down = unet.down_blocks[0]
    if getattr(down, "has_cross_attention", False):
        _, skips = down(hidden_states=x, temb=emb, encoder_hidden_states=hidden)
    else:
        _, skips = down(hidden_states=x, temb=emb)
    residuals = (x, *skips)[: len(unet.up_blocks[-1].resnets)]
    up = unet.up_blocks[-1]
    if getattr(up, "has_cross_attention", False):
        y = up(
            hidden_states=kept["sample"],
            temb=emb,
            res_hidden_states_tuple=residuals,
            encoder_hidden_states=hidden,
        )
    else:
        y = up(hidden_states=kept["sample"], temb=emb, res_hidden_states_tuple=residuals)
    by_hand = unet.conv_out(unet.conv_act(unet.conv_norm_out(y)))
    torch.testing.assert_close(got, by_hand, rtol=0, atol=1e-6)
    # It is an approximation: the whole UNet on the second input differs.
    whole = unet(second, 650, encoder_hidden_states=hidden, return_dict=False)[0]
    assert (got - whole).abs().max() > 1e-4


@torch.inference_mode()
def test_a_change_of_batch_runs_the_whole_unet(unet):
    cached = DeepCacheUNet(unet, interval=4)
    for batch in (3, 3, 2, 2):
        sample, hidden = _inputs(unet, batch=batch)
        cached(sample, 400, hidden)
    assert (cached.calls, cached.full_calls) == (4, 2)


def test_the_pipeline_runs_the_deep_blocks_once_every_interval(noise_image):
    pipe = EditPipeline(**tiny_components(seed=0))
    deep = []
    handle = pipe.unet.mid_block.register_forward_hook(lambda *args: deep.append(1))

    def edit(**kwargs):
        return pipe(
            noise_image,
            "make it snowy",
            num_inference_steps=7,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
            progress=False,
            **kwargs,
        ).images

    plain = edit()
    assert len(deep) == 7
    deep.clear()
    assert np.array_equal(edit(cache_interval=1), plain)
    deep.clear()
    fast = edit(cache_interval=3)
    handle.remove()
    assert len(deep) == 3  # steps 0, 3 and 6
    assert 0 < np.abs(fast - plain).max() < 0.5
    # The named presets are caching intervals.
    assert np.array_equal(edit(speed="fast"), fast)
    assert np.array_equal(edit(speed="exact"), plain)
    with pytest.raises(ValueError, match="give speed or cache_interval, not both"):
        edit(speed="fast", cache_interval=2)
    with pytest.raises(ValueError, match="speed must be one of"):
        edit(speed="ludicrous")
    with pytest.raises(ValueError, match="cache_interval must be an integer >= 1, got 0"):
        edit(cache_interval=0)
    with pytest.raises(ValueError, match="cache_depth must be an integer from 1 to 1"):
        edit(cache_interval=2, cache_depth=2)


def test_prompt_to_prompt_and_inversion_cache_too():
    from instructedit import PromptToPrompt
    from instructedit.p2p import SelfAttentionInjection, ddim_inversion

    p2p = PromptToPrompt(**tiny_components(in_channels=4, seed=0))
    deep = []
    handle = p2p.unet.mid_block.register_forward_hook(lambda *args: deep.append(1))
    kwargs = {"seed": 5, "num_inference_steps": 6, "output_type": "np", "progress": False}
    plain = p2p.generate(
        "a red ball", "a blue ball", controller=SelfAttentionInjection(0.5), **kwargs
    )
    assert len(deep) == 6
    deep.clear()
    cached = p2p.generate(
        "a red ball",
        "a blue ball",
        controller=SelfAttentionInjection(0.5),
        cache_interval=2,
        **kwargs,
    )
    assert len(deep) == 3
    assert 0 < np.abs(cached.target - plain.target).max() < 0.5
    deep.clear()
    image = plain.source[0]
    ddim_inversion(
        p2p, image, "a red ball", num_inference_steps=6, cache_interval=3, progress=False
    )
    handle.remove()
    assert len(deep) == 2
