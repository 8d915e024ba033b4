import pytest
from PIL import Image

from instructedit.cli import COMMANDS, main, resolve_command
from instructedit.cli._generate import docstring_arguments
from instructedit.testing import save_tiny_pipeline


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("model") / "tiny", kind="edit")


def test_edit_command_writes_one_png_per_input(model, tmp_path, capsys):
    inputs = []
    for name, size in [("a.jpg", (40, 24)), ("b.png", (37, 30))]:
        path = tmp_path / name
        Image.new("RGB", size, "orange").save(path)
        inputs.append(str(path))
    out = tmp_path / "out"
    code = main(
        [
            "edit",
            *inputs,
            "--instruction",
            "make it snowy",
            "--output",
            str(out),
            "--model",
            str(model),
            "--steps",
            "2",
            "--scheduler",
            "ddim",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / "a.png"), str(out / "b.png")]
    assert Image.open(out / "a.png").size == (40, 24)
    assert Image.open(out / "b.png").size == (32, 24)


def test_edit_command_uses_the_model_guidance_unless_given(model, tmp_path):
    import numpy as np

    from instructedit import EditPipeline
    from instructedit.guidance import DualGuidance

    tuned = EditPipeline.from_pretrained(
        model, guidance=DualGuidance(text_scale=3.0, image_scale=1.2)
    )
    tuned_folder = tuned.save_pretrained(tmp_path / "tuned")
    image = tmp_path / "in.png"
    Image.new("RGB", (16, 16), "orange").save(image)

    def edit(folder, *scales):
        out = tmp_path / f"out-{len(list(tmp_path.iterdir()))}"
        common = ["--instruction", "make it snowy", "--steps", "2", "--output", str(out)]
        assert main(["edit", str(image), *common, "--model", str(folder), *scales]) == 0
        return np.asarray(Image.open(out / "in.png"))

    stored = edit(tuned_folder)
    np.testing.assert_array_equal(stored, edit(model, "--text-scale", "3", "--image-scale", "1.2"))
    assert not np.array_equal(stored, edit(model))  # the paper's 7.5 and 1.5 differ
    overridden = edit(tuned_folder, "--text-scale", "7.5", "--image-scale", "1.5")
    np.testing.assert_array_equal(overridden, edit(model))
    # One scale given: the other is still the model's.
    np.testing.assert_array_equal(
        edit(tuned_folder, "--text-scale", "7.5"),
        edit(model, "--text-scale", "7.5", "--image-scale", "1.2"),
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--instruction", " "], "instruction must be a non-empty string"),
        (["--instruction", "x", "--steps", "0"], "steps must be at least 1"),
        (["--instruction", "x", "--image-scale", "-1"], "image_scale must be a finite number >= 0"),
        (["--instruction", "x", "--text-scale", "nan"], "text_scale must be a finite number >= 0"),
        (["--instruction", "x", "--scheduler", "magic"], "scheduler must be one of"),
    ],
)
def test_bad_options_fail_before_loading_the_model(tmp_path, capsys, args, message):
    image = tmp_path / "in.png"
    Image.new("RGB", (16, 16)).save(image)
    # The model folder does not exist: reaching the loader would raise a different error.
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "edit",
                str(image),
                "--output",
                str(tmp_path / "o"),
                "--model",
                str(tmp_path / "none"),
                *args,
            ]
        )
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_unreadable_input_is_named(tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_text("no")
    with pytest.raises(SystemExit):
        main(
            [
                "edit",
                str(bad),
                "--instruction",
                "x",
                "--output",
                str(tmp_path / "o"),
                "--model",
                "unused",
            ]
        )
    assert "inputs[0]" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_summaries_match_their_functions(name):
    summary, _ = docstring_arguments(resolve_command(name))
    assert COMMANDS[name][1] == summary


def _edit_args(model, out, *args):
    return ["--output", str(out), "--model", str(model), "--steps", "2", *args]


def test_several_instructions_edit_in_turns_and_write_each_turn(model, tmp_path, capsys):
    import numpy as np

    from instructedit import EditPipeline, EditSession

    image = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 32, 3), np.uint8)).save(image)
    out = tmp_path / "out"
    turns = ["--instruction", "make it snowy", "--instruction", "add a sledge"]
    assert main(["edit", str(image), *turns, *_edit_args(model, out, "--seed", "4")]) == 0
    written = [out / "in-turn-1.png", out / "in-turn-2.png", out / "in.png"]
    assert capsys.readouterr().out.split() == [str(path) for path in written]

    session = EditSession(EditPipeline.from_pretrained(model), image, seed=4)
    for instruction, path in zip(["make it snowy", "add a sledge"], written, strict=False):
        expected = session.edit(instruction, num_inference_steps=2, progress=False).image
        np.testing.assert_array_equal(np.asarray(Image.open(path)), np.asarray(expected))
    np.testing.assert_array_equal(np.asarray(Image.open(out / "in.png")), np.asarray(expected))

    latent_out = tmp_path / "latents"
    args = _edit_args(model, latent_out, "--seed", "4", "--chain", "latents")
    assert main(["edit", str(image), *turns, *args]) == 0
    np.testing.assert_array_equal(
        np.asarray(Image.open(latent_out / "in-turn-1.png")), np.asarray(Image.open(written[0]))
    )
    assert not np.array_equal(
        np.asarray(Image.open(latent_out / "in.png")), np.asarray(Image.open(out / "in.png"))
    )


def test_a_mask_file_keeps_the_pixels_outside_it(model, tmp_path):
    import numpy as np

    pixels = np.random.default_rng(1).integers(0, 256, (24, 32, 3), np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in.png")
    mask = np.zeros((12, 16), np.uint8)  # half size: any size of the image's aspect ratio
    mask[:, :8] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "out"
    args = ["--mask", str(tmp_path / "mask.png"), "--keep-unmasked-pixels"]
    args += ["--instruction", "make it snowy", "--instruction", "add a sledge"]
    assert main(["edit", str(tmp_path / "in.png"), *_edit_args(model, out, *args)]) == 0
    for name in ("in-turn-1.png", "in.png"):
        edited = np.asarray(Image.open(out / name)).astype(int)
        assert np.abs(edited[:, 20:] - pixels[:, 20:]).max() <= 1  # far from the feathered edge
        assert np.abs(edited[:, :12] - pixels[:, :12]).max() > 10


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--instruction", "x", "--instruction", " "], "instruction[1] must be a non-empty string"),
        (
            ["--instruction", "x", "--mask", "none", "--keep-unmasked-pixels"],
            "keep_unmasked_pixels needs a mask",
        ),
        (["--instruction", "x", "--mask", "none.png"], "mask (none.png): no such file"),
        (["--instruction", "x", "--mask", "wide.png"], "for inputs[0]"),
    ],
)
def test_bad_turn_and_mask_options_fail_before_loading_the_model(
    tmp_path, capsys, monkeypatch, args, message
):
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (16, 16)).save("in.png")
    Image.new("L", (32, 8), 255).save("wide.png")
    with pytest.raises(SystemExit) as exit_info:
        main(["edit", "in.png", "--output", "o", "--model", str(tmp_path / "none"), *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_options_may_come_before_the_inputs():
    from instructedit.cli import build_parser

    parser = build_parser("edit")
    args = parser.parse_args(
        ["edit", "--instruction", "a", "in.png", "--instruction", "b", "--output", "out"]
    )
    assert args.instruction == ["a", "b"]
    assert [str(path) for path in args.inputs] == ["in.png"]
