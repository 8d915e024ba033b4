"""The web app's handlers, called directly (the browser tests drive the page itself)."""

import random
import re

import numpy as np
import pytest
import torch
from PIL import Image

from instructedit.app import MASK_CHOICES, AppEditor
from instructedit.demo import DEMO_SCENE
from instructedit.sampling import scheduler_from_name
from instructedit.worlds.shapes import render, scene_edit


@pytest.fixture(scope="module")
def editor():
    return AppEditor.load("shapes", device="cpu")


def _value(editor, image, layers=()):
    shown = editor.display(image)
    return {"background": shown, "layers": list(layers), "composite": shown}


def _left_half_stroke(editor, image):
    """A brush stroke over the left half of the displayed image (RGBA, transparent elsewhere)."""
    shown = editor.display(image)
    layer = Image.new("RGBA", shown.size, (0, 0, 0, 0))
    layer.paste((255, 255, 255, 255), (0, 0, shown.width // 2, shown.height))
    return layer


def test_the_default_is_served_at_its_own_size_and_shown_enlarged(editor):
    assert (editor.working_side, editor.display_scale, editor.shapes) == (32, 8, True)
    scene = render(DEMO_SCENE)
    shown = editor.display(scene)
    assert shown.size == (256, 256)
    # What the page shows comes back to the pixels the model edits, exactly.
    assert np.array_equal(np.asarray(editor.fit(shown)), np.asarray(scene))
    # A photo above 4× the native area is brought to the model's size, its aspect ratio kept;
    # the page is told what was done. An image near the native size keeps its own.
    photo = Image.new("RGB", (640, 480), "red")
    assert editor.fit(photo).size == (32, 24)
    assert editor.fit(Image.new("RGB", (48, 40), "red")).size == (48, 40)
    result = editor.edit(photo, "make it blue", steps=1)
    assert result.note.startswith("resized 640×480 → 32×24 for this 32×32 editor")
    assert result.turn.image.size == (32, 24)
    assert editor.edit(_value(editor, scene), "make it blue", steps=1).note is None


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (None, "Input: no image; upload one"),
        ("not an image", "Input: not an image (str)"),
        (Image.new("RGB", (5000, 5000)), "Input: the image is 5000×5000 pixels; at most"),
        (Image.new("RGB", (4, 40)), "Input: the image is 4×40 pixels; at least 8×8"),
    ],
)
def test_unusable_inputs_get_a_message_for_the_page(editor, image, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        editor.edit(image, "make the circle blue", steps=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"instruction": "   "}, "Instruction: type what to change"),
        ({"steps": 0}, "Steps: a whole number from 1 to 500, got 0"),
        ({"steps": 2.5}, "Steps: a whole number from 1 to 500, got 2.5"),
        ({"text_scale": float("nan")}, "Text guidance: a number >= 0, got nan"),
        ({"image_scale": -1.0}, "Image guidance: a number >= 0, got -1.0"),
        ({"seed": -3}, "Seed: a whole number >= 0, got -3"),
        ({"scheduler": "fastest"}, "Scheduler: one of"),
        ({"mask": "drawn on the input"}, "Mask: draw on the input where the edit may act"),
        ({"mask": "everywhere"}, "Mask: one of"),
        ({"speed": "ludicrous"}, "Speed: one of"),
    ],
)
def test_bad_settings_get_a_message_naming_the_setting(editor, kwargs, message):
    arguments = {"instruction": "make the circle blue", "steps": 1, **kwargs}
    instruction = arguments.pop("instruction")
    with pytest.raises(ValueError, match=re.escape(message)):
        editor.edit(_value(editor, render(DEMO_SCENE)), instruction, **arguments)


