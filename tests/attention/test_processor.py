import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from instructedit.attention import (
    AttentionContext,
    ControlledAttnProcessor,
    attention_control,
    sdpa,
)
from instructedit.testing import tiny_unet


class Recorder:
    """Claims nothing; records every context it is asked about."""

    def __init__(self):
        self.seen: list[AttentionContext] = []

    def controls(self, context):
        self.seen.append(context)
        return False

    def attend(self, query, key, value, context):
        raise AssertionError("never claimed")

    def step_end(self, latents, step, num_steps):
        return latents


class Doubler(Recorder):
    """Claims cross-attention and doubles its output."""

    def controls(self, context):
        return context.is_cross

    def attend(self, query, key, value, context):
        return 2 * sdpa(query, key, value)


def _forward(unet, channels=4):
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(2, channels, 16, 12, generator=g)
    text = torch.randn(2, 77, 32, generator=g)
    with torch.no_grad():
        return unet(sample, 10, encoder_hidden_states=text).sample


@pytest.mark.parametrize("channels", [4, 8])
def test_uncontrolled_layers_match_diffusers_and_processors_are_restored(channels):
    unet = tiny_unet(in_channels=channels)
    unet.set_attn_processor(AttnProcessor2_0())
    expected = _forward(unet, channels)
    recorder = Recorder()
    with attention_control(unet, recorder, latent_size=(16, 12), num_pairs=1) as state:
        assert all(isinstance(p, ControlledAttnProcessor) for p in unet.attn_processors.values())
        state.set_step(3, 10, ("cond", "uncond"))
        got = _forward(unet, channels)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert all(isinstance(p, AttnProcessor2_0) for p in unet.attn_processors.values())
    contexts = {(c.place, c.is_cross, c.resolution) for c in recorder.seen}
    assert ("down", False, (16, 12)) in contexts
    assert ("mid", True, (8, 6)) in contexts
    assert ("up", True, (16, 12)) in contexts
    assert all(
        c.step == 3 and c.num_steps == 10 and c.branches == ("cond", "uncond")
        for c in recorder.seen
    )
    assert all(c.layer.endswith(".processor") for c in recorder.seen)


def test_processors_are_restored_when_the_block_raises():
    unet = tiny_unet(in_channels=4)
    before = {name: type(p) for name, p in unet.attn_processors.items()}
    with (
        pytest.raises(RuntimeError, match="boom"),
        attention_control(unet, Recorder(), latent_size=(8, 8)),
    ):
        raise RuntimeError("boom")
    assert {name: type(p) for name, p in unet.attn_processors.items()} == before


def test_a_controller_changes_only_what_it_claims():
    unet = tiny_unet(in_channels=4)
    plain = _forward(unet)
    with attention_control(unet, Doubler(), latent_size=(16, 12)):
        doubled = _forward(unet)
    assert not torch.allclose(plain, doubled)
    assert torch.equal(_forward(unet), plain)
