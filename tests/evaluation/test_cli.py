import csv
import json

import numpy as np
import pytest
from PIL import Image

from instructedit.cli import main
from instructedit.data import FolderSample, write_caption_folder, write_seeds_index
from instructedit.testing import save_tiny_open_clip, save_tiny_pipeline


def _evaluation_inputs(tmp_path, kind="edit"):
    model = save_tiny_pipeline(tmp_path / "model", kind=kind)
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
    return model, clip


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["edit", "edit_xl"])
def test_evaluate_command_writes_table_and_plot(tmp_path, capsys, kind):
    model, clip = _evaluation_inputs(tmp_path, kind)
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


@pytest.mark.slow
def test_two_processes_share_the_sweep_and_write_it_once(tmp_path):
    import os
    import subprocess
    import sys

    model, clip = _evaluation_inputs(tmp_path)
    arguments = ["evaluate", str(model), str(tmp_path / "data")]
    options = [
        "--clip-model",
        f"local-dir:{clip}",
        "--split",
        "all",
        "--count",
        "3",
        "--steps",
        "2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    launch += ["--master_addr", "127.0.0.1", "--master_port", "29518", "-m", "instructedit"]
    results = {}
    for name, start in (("one", [sys.executable, "-m", "instructedit"]), ("two", launch)):
        run = subprocess.run(
            [*start, *arguments, str(tmp_path / name), *options],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        assert run.stdout.split().count(str(tmp_path / name / "sweep.csv")) == 1  # one writer
        results[name] = list(csv.DictReader((tmp_path / name / "sweep.csv").open()))
    assert [int(r["count"]) for r in results["two"]] == [3] * 7
    # Each process edits its examples in a smaller batch, which moves pixels by float rounding;
    # the direction (a cosine of differences of near-equal features) magnifies it.
    for two, one in zip(results["two"], results["one"], strict=True):
        assert float(two["image_similarity"]) == pytest.approx(
            float(one["image_similarity"]), abs=1e-5
        )
        assert float(two["direction_similarity"]) == pytest.approx(
            float(one["direction_similarity"]), abs=1e-4
        )


def _magicbrush_folder(root):
    """MagicBrush's dev/test layout: 2 sessions × 2 turns of 16×16 PNGs."""
    rng = np.random.default_rng(0)
    sessions, local = {}, {}
    for session_id in ("101", "202"):
        folder = root / "images" / session_id
        folder.mkdir(parents=True)
        names = [
            f"{session_id}-input.png",
            f"{session_id}-output1.png",
            f"{session_id}-output2.png",
        ]
        for name in names:
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / name)
        sessions[session_id] = [
            {"input": names[turn - 1], "instruction": f"edit {turn}", "output": names[turn]}
            for turn in (1, 2)
        ]
        local[session_id] = {names[1]: "a red cat", names[2]: "a red cat with a hat"}
    (root / "edit_sessions.json").write_text(json.dumps(sessions))
    (root / "local_descriptions.json").write_text(json.dumps(local))
    return root


@pytest.mark.slow
def test_evaluate_command_runs_the_magicbrush_protocol(tmp_path, capsys):
    from transformers import ViTConfig, ViTModel

    model = save_tiny_pipeline(tmp_path / "model", kind="edit")
    clip = save_tiny_open_clip(tmp_path / "clip")
    config = ViTConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=224,
        patch_size=32,
    )
    ViTModel(config, add_pooling_layer=False).save_pretrained(tmp_path / "dino")
    data = _magicbrush_folder(tmp_path / "test")
    code = main(
        [
            "evaluate",
            str(model),
            str(data),
            str(tmp_path / "eval"),
            "--protocol",
            "magicbrush",
            "--clip-model",
            f"local-dir:{clip}",
            "--dino-model",
            str(tmp_path / "dino"),
            "--turns",
            "single",
            "--steps",
            "2",
        ]
    )
    assert code == 0
    assert capsys.readouterr().out.split() == [
        str(tmp_path / "eval" / "magicbrush.json"),
        str(tmp_path / "eval" / "magicbrush.csv"),
    ]
    summary = json.loads((tmp_path / "eval" / "magicbrush.json").read_text())
    assert summary["turns"] == "single"
    assert summary["all_turns"]["count"] == 4
    assert summary["final_turn"]["count"] == 2
    for name in ("l1", "l2", "clip_i", "clip_t", "clip_t_oracle", "dino"):
        assert summary["all_turns"][name] is not None
    assert summary["settings"]["steps"] == 2
    assert (tmp_path / "eval" / "images" / "202" / "202_inde_2.png").is_file()
    rows = list(csv.DictReader((tmp_path / "eval" / "magicbrush.csv").open()))
    assert len(rows) == 4


def test_magicbrush_protocol_refuses_bad_data_before_any_model_loads(tmp_path, capsys):
    data = _magicbrush_folder(tmp_path / "test")
    (data / "images" / "101" / "101-output2.png").unlink()
    command = ["evaluate", "unused-model", str(data), str(tmp_path / "out")]
    with pytest.raises(SystemExit):
        main([*command, "--protocol", "magicbrush"])
    assert "session 101 turn 2: missing output" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*command, "--protocol", "magicbrush", "--dino-model", str(tmp_path / "nowhere")])
    assert "dino_model: no such model folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
