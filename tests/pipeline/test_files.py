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
