import csv

import numpy as np
import pytest
from PIL import Image

from instructedit.cli import main
from instructedit.data import FolderSample, write_caption_folder, write_seeds_index
from instructedit.testing import save_tiny_open_clip, save_tiny_pipeline


@pytest.mark.slow
def test_evaluate_command_writes_table_and_plot(tmp_path, capsys):
    model = save_tiny_pipeline(tmp_path / "model", kind="edit")
    clip = save_tiny_open_clip(tmp_path / "clip")
    rng = np.random.default_rng(0)
    for index in range(3):
        image = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
        write_caption_folder(
            tmp_path / "data",
            index,
            {"input": "a cat", "edit": "make it red", "output": "a red cat"},
            [FolderSample(index, image, image, {})],
        )
    write_seeds_index(tmp_path / "data")
    code = main(
        [
            "evaluate",
            str(model),
            str(tmp_path / "data"),
            str(tmp_path / "eval"),
            "--clip-model",
            f"local-dir:{clip}",
            "--split",
            "all",
            "--count",
            "2",
            "--steps",
            "2",
        ]
    )
    assert code == 0
    assert capsys.readouterr().out.split() == [
        str(tmp_path / "eval" / "sweep.csv"),
        str(tmp_path / "eval" / "sweep.png"),
    ]
    rows = list(csv.DictReader((tmp_path / "eval" / "sweep.csv").open()))
    assert [float(r["image_scale"]) for r in rows] == [1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.2]
    assert all(int(r["count"]) == 2 for r in rows)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--text-scale", "nan"], "text_scale must be a finite number >= 0, got nan"),
        ([], "data: no such dataset"),
    ],
)
def test_bad_arguments_are_refused_before_any_model_loads(tmp_path, capsys, arguments, message):
    command = ["evaluate", "unused-model", str(tmp_path / "missing"), str(tmp_path / "out")]
    with pytest.raises(SystemExit):
        main(command + arguments)
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
