"""instructedit edit's size policy on the embedded default (native size 32)."""

import logging

import numpy as np
import pytest
from PIL import Image

from instructedit.cli import main


@pytest.fixture
def photo(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.jpg"
    Image.fromarray(rng.integers(0, 256, (768, 1024, 3), dtype=np.uint8)).save(path)
    return path


def _edit(photo, output, *options):
    args = ["edit", str(photo), "--instruction", "make it snowy", "--model", "shapes"]
    return main([*args, "--steps", "2", "--output", str(output), *options])


def test_a_photo_far_above_the_native_size_is_edited_at_it_and_the_user_is_told(
    photo, tmp_path, caplog, capsys
):
    with caplog.at_level(logging.INFO):
        assert _edit(photo, tmp_path / "out") == 0
    assert "resized 1024×768 → 32×24 for this 32×32 editor; --resize keep" in caplog.text
    written = capsys.readouterr().out.split()
    assert written == [str(tmp_path / "out" / "photo.png")]
    assert Image.open(written[0]).size == (32, 24)
    assert _edit(photo, tmp_path / "restored", "--restore-size") == 0
    assert Image.open(tmp_path / "restored" / "photo.png").size == (1024, 768)


def test_dry_run_prints_the_estimate_and_edits_nothing(photo, tmp_path, capsys):
    assert _edit(photo, tmp_path / "out", "--resize", "keep", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "1024×768 pixels (768.0× the native 32×32 area)" in out
    assert "UNet evaluations" in out
    assert "peak memory about" in out
    assert not (tmp_path / "out").exists()


def test_resize_keep_logs_the_estimate_before_editing(tmp_path, caplog):
    small = tmp_path / "small.png"
    Image.new("RGB", (64, 48), "red").save(small)
    with caplog.at_level(logging.INFO):
        assert _edit(small, tmp_path / "out", "--resize", "keep") == 0
    assert "64×48 pixels (3.0× the native 32×32 area)" in caplog.text
    assert Image.open(tmp_path / "out" / "small.png").size == (64, 48)
    # Near the native size, "auto" keeps the size too, and says nothing about resizing.
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert _edit(small, tmp_path / "auto") == 0
    assert "resized" not in caplog.text
    assert Image.open(tmp_path / "auto" / "small.png").size == (64, 48)
