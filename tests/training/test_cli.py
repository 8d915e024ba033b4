import pytest

from instructedit.cli import main
from instructedit.testing import save_tiny_pipeline
from instructedit.training import load_run_file


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".toml", ".yaml"])
def test_train_command_from_a_config_file(tmp_path, records, capsys, suffix, make_folder_dataset):
    model = save_tiny_pipeline(tmp_path / "t2i", kind="text_to_image")
    make_folder_dataset(tmp_path / "data", records[:8])
    output = tmp_path / "run"
    if suffix == ".toml":
        text = (
            f'model = "{model}"\n[data]\nfolder = "{tmp_path / "data"}"\nsplit = "all"\n'
            f'[train]\noutput_dir = "{output}"\nresolution = 16\nbatch_size = 2\nmax_steps = 3\n'
            'checkpoint_every = 3\nlog_with = "none"\n'
        )
    else:
        text = (
            f"model: {model}\ndata:\n  folder: {tmp_path / 'data'}\n  split: all\n"
            f"train:\n  output_dir: {output}\n  resolution: 16\n  batch_size: 2\n  max_steps: 3\n"
            "  checkpoint_every: 3\n  log_with: none\n"
        )
    config = tmp_path / f"run{suffix}"
    config.write_text(text)
    assert main(["train", "--config", str(config)]) == 0
    assert capsys.readouterr().out.strip() == str(output / "pipeline")
    assert (output / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors").is_file()


def test_bad_config_files_are_explained(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('model = "x"\n')
    with pytest.raises(ValueError, match="missing 'data'"):
        load_run_file(config)
    config.write_text('model = "x"\n[data]\nfolder = "d"\n[training]\n')
    with pytest.raises(ValueError, match=r"unknown top-level keys \['training'\]"):
        load_run_file(config)
    other = tmp_path / "run.ini"
    other.write_text("x")
    with pytest.raises(ValueError, match=r"must be \.yaml"):
        load_run_file(other)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("run.toml", 'model = "x"\n[data\n', r"run\.toml: not a valid TOML file"),
        ("run.json", '{"model": "x", ', r"run\.json: not a valid JSON file"),
        ("run.yaml", "model: [x\n", r"run\.yaml: not a valid YAML file"),
        (
            "run.toml",
            'model = "x"\ndata = 3\n',
            r"run\.toml: 'data' must be a table of settings, got int",
        ),
        (
            "run.toml",
            'model = "x"\ntrain = "fast"\n[data]\nfolder = "d"\n',
            "'train' must be a table",
        ),
        (
            "run.toml",
            'model = 7\n[data]\nfolder = "d"\n',
            "'model' must be a folder or hub id, got 7",
        ),
    ],
)
def test_malformed_config_files_name_the_file(tmp_path, name, text, message):
    config = tmp_path / name
    config.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_run_file(config)


def _magicbrush_folder(root):
    """One MagicBrush session of two 16×16 turns, each with a white-square mask."""
    import json

    import numpy as np
    from PIL import Image

    folder = root / "images" / "7"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("7-input", "7-output1", "7-output2"):
        pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{name}.png")
    mask = Image.new("L", (16, 16), 0)
    mask.paste(255, (4, 4, 12, 12))
    entries = []
    for turn, instruction in ((1, "make it red"), (2, "add a hat")):
        mask.save(folder / f"7-mask{turn}.png")
        source = "7-input.png" if turn == 1 else "7-output1.png"
        entries.append(
            {
                "input": source,
                "mask": f"7-mask{turn}.png",
                "instruction": instruction,
                "output": f"7-output{turn}.png",
            }
        )
    (root / "edit_sessions.json").write_text(json.dumps({"7": entries}))
    return root


@pytest.mark.slow
def test_train_command_fine_tunes_on_magicbrush_with_local_targets(tmp_path, capsys):
    """An editor fine-tuned on MagicBrush-format data, its masks making each target local."""
    model = save_tiny_pipeline(tmp_path / "editor")
    data = _magicbrush_folder(tmp_path / "mb")
    output = tmp_path / "run"
    config = tmp_path / "run.toml"
    config.write_text(
        f'model = "{model}"\n[data]\nmagicbrush = "{data}"\nmasks = "local"\n'
        f'[train]\noutput_dir = "{output}"\nresolution = 16\nbatch_size = 2\nmax_steps = 2\n'
        'checkpoint_every = 2\nlog_with = "none"\n'
    )
    assert main(["train", "--config", str(config)]) == 0
    assert capsys.readouterr().out.strip() == str(output / "pipeline")
    assert (output / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors").is_file()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            'folder = "d"\nparquet = "p"',
            r"exactly one of 'folder', 'parquet' or 'magicbrush', got \['folder', 'parquet'\]",
        ),
        ('split = "train"', "exactly one of 'folder', 'parquet' or 'magicbrush', got none"),
        ('folder = "d"\nmasks = "local"', "data.masks applies to 'magicbrush' data only"),
        ('magicbrush = "mb"\nmasks = "use"', "masks must be 'ignore' or 'local', got 'use'"),
    ],
)
def test_bad_data_tables_are_explained_before_loading(tmp_path, data, message):
    from instructedit.training import train_from_config

    config = tmp_path / "run.toml"
    config.write_text(f'model = "x"\n[data]\n{data}\n')
    with pytest.raises(ValueError, match=message):
        train_from_config(config=config)
