import pytest

from instructedit._cache import cache_dir, materialize_dir


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("INSTRUCTEDIT_CACHE", str(tmp_path / "a"))
    assert cache_dir() == tmp_path / "a"
    monkeypatch.delenv("INSTRUCTEDIT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "instructedit"


def test_failed_build_leaves_nothing_and_retry_succeeds(tmp_path):
    target = tmp_path / "thing"

    def broken(path):
        (path / "half.txt").write_text("partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        materialize_dir(target, broken, marker="done")
    assert list(tmp_path.iterdir()) == []

    calls = []

    def good(path):
        calls.append(path)
        (path / "done").write_text("ok")

    assert materialize_dir(target, good, marker="done") == target
    assert materialize_dir(target, good, marker="done") == target
    assert len(calls) == 1
    assert (target / "done").read_text() == "ok"


def test_incomplete_leftover_is_replaced(tmp_path):
    target = tmp_path / "thing"
    target.mkdir()
    (target / "stale").write_text("x")
    materialize_dir(target, lambda p: (p / "done").write_text("ok"), marker="done")
    assert sorted(p.name for p in target.iterdir()) == ["done"]


def test_builder_must_write_its_marker(tmp_path):
    with pytest.raises(RuntimeError, match="marker"):
        materialize_dir(tmp_path / "t", lambda p: None, marker="done")
