import json
import os

import pytest
import torch

from instructedit.checkpoints import (
    check_settings,
    differing_settings,
    publish_dir,
    save_torch_atomic,
    write_json_atomic,
)


def test_a_checkpoint_with_other_settings_is_refused_naming_each_setting(tmp_path):
    recorded = {"learning_rate": 1e-4, "batch_size": 8, "seed": 0, "only_there": 1}
    current = {"learning_rate": 5e-5, "batch_size": 8, "seed": 1, "only_here": 2}
    assert differing_settings(recorded, current) == [
        "learning_rate 0.0001 there, 5e-05 here",
        "seed 0 there, 1 here",
    ]
    with pytest.raises(
        ValueError,
        match=r"checkpoint .*state.pt was written by a run with other settings \(learning_rate 0.0001 there, 5e-05 here, seed 0 there, 1 here\): delete it",
    ):
        check_settings(recorded, current, checkpoint=tmp_path / "state.pt")
    check_settings(recorded, {"batch_size": 8, "new_setting": 3}, checkpoint=tmp_path / "x")


def test_atomic_writes_leave_no_staging_files(tmp_path):
    write_json_atomic(tmp_path / "a" / "DONE.json", {"step": 3})
    assert json.loads((tmp_path / "a" / "DONE.json").read_text()) == {"step": 3}
    save_torch_atomic({"w": torch.ones(2)}, tmp_path / "b" / "state.pt")
    assert torch.equal(torch.load(tmp_path / "b" / "state.pt")["w"], torch.ones(2))
    assert sorted(os.listdir(tmp_path / "a")) == ["DONE.json"]
    assert sorted(os.listdir(tmp_path / "b")) == ["state.pt"]


def test_publish_dir_replaces_an_older_checkpoint_of_the_same_name(tmp_path):
    final = tmp_path / "step-0000002"
    final.mkdir()
    (final / "old.txt").write_text("old")
    staging = tmp_path / ".step-0000002.partial"
    staging.mkdir()
    (staging / "new.txt").write_text("new")
    assert publish_dir(staging, final) == final
    assert sorted(os.listdir(final)) == ["new.txt"]
    assert not staging.exists()
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        publish_dir(staging, final)
