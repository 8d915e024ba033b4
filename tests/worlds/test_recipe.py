import json

import pytest

from instructedit.cli import main
from instructedit.worlds.recipe import STAGES, RecipeConfig


@pytest.mark.slow
def test_smoke_recipe_runs_every_stage_and_resumes(tmp_path, capsys):
    output = tmp_path / "shapes"
    assert main(["shapes", "reproduce", "--output", str(output), "--smoke"]) == 0
    summary = json.loads((output / "summary.json").read_text())
    assert list(summary) == list(STAGES)
    assert (output / "text_to_image" / "model" / "model_index.json").is_file()
    assert (output / "clip" / "model" / "open_clip_config.json").is_file()
    assert (output / "editor" / "model" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    oracle = summary["evaluate"]["oracle"]
    assert set(oracle) == {"recolour", "background", "add", "remove"}
    assert all(0.0 <= family["realised"] <= 1.0 for family in oracle.values())
    assert sum(family["count"] for family in oracle.values()) == RecipeConfig.smoke().eval_scenes
    capsys.readouterr()
    # A second run finds every stage done and does no work.
    assert main(["shapes", "reproduce", "--output", str(output), "--smoke"]) == 0
    again = json.loads((output / "summary.json").read_text())
    assert again == summary
