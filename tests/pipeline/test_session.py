import json

import numpy as np
import pytest
import torch
from PIL import Image

from instructedit import EditPipeline, EditSession
from instructedit.images import pil_to_tensor, tensor_to_output
from instructedit.pipeline import Turn
from instructedit.testing import tiny_components

STEPS = 2


@pytest.fixture(scope="module")
def pipe():
    return EditPipeline(**tiny_components(seed=0))


def _call(pipe, image, instruction, **kwargs):
    """One pipeline call as a session makes it: seed 0, two steps."""
    return pipe(
        image,
        instruction,
        num_inference_steps=STEPS,
        generator=torch.Generator().manual_seed(kwargs.pop("seed", 0)),
        progress=False,
        **kwargs,
    )


def _edit(session, instruction, **kwargs):
    return session.edit(instruction, num_inference_steps=STEPS, progress=False, **kwargs)


def _same(first, second):
    np.testing.assert_array_equal(np.asarray(first), np.asarray(second))


def test_image_latents_equal_encoding_the_image(pipe, noise_image):
    encoded = pipe.encode_image(pil_to_tensor([noise_image]))
    given = _call(pipe, noise_image, "make it snowy", image_latents=encoded, output_type="latent")
    plain = _call(pipe, noise_image, "make it snowy", output_type="latent")
    torch.testing.assert_close(given.images, plain.images, rtol=0, atol=0)
    other = _call(
        pipe, noise_image, "make it snowy", image_latents=encoded.flip(-1), output_type="latent"
    )
    assert (other.images - plain.images).abs().max() > 1e-3


@pytest.mark.parametrize("shape", [(1, 4, 12), (1, 4, 6, 8), (2, 4, 12, 16), (1, 3, 12, 16)])
def test_image_latents_of_another_shape_are_refused(pipe, noise_image, shape):
    with pytest.raises(ValueError, match=r"image_latents must have shape \(1, 4, 12, 16\)"):
        _call(pipe, noise_image, "make it snowy", image_latents=torch.zeros(shape))


def test_two_turns_chained_in_pixels_equal_two_pipeline_calls(pipe, noise_image):
    session = EditSession(pipe, noise_image, seed=3)
    first = _edit(session, "make it snowy")
    second = _edit(session, "add a sledge", guidance_scale=5.0)

    by_hand = _call(pipe, noise_image, "make it snowy", seed=3).images[0]
    by_hand = _call(pipe, by_hand, "add a sledge", seed=3, guidance_scale=5.0).images[0]
    _same(first.image, _call(pipe, noise_image, "make it snowy", seed=3).images[0])
    _same(second.image, by_hand)
    _same(session.current, by_hand)
    assert (first.parent, second.parent) == (None, 0)
    assert first.latents is None
    assert first.mask is None
    assert second.settings == {
        "num_inference_steps": STEPS,
        "guidance_scale": 5.0,
        "image_guidance_scale": 1.5,  # the pipeline's stored guidance, resolved
        "seed": 3,
        "mask": None,
        "keep_unmasked_pixels": False,
    }
    json.dumps(second.settings)


def test_latent_chaining_feeds_the_final_latents_unscaled_as_the_next_condition(pipe, noise_image):
    session = EditSession(pipe, noise_image, chain="latents")
    first = _edit(session, "make it snowy")
    second = _edit(session, "add a sledge")

    scaling = pipe.vae.config.scaling_factor
    final = _call(pipe, noise_image, "make it snowy", output_type="latent").images
    torch.testing.assert_close(first.latents, final, rtol=0, atol=0)
    _same(first.image, _call(pipe, noise_image, "make it snowy").images[0])
    by_hand = _call(
        pipe, first.image, "add a sledge", image_latents=final / scaling, output_type="latent"
    ).images
    torch.testing.assert_close(second.latents, by_hand, rtol=0, atol=0)
    _same(second.image, tensor_to_output(pipe.decode_latents(by_hand), "pil")[0])

    pixels = EditSession(pipe, noise_image)
    _edit(pixels, "make it snowy")
    in_pixels = _edit(pixels, "add a sledge")
    _same(pixels.turns[0].image, first.image)  # the first turn is the same either way
    assert np.abs(np.asarray(in_pixels.image, float) - np.asarray(second.image, float)).max() > 0


def test_going_back_branches_a_tree(pipe, noise_image):
    session = EditSession(pipe, noise_image)
    _edit(session, "make it snowy")  # 0
    _edit(session, "add a sledge")  # 1
    session.go_to(0)
    _same(session.current, session.turns[0].image)
    _edit(session, "add a snowman")  # 2, a second branch from 0
    session.back()
    session.back()
    assert session.current_index is None
    _same(session.current, noise_image)
    _edit(session, "make it rainy", seed=1)  # 3, a new root
    session.go_to(-1)
    assert session.current is session.original

    assert [turn.parent for turn in session.turns] == [None, 0, 0, None]
    assert [turn.index for turn in session.path(1)] == [0, 1]
    assert [turn.index for turn in session.path(2)] == [0, 2]
    assert session.path(None) == []
    assert session.history() == []
    session.go_to(2)
    assert [turn.instruction for turn in session.history()] == ["make it snowy", "add a snowman"]
    assert session.turns[3].settings["seed"] == 1