def test_an_edit_of_a_bundled_scene_is_judged_by_the_oracle(editor):
    calls = []
    result = editor.edit(
        _value(editor, render(DEMO_SCENE)),
        "make the circle blue",
        steps=20,
        seed=0,
        scene=DEMO_SCENE,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(step, 20) for step in range(1, 21)]
    assert result.turn.instruction == "make the circle blue"
    assert result.turn.verdict.startswith("success: edit realised, the rest intact")
    # A success reaches the edit's target: the next turn is judged from there.
    assert result.turn.scene == scene_edit(DEMO_SCENE, "make the circle blue").target
    # The edit is the pipeline's own call at the default's stored guidance and masking.
    direct = editor.pipe(
        render(DEMO_SCENE),
        "make the circle blue",
        num_inference_steps=20,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    assert np.array_equal(np.asarray(result.turn.image), np.asarray(direct.images[0]))
    assert (result.text_scale, result.image_scale) == (5.0, 3.0)
    assert result.mask is not None  # the default stores found masks
    unread = editor.edit(
        _value(editor, render(DEMO_SCENE)), "make it snowy", steps=2, scene=DEMO_SCENE
    )
    assert unread.turn.verdict.startswith("The oracle does not read this instruction")
    assert unread.turn.scene is None
    uploaded = editor.edit(_value(editor, render(DEMO_SCENE)), "make the circle blue", steps=2)
    assert uploaded.turn.verdict is None  # no scene known: no verdict


def test_a_mask_drawn_on_the_input_is_the_pipeline_mask(editor):
    scene = render(DEMO_SCENE)
    value = _value(editor, scene, [_left_half_stroke(editor, scene)])
    image, drawn = editor.read_input(value)
    assert np.array_equal(np.asarray(image), np.asarray(scene))
    expected = np.zeros((32, 32), np.uint8)
    expected[:, :16] = 255
    assert np.array_equal(np.asarray(drawn), expected)
    assert editor.read_input(_value(editor, scene, [Image.new("RGBA", (256, 256))]))[1] is None
    result = editor.edit(
        value, "put it on a black background", steps=3, seed=1, mask=MASK_CHOICES[2]
    )
    direct = editor.pipe(
        scene,
        "put it on a black background",
        num_inference_steps=3,
        generator=torch.Generator().manual_seed(1),
        mask_image=Image.fromarray(expected),
        progress=False,
    )
    assert np.array_equal(np.asarray(result.turn.image), np.asarray(direct.images[0]))
    # "none" edits the whole image whatever the model stores.
    whole = editor.edit(value, "put it on a black background", steps=3, seed=1, mask="none")
    assert whole.mask is None


def test_a_chosen_scheduler_is_used_for_the_edit_and_the_stored_one_comes_back(editor):
    stored = editor.pipe.scheduler
    value = _value(editor, render(DEMO_SCENE))
    result = editor.edit(value, "make the circle blue", steps=4, seed=2, scheduler="ddim")
    assert editor.pipe.scheduler is stored
    editor.pipe.scheduler = scheduler_from_name("ddim", stored.config)
    try:
        direct = editor.pipe(
            render(DEMO_SCENE),
            "make the circle blue",
            num_inference_steps=4,
            generator=torch.Generator().manual_seed(2),
            progress=False,
        )
    finally:
        editor.pipe.scheduler = stored
    assert np.array_equal(np.asarray(result.turn.image), np.asarray(direct.images[0]))


def test_random_guidance_stays_near_the_stored_scales_and_scenes_follow_their_seed(editor):
    rng = random.Random(0)
    for _ in range(20):
        text, image = editor.random_guidance(rng)
        assert 4.0 <= text <= 6.0
        assert 2.4 <= image <= 3.6
    assert editor.new_scene(5).scene == editor.new_scene(5).scene
    assert editor.new_scene(5).scene != editor.new_scene(6).scene
    assert editor.new_scene(5).image.size == (32, 32)


def test_the_app_command_refuses_a_bad_port_before_loading(capsys):
    from instructedit.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["app", "--port", "70000"])
    assert exit_info.value.code == 2
    assert "port must be from 1 to 65535, got 70000" in capsys.readouterr().err


def test_a_speed_preset_is_the_pipelines_own(editor):
    value = _value(editor, render(DEMO_SCENE))
    result = editor.edit(value, "make the circle blue", steps=6, seed=3, speed="fast")
    direct = editor.pipe(
        render(DEMO_SCENE),
        "make the circle blue",
        num_inference_steps=6,
        generator=torch.Generator().manual_seed(3),
        speed="fast",
        progress=False,
    )
    assert np.array_equal(np.asarray(result.turn.image), np.asarray(direct.images[0]))
