"""Replacing a folder by two renames, and finishing a replacement a kill interrupted."""

from pathlib import Path

import pytest

from instructedit._files import recover_dir, replace_dir, swap_dirs


def _folder(path: Path, text: str) -> Path:
    path.mkdir(parents=True)
    (path / "weights.bin").write_text(text)
    return path


def _text(path: Path) -> str:
    return (path / "weights.bin").read_text()


def test_replace_swaps_in_the_staging_folder_and_leaves_nothing_beside(tmp_path):
    target = tmp_path / "model"
    staging, retired = swap_dirs(target)
    assert staging.parent == retired.parent == tmp_path
    assert staging.name.startswith(".")
    assert retired.name.startswith(".")
    _folder(staging, "first")
    assert replace_dir(target) == target
    assert _text(target) == "first"
    _folder(staging, "second")
    replace_dir(target)
    assert _text(target) == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    with pytest.raises(FileNotFoundError, match="nothing to move"):
        replace_dir(target)
    assert _text(target) == "second"


def test_a_kill_between_the_renames_is_finished_with_the_new_folder(tmp_path, monkeypatch):
    target = _folder(tmp_path / "model", "old")
    staging, retired = swap_dirs(target)
    _folder(staging, "new")
    renames = []
    real_rename = Path.rename

    def killed_after_the_first(self, other):
        if renames:
            raise KeyboardInterrupt  # the kill
        renames.append(other)
        return real_rename(self, other)

    monkeypatch.setattr(Path, "rename", killed_after_the_first)
    with pytest.raises(KeyboardInterrupt):
        replace_dir(target)
    monkeypatch.undo()
    assert not target.exists()
    assert retired.is_dir()
    assert staging.is_dir()
    recover_dir(target)
    assert _text(target) == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_recover_gives_the_old_folder_back_or_drops_a_cut_short_write(tmp_path):
    target = tmp_path / "model"
    staging, retired = swap_dirs(target)
    _folder(retired, "old")  # set aside, and no staging folder to take its place
    recover_dir(target)
    assert _text(target) == "old"
    assert not retired.exists()
    _folder(staging, "half")  # a write killed before any rename: the target is intact
    recover_dir(target)
    assert _text(target) == "old"
    assert not staging.exists()
    recover_dir(tmp_path / "never-written")  # nothing to do
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