def test_a_turn_with_a_mask_keeps_it(pipe, noise_image):
    mask = np.zeros((24, 32), np.uint8)
    mask[:, :16] = 255
    session = EditSession(pipe, noise_image)
    turn = _edit(session, "make it snowy", mask_image=mask, keep_unmasked_pixels=True)
    assert turn.mask.mode == "L"
    assert turn.mask.size == (32, 24)
    _same(turn.mask, mask)
    assert turn.settings["mask"] == "given"
    assert turn.settings["keep_unmasked_pixels"] is True
    by_hand = _call(pipe, noise_image, "make it snowy", mask_image=mask, keep_unmasked_pixels=True)
    _same(turn.image, by_hand.images[0])
    assert _edit(session, "add a sledge", mask_image="auto").settings["mask"] == "auto"


@pytest.mark.parametrize("chain", ["pixels", "latents"])
def test_save_and_load_keep_the_session_and_it_continues(pipe, noise_image, tmp_path, chain):
    mask = np.zeros((24, 32), np.uint8)
    mask[:12] = 255
    session = EditSession(pipe, noise_image, seed=5, chain=chain)
    _edit(session, "make it snowy")
    _edit(session, "add a sledge", mask_image=mask)
    session.go_to(0)
    _edit(session, "add a snowman", image_guidance_scale=1.2)
    folder = session.save(tmp_path / "session")
    assert not (tmp_path / ".session.partial").exists()
    names = sorted(path.name for path in folder.iterdir())
    expected = ["original.png", "session.json", "turn-0000.png", "turn-0001-mask.png"]
    expected += ["turn-0001.png", "turn-0002.png"]
    if chain == "latents":
        expected += [f"turn-000{i}.safetensors" for i in range(3)]
    assert names == sorted(expected)

    loaded = EditSession.load(folder, pipe)
    assert (loaded.seed, loaded.chain, loaded.current_index) == (5, chain, 2)
    _same(loaded.original, session.original)
    for before, after in zip(session.turns, loaded.turns, strict=True):
        assert (after.index, after.parent, after.instruction) == (
            before.index,
            before.parent,
            before.instruction,
        )
        assert after.settings == before.settings
        _same(after.image, before.image)
        assert (after.mask is None) == (before.mask is None)
        if before.mask is not None:
            _same(after.mask, before.mask)
        if chain == "latents":
            torch.testing.assert_close(after.latents, before.latents, rtol=0, atol=0)
        else:
            assert after.latents is None

    # Both continue alike; saving again replaces the earlier save.
    _same(_edit(loaded, "make it night").image, _edit(session, "make it night").image)
    loaded.save(folder)
    assert len(EditSession.load(folder, pipe).turns) == 4


def _saved(pipe, noise_image, folder):
    session = EditSession(pipe, noise_image)
    _edit(session, "make it snowy")
    _edit(session, "add a sledge")
    return session.save(folder)


def test_a_missing_turn_file_is_named(pipe, noise_image, tmp_path):
    folder = _saved(pipe, noise_image, tmp_path / "s")
    (folder / "turn-0001.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"turn 1: .*turn-0001\.png is missing"):
        EditSession.load(folder, pipe)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda text: "{not json", r"session\.json is not valid JSON"),
        (lambda text: text.replace('"version": 1', '"version": 99'), "version 99 is not one"),
        (lambda text: text.replace('"parent": 0', '"parent": 4'), "turn 1: parent must be"),
        (lambda text: text.replace('"chain": "pixels"', '"chain": "magic"'), "chain must be"),
        (lambda text: text.replace('"instruction": "add a sledge"', '"instruction": 3'), "turn 1"),
    ],
)
def test_a_malformed_session_file_is_refused(pipe, noise_image, tmp_path, change, message):
    folder = _saved(pipe, noise_image, tmp_path / "s")
    manifest = folder / "session.json"
    manifest.write_text(change(manifest.read_text()))
    with pytest.raises(ValueError, match=message):
        EditSession.load(folder, pipe)


def test_saving_over_a_folder_that_is_not_a_session_is_refused(pipe, noise_image, tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "keep.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a saved session"):
        EditSession(pipe, noise_image).save(tmp_path / "photos")
    assert (tmp_path / "photos" / "keep.jpg").exists()


def test_bad_input_is_named(pipe, noise_image, tmp_path):
    with pytest.raises(TypeError, match="pipe must be an EditPipeline, got dict"):
        EditSession({}, noise_image)
    with pytest.raises(TypeError, match="pipe must be an EditPipeline"):
        EditSession.load(tmp_path, "pipe")
    with pytest.raises(ValueError, match="chain must be one of"):
        EditSession(pipe, noise_image, chain="voxels")
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        EditSession(pipe, noise_image, seed=-1)
    session = EditSession(pipe, noise_image)
    with pytest.raises(ValueError, match="instruction must be a non-empty string"):
        session.edit("  ")
    with pytest.raises(ValueError, match=r"turn must be -1 or None .* got 0: the session has 0"):
        session.go_to(0)
    with pytest.raises(ValueError, match="already"):
        session.back()
    with pytest.raises(ValueError, match="generator is set by the session"):
        session.edit("make it snowy", generator=torch.Generator())
    with pytest.raises(TypeError, match="latents_hook must be a str, number, bool or None"):
        session.edit("make it snowy", latents_hook=print)
    _edit(session, "make it snowy")
    with pytest.raises(ValueError, match=r"turn must be 0 to 0, -1 or None .* got 3"):
        session.path(3)
    with pytest.raises(FileNotFoundError, match=r"holds no session\.json"):
        EditSession.load(tmp_path, pipe)
    with pytest.raises(ValueError, match="parent must be None or an earlier turn"):
        Turn(index=1, parent=1, instruction="x", settings={}, image=Image.new("RGB", (8, 8)))
