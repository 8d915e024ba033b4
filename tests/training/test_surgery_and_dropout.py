import pytest
import torch

from instructedit.testing import tiny_text_encoder, tiny_unet
from instructedit.training import conditioning_dropout, to_edit_unet


def test_edit_unet_predicts_exactly_what_the_text_to_image_unet_does():
    original = tiny_unet(in_channels=4, seed=3)
    before = {k: v.clone() for k, v in original.state_dict().items()}
    edit = to_edit_unet(original)
    assert edit.config.in_channels == 8
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 8, 8, generator=g)
    image_latents = torch.randn(2, 4, 8, 8, generator=g) * 5
    text = torch.randn(2, 77, 32, generator=g)
    with torch.no_grad():
        expected = original(latents, 10, text).sample
        got = edit(torch.cat([latents, image_latents], dim=1), 10, text).sample
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in original.state_dict().items())  # untouched
    assert torch.equal(edit.conv_in.weight[:, 4:], torch.zeros_like(edit.conv_in.weight[:, 4:]))


def test_copy_init_feeds_the_image_latent_through_the_noisy_latent_weights():
    # With init="copy", conv_in sees latents + scale * image latent through the same weights, so
    # the edit UNet on (x, c) equals the original on x + scale * c (conv_in is linear).
    original = tiny_unet(in_channels=4, seed=3)
    edit = to_edit_unet(original, init="copy", image_scale=0.25)
    weight = original.conv_in.weight
    torch.testing.assert_close(edit.conv_in.weight[:, :4], weight, rtol=0, atol=0)
    torch.testing.assert_close(edit.conv_in.weight[:, 4:], weight * 0.25, rtol=0, atol=0)
    g = torch.Generator().manual_seed(1)
    latents, image_latents = (
        torch.randn(2, 4, 8, 8, generator=g),
        torch.randn(2, 4, 8, 8, generator=g),
    )
    text = torch.randn(2, 77, 32, generator=g)
    with torch.no_grad():
        expected = original(latents + 0.25 * image_latents, 10, text).sample
        got = edit(torch.cat([latents, image_latents], dim=1), 10, text).sample
        blind = to_edit_unet(original)(torch.cat([latents, image_latents], dim=1), 10, text).sample
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert (got - blind).abs().max() > 1e-2  # the zero init ignores the image; copy does not


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"init": "ones"}, "init must be"), ({"init": "copy", "image_scale": float("nan")}, "finite")],
)
def test_bad_init_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        to_edit_unet(tiny_unet(in_channels=4), **kwargs)


def test_existing_edit_unet_is_copied_for_fine_tuning():
    unet = tiny_unet(in_channels=8, seed=1)
    copy = to_edit_unet(unet)
    assert copy is not unet
    assert all(
        torch.equal(a, b)
        for a, b in zip(unet.state_dict().values(), copy.state_dict().values(), strict=True)
    )


def test_other_channel_counts_are_rejected():
    unet = tiny_unet(in_channels=4)
    unet.register_to_config(in_channels=5)
    with pytest.raises(ValueError, match="must be 4"):
        to_edit_unet(unet)


def test_dropout_fractions_follow_the_official_rule():
    n, p = 40_000, 0.05
    text = torch.randn(n, 3, 2)
    image = torch.randn(n, 1, 2, 2)
    result = conditioning_dropout(
        text, image, torch.zeros(1, 3, 2), p, generator=torch.Generator().manual_seed(0)
    )
    text_only = (result.text_dropped & ~result.image_dropped).float().mean().item()
    both = (result.text_dropped & result.image_dropped).float().mean().item()
    image_only = (~result.text_dropped & result.image_dropped).float().mean().item()
    bound = 5 * (p * (1 - p) / n) ** 0.5  # five binomial standard deviations
    for fraction in (text_only, both, image_only):
        assert abs(fraction - p) < bound
    assert (
        abs((~result.text_dropped & ~result.image_dropped).float().mean().item() - (1 - 3 * p))
        < bound
    )


def test_dropped_conditions_are_exactly_the_empty_prompt_and_zeros():
    encoder = tiny_text_encoder(seed=0)
    from instructedit.testing import clip_tokenizer

    tokenizer = clip_tokenizer()
    with torch.no_grad():
        empty = encoder(tokenizer([""], padding="max_length", return_tensors="pt").input_ids)[0]
        text = encoder(
            tokenizer(["make it red"] * 64, padding="max_length", return_tensors="pt").input_ids
        )[0]
    image = torch.randn(64, 4, 4, 4)
    result = conditioning_dropout(
        text, image, empty, 0.3, generator=torch.Generator().manual_seed(1)
    )
    assert result.text_dropped.any()
    assert result.image_dropped.any()
    for row in range(64):
        expected_text = empty[0] if result.text_dropped[row] else text[row]
        assert torch.equal(result.text[row], expected_text)
        expected_image = torch.zeros_like(image[row]) if result.image_dropped[row] else image[row]
        assert torch.equal(result.image[row], expected_image)
    with pytest.raises(ValueError, match="probability"):
        conditioning_dropout(text, image, empty, 0.5)
