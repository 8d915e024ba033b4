import logging
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from instructedit.cli import build_parser, main
from instructedit.cli._generate import docstring_arguments
from instructedit.demo import demo_edits, run_demo
from instructedit.worlds.shapes import apply_edit, render


def test_demo_writes_the_four_family_grid_and_prints_its_path(tmp_path, capsys, caplog):
    target = tmp_path / "sub" / "demo.png"
    with caplog.at_level(logging.INFO, logger="instructedit.demo"):
        assert main(["demo", "--output", str(target), "--steps", "2", "--scale", "2"]) == 0
    assert capsys.readouterr().out.strip() == str(target)
    grid = np.asarray(Image.open(target).convert("RGB"))
    # Row by row: the input, then (third column) the ground truth, enlarged without smoothing,
    # at the grid's geometry (10-pixel margins, a 22-pixel header, 36 pixels of labels a row).
    side, pad, header, label = 64, 10, 22, 36
    for row, edit in enumerate(demo_edits()):
        top = header + row * (label + side + pad) + label
        for column, expected in ((0, render(edit.source)), (2, apply_edit(edit))):
            left = pad + column * (side + pad)
            tile = grid[top : top + side, left : left + side]
            enlarged = expected.resize((side, side), Image.Resampling.NEAREST)
            assert np.array_equal(tile, np.asarray(enlarged))
    assert [edit.family for edit in demo_edits()] == ["recolour", "background", "add", "remove"]
    # The honest line: examples, the measured rate, and where the numbers are.
    assert "example edits" in caplog.text
    assert "on 200 held-out scenes it succeeds in 47.5 %" in caplog.text
    assert "guides/shapes.html" in caplog.text
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
        (["--steps", "0"], "steps must be at least 1"),
        (["--scale", "0"], "scale must be at least 1"),
        (["--seed", "-1"], "seed must be an integer >= 0"),
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
    args = parser.parse_args(["demo", "--steps", "7", "--seed", "3"])
    assert args.steps == 7
    assert args.seed == 3
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
