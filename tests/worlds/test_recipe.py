import json
import random

import pytest
import torch
from PIL import Image

from instructedit.cli import main
from instructedit.worlds.recipe import STAGES, RecipeConfig, reproduce


@pytest.mark.slow
def test_smoke_recipe_runs_every_stage_and_resumes(tmp_path, capsys, caplog):
    output = tmp_path / "shapes"
    # Stop after the CLIP stage, then continue: the done stages are not rerun.
    first = reproduce(RecipeConfig.smoke(str(output)), until="clip", progress=False)
    assert list(first) == ["text_to_image", "clip"]
    assert (output / "text_to_image" / "autoencoder" / "losses.json").is_file()
    # The decoder was fine-tuned alone: the model's VAE has the autoencoder's encoder.
    from safetensors.torch import load_file

    def vae_weights(folder):
        return load_file(folder / "diffusion_pytorch_model.safetensors")

    joint = vae_weights(output / "text_to_image" / "autoencoder")
    shipped = vae_weights(output / "text_to_image" / "model" / "vae")
    assert json.loads((output / "text_to_image" / "decoder" / "losses.json").read_text())
    assert all(torch.equal(shipped[k], v) for k, v in joint.items() if k.startswith("encoder."))
    assert not all(torch.equal(shipped[k], v) for k, v in joint.items() if k.startswith("decoder."))
    assert main(["shapes", "reproduce", "--output", str(output), "--smoke"]) == 0
    summary = json.loads((output / "summary.json").read_text())
    assert list(summary) == list(STAGES)
    assert summary["clip"] == first["clip"]
    assert (output / "text_to_image" / "model" / "model_index.json").is_file()
    assert (output / "clip" / "model" / "open_clip_config.json").is_file()
    assert (output / "editor" / "model" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (output / "editor" / "model-3" / "model_index.json").is_file()  # the ablations' step

    smoke = RecipeConfig.smoke()
    # Every candidate and each training set were read back against their captions.
    read_back = summary["pairs"]["read_back"]
    # The smoke recipe checks the structure (at threshold 0): the CLIP-only choice is read back.
    assert set(read_back) == {"candidates", "filtered", "unfiltered", "fewer", "clip_only"}
    assert read_back["candidates"]["all"]["count"] == summary["pairs"]["candidates"]
    assert 0.0 <= read_back["filtered"]["all"]["correct"] <= 1.0
    assert "Pairs read back" in (output / "report" / "report.rst").read_text()
    # The guidance stage judged every setting of the grid on validation edits (not the test
    # edits) and chose the highest success, ties to the lower unchanged-region error.
    from instructedit.guidance import DualGuidance, load_guidance_config
    from instructedit.worlds.recipe import PAPER_GUIDANCE_ROW

    guidance = summary["guidance"]
    assert guidance["seed"] == smoke.seed + smoke.guidance_seed_offset != smoke.seed
    grid = guidance["grid"]
    assert [(row["text_scale"], row["image_scale"]) for row in grid] == [(7.5, 1.5), (7.5, 2.5)]
    assert all(row["oracle"]["all"]["count"] == smoke.guidance_scenes for row in grid)
    best = max(
        grid,
        key=lambda row: (row["oracle"]["all"]["success"], -row["oracle"]["all"]["unchanged_error"]),
    )
    chosen = DualGuidance(text_scale=best["text_scale"], image_scale=best["image_scale"])
    assert (guidance["text_scale"], guidance["image_scale"]) == (
        best["text_scale"],
        best["image_scale"],
    )
    assert load_guidance_config(output / "guidance") == chosen
    assert load_guidance_config(output / "editor" / "model") == chosen  # loading it edits at it
    assert summary["evaluate"]["guidance"] == {
        "text_scale": chosen.text_scale,
        "image_scale": chosen.image_scale,
    }
    assert (
        f"s_T {chosen.text_scale:g}, s_I {chosen.image_scale:g}"
        in (output / "report" / "report.rst").read_text()
    )
    # Two values of s_I were tried: the choice is one of the grid's ends, and said to be; s_T,
    # tried at one value, is not an edge.
    edge = "largest" if chosen.image_scale == 2.5 else "smallest"
    assert guidance["edges"] == [f"s_I = {chosen.image_scale:g} is the {edge} tried"]
    assert any(
        record.levelname == "WARNING" and "on the grid's edge" in record.getMessage()
        for record in caplog.records
    )
    assert "on the grid's edge: s_I = " in (output / "report" / "report.rst").read_text()
    methods = summary["evaluate"]["methods"]
    paper_row = {PAPER_GUIDANCE_ROW} if chosen != DualGuidance() else set()
    assert set(methods) == {
        "editor",
        "identity",
        "ground truth, autoencoded",
        "sdedit-0.6",
        *paper_row,
    }
    for scores in methods.values():
        assert set(scores["oracle"]) == {"recolour", "background", "add", "remove", "all"}
        assert scores["oracle"]["all"]["count"] == smoke.eval_scenes
        assert 0.0 <= scores["oracle"]["all"]["success"] <= 1.0
    assert methods["identity"]["clip"]["image_similarity"] == pytest.approx(1.0, abs=1e-5)
    assert [p["image_scale"] for p in summary["evaluate"]["sweep"]] == [1.0, 2.0]
    for name in ("grid.png", "sweep.png", "sweep.csv"):
        assert (output / "evaluate" / name).is_file()
    runs = summary["ablations"]["runs"]
    assert set(runs) == {
        "full",
        "no_clip_filter",
        "fewer_pairs",
        "ground_truth",
        "ground_truth_large",
        "zero_init",
    }
    assert runs["fewer_pairs"]["examples"] < runs["no_clip_filter"]["examples"]
    assert runs["ground_truth"]["examples"] == runs["full"]["examples"]
    assert runs["zero_init"]["examples"] == runs["full"]["examples"]
    assert runs["ground_truth_large"]["examples"] == smoke.ground_truth_large_pairs

    # The editor's image channels start as the noisy-latent weights × the VAE scale ("copy");
    # the zero_init ablation's start at zero. Three Adam steps at 3e-4 move a weight ≤ 1e-3.
    def conv_in(folder):
        path = folder / "unet" / "diffusion_pytorch_model.safetensors"
        return load_file(path)["conv_in.weight"]

    scale = json.loads((output / "text_to_image" / "model" / "vae" / "config.json").read_text())[
        "scaling_factor"
    ]
    copied = conv_in(output / "editor" / "model-3")
    assert (copied[:, 4:] - copied[:, :4] * scale).abs().max() < 5e-3
    assert copied[:, 4:].abs().max() > 5e-2
    assert conv_in(output / "ablations" / "zero_init" / "model")[:, 4:].abs().max() < 5e-3
    report = (output / "report" / "report.rst").read_text()
    assert "Ablations (3 training steps each)" in report
    assert "sdedit-0.6" in report

    # The editor learns what the config asks (the exported scheduler samples it).
    from dataclasses import replace

    from instructedit.worlds.recipe import editor_trainer
    from instructedit.worlds.shapes import edit_record, random_edit, random_scene

    scheduler = json.loads(
        (output / "editor" / "model" / "scheduler" / "scheduler_config.json").read_text()
    )
    assert scheduler["prediction_type"] == "epsilon"
    v_config = replace(RecipeConfig.smoke(str(output)), editor_prediction_type="v_prediction")
    scenes = random.Random(0)
    edits = [random_edit(random_scene(scenes), scenes) for _ in range(8)]
    records = [edit_record(edit) for edit in edits if edit is not None]
    trainer = editor_trainer(v_config, output, records, tmp_path / "v", 1)
    assert trainer.noise_scheduler.config.prediction_type == "v_prediction"

    # Extra guidance sets: the same caption edits and seeds rendered again at a fixed scale,
    # pooled by the filter (a run reusing this one's models).
    import shutil

    from instructedit.data import folder_index, load_folder_sample
    from instructedit.worlds.recipe import load_selection

    pooled = tmp_path / "pooled"
    for stage in ("text_to_image", "clip"):
        shutil.copytree(output / stage, pooled / stage)
    pooled_config = replace(RecipeConfig.smoke(str(pooled)), pair_extra_guidance=(3.0,))
    record = reproduce(pooled_config, until="pairs", progress=False)["pairs"]
    first, extra = pooled / "pairs" / "candidates", pooled / "pairs" / "candidates-g3"
    assert folder_index(extra) == folder_index(first)
    assert {load_folder_sample(extra, *e).metadata["cfg_scale"] for e in folder_index(extra)} == {
        3.0
    }
    assert record["candidates"] == 2 * len(folder_index(first))
    assert record["read_back"]["candidates"]["all"]["count"] == record["candidates"]
    entries = json.loads((pooled / "pairs" / "selections.json").read_text())["unfiltered"]
    assert sum(len(e) == 3 for e in entries) == len(entries) // 2  # keep_per_pair from each set
    assert len(load_selection(pooled, "unfiltered")) == len(entries)

    # The pairs stage split over worker processes (two shares of the captions, rendered side by
    # side) writes the very candidates of the one-process stage, and selects the same training
    # sets.
    import logging

    # Each worker gets one of the two threads, so the one-process stage runs on one thread too:
    # floating-point sums over other thread counts may differ in their last bits.
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    for folder in (single, sharded):
        for stage in ("text_to_image", "clip"):
            shutil.copytree(output / stage, folder / stage)
    shard_config = replace(RecipeConfig.smoke(str(sharded)), pair_workers=2)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        reference = reproduce(RecipeConfig.smoke(str(single)), until="pairs", progress=False)
        torch.set_num_threads(2)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="instructedit.worlds.recipe"):
            selected = reproduce(shard_config, until="pairs", progress=False)["pairs"]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert "pairs stage: candidates in 2 processes" in caplog.text
    whole, parts = single / "pairs" / "candidates", sharded / "pairs" / "candidates"
    assert folder_index(parts) == folder_index(whole)
    for name, seed in folder_index(whole):
        for image in (f"{seed}_0.jpg", f"{seed}_1.jpg"):
            assert (parts / name / image).read_bytes() == (whole / name / image).read_bytes()
    assert selected["candidates"] == reference["pairs"]["candidates"]
    assert selected["filtered_pairs"] == reference["pairs"]["filtered_pairs"]
    assert json.loads((sharded / "pairs" / "selections.json").read_text()) == json.loads(
        (single / "pairs" / "selections.json").read_text()
    )
    # The selection alone, without the read-back (as the GPU call's phases run it).
    from instructedit.worlds.recipe import clip_scorer, select_training_sets

    quick = select_training_sets(
        shard_config, sharded / "pairs", clip_scorer(shard_config), read_back=False
    )
    assert "read_back" not in quick
    assert quick["filtered_pairs"] == selected["filtered_pairs"]

    # The run's diagnostic examples read its folder as the recipe wrote it.
    import subprocess
    import sys
    from pathlib import Path

    examples = Path(__file__).resolve().parents[2] / "examples" / "shapes"
    for script, options, expected in (
        (
            "caption_coverage.py",
            ["--examples", "4"],
            ["coverage | add |", "seen | held-out (", "seen | edits | count"],
        ),
        (
            "diagnose_editor.py",
            ["--gap-examples", "2", "--worst", "1", "--figures", str(tmp_path / "diagnosis")],
            ["held-out | remove |", "rest | add |", "worst | recolour |", "pairs | add |"],
        ),
        (
            "score_editors.py",
            ["--sdedit", str(output), "--strengths", "0.4"],
            ["run's editor | ", "identity | 0.0% | 100.0% |", "SDEdit 0.4, shapes | "],
        ),
        (
            "guidance_grid.py",
            ["--scenes", "2", "--text-scales", "7.5", "--image-scales", "1.5", "2"],
            ["7.5 | 1.5 | ", "7.5 | 2 | ", "chosen: s_T 7.5, s_I ", "(on the grid's edge: s_I = "],
        ),
        (
            "attention_binding.py",
            ["--edits", "2", "--timesteps", "500"],
            ["model | ", "concentration | 500 | "],
        ),
        (
            "finetune_decoder.py",
            [
                "--steps",
                "2",
                "--batch-size",
                "4",
                "--scenes",
                "4",
                "--output",
                str(tmp_path / "vae"),
            ],
            ["floor | recolour | background | add | remove | all |", "floor after | ", "saved | "],
        ),
        (
            "pair_controls.py",
            ["--family", "recolour", "--captions", "1", "--samples", "1", "--steps", "2"],
            ["cross_attention p=0.4, guidance 3 | recolour | 1 |", "guidance 3 | add | 0 |"],
        ),
    ):
        done = subprocess.run(
            [sys.executable, str(examples / script), str(output), *options],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        for line in expected:
            assert line in done.stdout, done.stdout
        if script == "finetune_decoder.py":
            lines = done.stdout.splitlines()
            first_floor = next(line for line in lines if line.startswith("floor after"))
    assert Image.open(tmp_path / "diagnosis" / "worst-remove.png").size[0] > 0
    # The decoder fine-tuned further: the run's encoder (its latent space) unchanged, a decoder
    # that moved.
    weights = "diffusion_pytorch_model.safetensors"
    before = load_file(output / "editor" / "model" / "vae" / weights)
    after = load_file(tmp_path / "vae" / weights)
    assert all(torch.equal(after[k], v) for k, v in before.items() if k.startswith("encoder."))
    assert not all(torch.equal(after[k], v) for k, v in before.items() if k.startswith("decoder."))
    # In place, on a copy of the editor: a checkpoint another run left is refused, not resumed.
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(output / "editor" / "model", copy)
    (copy / "vae.decoder.pt").write_bytes(b"another run's")
    small = ["--steps", "2", "--batch-size", "4", "--scenes", "4"]
    script = [sys.executable, str(examples / "finetune_decoder.py"), str(copy), *small]
    refused = subprocess.run(script, capture_output=True, text=True, check=False)
    assert refused.returncode == 2
    assert "is the checkpoint of another run" in refused.stderr
    (copy / "vae.decoder.pt").unlink()
    # Killed between the two renames of a replacement (the old folder set aside, the new one
    # complete beside it): the rerun completes it, then fine-tunes that, and leaves only "vae".
    (copy / "vae").rename(copy / ".vae.old")
    shutil.copytree(tmp_path / "vae", copy / ".vae.partial")
    done = subprocess.run(script, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "floor before | " in done.stdout
    assert sorted(path.name for path in copy.iterdir() if "vae" in path.name) == ["vae"]
    # Its floor before is the completed replacement's: the first run's floor after.
    resumed_floor = next(line for line in done.stdout.splitlines() if line.startswith("floor bef"))
    assert resumed_floor.split(" | ", 1)[1] == first_floor.split(" | ", 1)[1]
    refined = load_file(copy / "vae" / weights)
    assert all(torch.equal(refined[k], v) for k, v in before.items() if k.startswith("encoder."))

    capsys.readouterr()
    # A second run finds every stage done and does no work.
    assert main(["shapes", "reproduce", "--output", str(output), "--smoke"]) == 0
    again = json.loads((output / "summary.json").read_text())
    assert again == summary
    # ``until`` a stage already done stops there.
    assert list(reproduce(RecipeConfig.smoke(str(output)), until="clip", progress=False)) == [
        "text_to_image",
        "clip",
    ]
    # A stage that runs again (here: as if the run predated it) makes every later record stale.
    (output / "guidance" / "DONE.json").unlink()
    redone = reproduce(RecipeConfig.smoke(str(output)), until="guidance", progress=False)
    assert redone["guidance"]["grid"] == summary["guidance"]["grid"]  # deterministic
    for later in ("evaluate", "ablations", "report"):
        assert not (output / later / "DONE.json").exists(), later
    assert (output / "editor" / "DONE.json").is_file()
    # The ablations stage trains the editors the config names, no others (a finished one is
    # reused, not retrained); the report lists those.
    only = replace(RecipeConfig.smoke(str(output)), ablations=("fewer_pairs",))
    subset = reproduce(only, progress=False)["ablations"]["runs"]
    assert set(subset) == {"full", "fewer_pairs"}
    assert subset["fewer_pairs"] == runs["fewer_pairs"]
    report = (output / "report" / "report.rst").read_text()
    ablation_rows = report.split("Ablations (")[1].split("Guidance sweep")[0]
    assert "fewer_pairs" in ablation_rows
    assert "zero_init" not in ablation_rows
    # Asking a finished run for an ablation it has not recorded runs the stage again (the
    # finished editors reused); asking it for other steps is refused, naming the way out.
    more = replace(only, ablations=("fewer_pairs", "zero_init"))
    widened = reproduce(more, progress=False)["ablations"]["runs"]
    assert set(widened) == {"full", "fewer_pairs", "zero_init"}
    assert widened["zero_init"] == runs["zero_init"]
    assert "zero_init" in (output / "report" / "report.rst").read_text().split("Ablations (")[1]
    (output / "ablations" / "DONE.json").unlink()
    with pytest.raises(ValueError, match="pass ablation_steps=3, or delete that folder"):
        reproduce(replace(more, ablation_steps=5), until="ablations", progress=False)
    with pytest.raises(FileNotFoundError, match=r"snapshots: \['model-3'\]\); pass the"):
        reproduce(replace(more, ablation_steps=2), until="ablations", progress=False)


def _row(success, error):
    return {"oracle": {"all": {"success": success, "unchanged_error": error}}}


def test_the_guidance_stage_keeps_the_most_successful_setting():
    from instructedit.worlds.recipe import best_setting

    assert best_setting([_row(0.30, 0.05), _row(0.41, 0.10), _row(0.35, 0.02)]) == 1
    # Equal success: the lower unchanged error; equal both: the earlier setting.
    assert best_setting([_row(0.40, 0.10), _row(0.40, 0.09), _row(0.40, 0.09)]) == 1
    assert best_setting([_row(0.2, 0.1)]) == 0
    with pytest.raises(ValueError, match="at least one setting"):
        best_setting([])


def test_a_choice_at_the_end_of_the_values_tried_is_an_edge():
    from instructedit.worlds.recipe import grid_edges

    text, image = (3.0, 5.0, 7.5), (1.5, 2.0, 3.0)
    assert grid_edges(5.0, 2.0, text, image) == []
    assert grid_edges(5.0, 3.0, text, image) == ["s_I = 3 is the largest tried"]
    assert grid_edges(3.0, 1.5, text, image) == [
        "s_T = 3 is the smallest tried",
        "s_I = 1.5 is the smallest tried",
    ]
    # The grid's order does not matter; one value tried, even repeated, is no edge.
    assert grid_edges(7.5, 2.0, (7.5, 3.0, 5.0), image) == ["s_T = 7.5 is the largest tried"]
    assert grid_edges(7.5, 2.0, (7.5,), (2.0,)) == []
    assert grid_edges(5.0, 2.0, [5.0, 5.0], [2.0]) == []


def test_the_report_notes_a_choice_on_the_grids_edge_even_in_an_older_record():
    from instructedit.worlds.recipe import edges_note

    grid = [
        {"text_scale": t, "image_scale": i, "oracle": {}} for t in (5.0, 7.5) for i in (2.0, 3.0)
    ]
    older = {"text_scale": 5.0, "image_scale": 3.0, "grid": grid}  # no "edges" kept
    assert edges_note(older) == (
        "; on the grid's edge: s_T = 5 is the smallest tried; s_I = 3 is the largest tried"
    )
    assert edges_note({**older, "edges": []}) == ""


def test_guidance_grid_refuses_bad_scales_before_loading_anything(tmp_path):
    from instructedit.worlds.recipe import guidance_grid

    missing = tmp_path / "no-editor"  # never read: the scales are refused first
    with pytest.raises(ValueError, match="text_scales must hold one or more finite numbers"):
        guidance_grid(missing, RecipeConfig(), text_scales=5.0)
    with pytest.raises(ValueError, match="image_scales must not repeat a scale"):
        guidance_grid(missing, RecipeConfig(), image_scales=[3.0, 3.0])


def test_the_ablations_are_kept_as_a_tuple():
    from instructedit.worlds.recipe import ABLATIONS, DEFAULT_ABLATIONS

    config = RecipeConfig(ablations=["ground_truth", "fewer_pairs"])
    assert config.ablations == ("ground_truth", "fewer_pairs")
    assert config == RecipeConfig(ablations=("ground_truth", "fewer_pairs"))
    assert hash(config) == hash(RecipeConfig(ablations=("ground_truth", "fewer_pairs")))
    # The paper's two ablations and the one it could not run, by default; all five on a GPU.
    assert RecipeConfig().ablations == DEFAULT_ABLATIONS
    assert set(DEFAULT_ABLATIONS) == {"no_clip_filter", "fewer_pairs", "ground_truth"}
    assert RecipeConfig.gpu().ablations == ABLATIONS


def test_smoke_and_gpu_presets_are_exclusive(tmp_path):
    from instructedit.worlds.recipe import shapes_command

    with pytest.raises(ValueError, match="at most one"):
        shapes_command("reproduce", output=tmp_path, smoke=True, gpu=True)
    assert not any(tmp_path.iterdir())  # refused before any work


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("editor_init", "ones", "editor_init must be 'zeros' or 'copy'"),
        ("editor_prediction_type", "flow", "editor_prediction_type must be one of"),
        ("editor_sampler", "euler_a", r"editor_sampler must be one of \[.*'euler'.*\] or None"),
        ("editor_steps", 0, "editor_steps must be an int >= 1"),
        ("size", 30, "size must be a multiple of 8"),
        ("latent_downsampling", 8, "latent_downsampling must be 2 or 4, got 8"),
        ("latent_downsampling", 2.0, "latent_downsampling must be 2 or 4, got 2.0"),
        ("latent_downsampling", True, "latent_downsampling must be 2 or 4, got True"),
        ("ground_truth_large_pairs", 2.5, "ground_truth_large_pairs must be an int"),
        ("editor_learning_rate", -1e-4, "editor_learning_rate must be a finite number > 0"),
        ("loader_workers", -1, "loader_workers must be an int >= 0"),
        ("pair_workers", 0, r"pair_workers must be None \(automatic\) or an int >= 1, got 0"),
        ("pair_workers", True, "pair_workers must be None"),
        ("pair_workers", "2", "pair_workers must be None"),
        ("decoder_steps", -5, "decoder_steps must be an int >= 0"),
        ("pair_control", "local", "pair_control must be 'self_attention' or 'cross_attention'"),
        ("pair_control_range", (0.9, 0.1), "pair_control_range must be"),
        ("pair_local_blend", 1.5, r"pair_local_blend must be a threshold in \[0, 1\)"),
        ("pair_guidance_range", (15.0, 7.5), "pair_guidance_range must be"),
        ("decoder_steps", True, "decoder_steps must be an int >= 0"),
        ("decoder_shape_weight", -1.0, "decoder_shape_weight must be a finite number >= 0"),
        ("decoder_shape_weight", float("nan"), "decoder_shape_weight must be a finite number"),
        ("decoder_shape_weight", "4", "decoder_shape_weight must be a finite number >= 0"),
        ("fewer_pairs_fraction", 0.0, "fewer_pairs_fraction must be in"),
        ("text_to_image_schedule", "linear", "text_to_image_schedule must be 'constant' or"),
        ("text_to_image_ema", 1.0, r"text_to_image_ema must be in \[0, 1\) or None"),
        ("text_to_image_ema_warmup", "yes", "text_to_image_ema_warmup must be True or False"),
        ("min_structure_similarity", -0.1, r"min_structure_similarity must be in \[0, 1\]"),
        ("guidance_text_scales", (), "guidance_text_scales must hold one or more finite"),
        ("guidance_image_scales", (1.5, float("nan")), "guidance_image_scales must hold one or"),
        (
            "guidance_image_scales",
            (1.5, -1.0),
            "guidance_image_scales must be a finite number >= 0",
        ),
        ("guidance_text_scales", (5.0, 5.0), "guidance_text_scales must not repeat a scale"),
        ("guidance_seed_offset", 0, "guidance_seed_offset must be a non-zero integer"),
        ("ablations", ("fewer_pairs", "no_filter"), r"ablations must hold one or more distinct"),
        ("ablations", ("ground_truth", "ground_truth"), "ablations must hold one or more"),
        ("ablations", "ground_truth", "ablations must hold one or more distinct names"),
        ("ablations", (), "ablations must hold one or more distinct names"),
        ("guidance_scenes", 0, "guidance_scenes must be"),
        ("guidance_text_scales", 5.0, "guidance_text_scales must hold one or more finite"),
    ],
)
def test_bad_sizes_are_refused_when_the_config_is_made(field, value, message):
    with pytest.raises(ValueError, match=message):
        RecipeConfig(**{field: value})


