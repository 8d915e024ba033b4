import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from instructedit.cli import build_parser, main
from instructedit.cli._generate import docstring_arguments
from instructedit.demo import demo_scene, run_demo


def test_demo_writes_side_by_side_image_and_prints_its_path(tmp_path, capsys):
    target = tmp_path / "sub" / "demo.png"
    assert main(["demo", "--output", str(target), "--steps", "2"]) == 0
    assert capsys.readouterr().out.strip() == str(target)
    written = Image.open(target)
    source = demo_scene()
    assert written.size == (2 * 8 * source.width, 8 * source.height)
    left = np.asarray(written)[:, : 8 * source.width]
    enlarged = source.resize((8 * source.width, 8 * source.height), Image.Resampling.NEAREST)
    assert np.array_equal(left, np.asarray(enlarged))
    assert not list(target.parent.glob(".*partial"))


def test_demo_is_reproducible_and_seed_dependent(tmp_path):
    a = np.asarray(Image.open(run_demo(tmp_path / "a.png", steps=2, seed=1)))
    b = np.asarray(Image.open(run_demo(tmp_path / "b.png", steps=2, seed=1)))
    c = np.asarray(Image.open(run_demo(tmp_path / "c.png", steps=2, seed=2)))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--instruction", "  "], "instruction must be a non-empty string"),
        (["--steps", "0"], "steps must be at least 1"),
        (["--scale", "0"], "scale must be at least 1"),
    ],
)
def test_bad_demo_arguments_exit_2_with_a_message(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--output", str(tmp_path / "x.png"), *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_options_come_from_the_typed_function():
    parser = build_parser("demo")
    args = parser.parse_args(["demo", "--steps", "7", "--instruction", "add a hat"])
    assert args.steps == 7
    assert args.instruction == "add a hat"
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--steps", "seven"])


def test_a_list_of_choices_takes_several_and_refuses_others(capsys):
    parser = build_parser("shapes")
    args = parser.parse_args(["shapes", "evaluate", "--masks", "oracle", "auto"])
    assert args.masks == ["oracle", "auto"]
    with pytest.raises(SystemExit):
        parser.parse_args(["shapes", "evaluate", "--masks", "drawn"])
    assert "invalid choice: 'drawn'" in capsys.readouterr().err


def test_docstring_arguments_are_parsed():
    def f(alpha: int, beta: str = "x") -> None:
        """Does a thing.

        Args:
            alpha: the first
                argument, wrapped.
            beta (str): the second.
        """

    summary, args = docstring_arguments(f)
    assert summary == "Does a thing."
    assert args == {"alpha": "the first argument, wrapped.", "beta": "the second."}


def test_python_dash_m_and_version():
    out = subprocess.run(
        [sys.executable, "-m", "instructedit", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.startswith("instructedit ")