def test_the_editor_sampler_must_take_the_editor_target():
    assert (
        RecipeConfig(editor_sampler="euler", editor_prediction_type="sample").editor_sampler
        == "euler"
    )
    with pytest.raises(ValueError, match="editor_sampler 'euler_ancestral' cannot sample"):
        RecipeConfig(editor_sampler="euler_ancestral", editor_prediction_type="sample")


def test_local_blend_needs_the_cross_attention_control():
    assert RecipeConfig(pair_local_blend=0.3).pair_control == "cross_attention"  # the default
    with pytest.raises(ValueError, match="pair_local_blend needs pair_control='cross_attention'"):
        RecipeConfig(pair_control="self_attention", pair_local_blend=0.3)


def test_the_recipe_refuses_to_run_as_one_of_several_launched_processes(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="one of 2 that torchrun or accelerate launch started"):
        reproduce(RecipeConfig.smoke(output_dir=str(run)), progress=False)
    assert not run.exists()  # refused before writing anything


def test_the_pairs_stage_splits_over_cpu_threads_only_where_it_is_the_only_process(monkeypatch):
    from instructedit.worlds.recipe import pair_worker_count

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 6)
    assert pair_worker_count(RecipeConfig(device="cpu")) == 4
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert pair_worker_count(RecipeConfig(device="cpu")) == 1
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert pair_worker_count(RecipeConfig(device="cpu")) == 2
    assert pair_worker_count(RecipeConfig(device="cuda")) == 1
    assert pair_worker_count(RecipeConfig(device="cpu", pair_workers=3)) == 3
    monkeypatch.setenv("WORLD_SIZE", "2")  # a launcher's processes: the recipe refuses them
    assert pair_worker_count(RecipeConfig(device="cpu")) == 1
    assert RecipeConfig.smoke().pair_workers == 1  # the CI run stays in one process


@pytest.mark.slow
def test_a_failing_pairs_worker_stops_the_stage_with_a_clear_error(tmp_path):
    from instructedit.worlds.recipe import render_in_workers

    # No text-to-image model in the run: both workers fail as they load it.
    config = RecipeConfig.smoke(str(tmp_path))
    with pytest.raises(RuntimeError, match=r"a pairs stage worker failed \(exit code 1\)"):
        render_in_workers(config, tmp_path, tmp_path / "pairs" / "candidates", (7.5, 7.5), 2, False)


def test_until_must_name_a_stage(tmp_path):
    with pytest.raises(ValueError, match="until must be one of"):
        reproduce(RecipeConfig.smoke(str(tmp_path)), until="training")


def test_the_cli_offers_exactly_the_recipes_stages():
    import inspect
    from typing import get_args

    from instructedit.worlds.recipe import shapes_command

    annotation = inspect.signature(shapes_command, eval_str=True).parameters["until"].annotation
    (literal, _none) = get_args(annotation)
    assert get_args(literal) == STAGES


@pytest.mark.slow
def test_a_2x_latent_run_draws_full_size_scenes_by_default(tmp_path):
    from dataclasses import replace

    from diffusers import StableDiffusionPipeline

    config = replace(RecipeConfig.smoke(str(tmp_path / "shapes")), latent_downsampling=2)
    reproduce(config, until="text_to_image", progress=False)
    model = tmp_path / "shapes" / "text_to_image" / "model"
    # The run's autoencoder is 2x: a stage killed after it, resumed as a 4x run, is refused
    # before any training.
    (tmp_path / "shapes" / "text_to_image" / "DONE.json").rename(tmp_path / "DONE.json")
    with pytest.raises(ValueError, match="latent_downsampling is 4 but the run's autoencoder"):
        reproduce(replace(config, latent_downsampling=4), until="text_to_image", progress=False)
    (tmp_path / "DONE.json").rename(tmp_path / "shapes" / "text_to_image" / "DONE.json")
    pipe = StableDiffusionPipeline.from_pretrained(model, safety_checker=None)
    assert pipe.vae_scale_factor == 2
    assert pipe.unet.config.sample_size == 16
    pipe.set_progress_bar_config(disable=True)
    # No size given: the UNet's latent side × the autoencoder's factor, the scenes' 32².
    image = pipe("a red circle on a white background", num_inference_steps=2).images[0]
    assert image.size == (config.size, config.size)


def test_a_finished_autoencoder_sub_stage_is_loaded_not_retrained(tmp_path):
    from instructedit.worlds._models import shapes_autoencoder
    from instructedit.worlds.recipe import autoencoder_sub_stage

    calls = []

    def train():
        calls.append(1)
        vae = shapes_autoencoder(3)
        return vae, [0.5, 0.25]

    vae, losses = autoencoder_sub_stage(tmp_path / "ae", train)
    assert (calls, losses) == ([1], [0.5, 0.25])
    assert json.loads((tmp_path / "ae" / "losses.json").read_text()) == [0.5, 0.25]
    # A restarted recipe finds the marker: same weights and losses, no training.
    again, losses = autoencoder_sub_stage(tmp_path / "ae", train)
    assert (calls, losses) == ([1], [0.5, 0.25])
    for a, b in zip(vae.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # Weights without the marker (killed while saving) are trained again.
    (tmp_path / "ae" / "losses.json").unlink()
    autoencoder_sub_stage(tmp_path / "ae", train)
    assert calls == [1, 1]
