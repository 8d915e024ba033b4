import math

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from instructedit.clip import ClipDirectionalFilter, ClipScorer
from instructedit.data import FolderSample, write_caption_folder, write_json_atomic
from instructedit.testing import save_tiny_pipeline, tiny_open_clip, tiny_vae
from instructedit.worlds.evaluation import (
    clip_similarities,
    edit_grid,
    held_out_edits,
    identity_edits,
    oracle_summary,
    round_trip_edits,
    sdedit_edits,
)
from instructedit.worlds.recipe import (
    RecipeConfig,
    calibrate_thresholds,
    candidate_sets,
    load_selection,
    read_back_pairs,
    select_pairs,
    selection_folders,
)
from instructedit.worlds.shapes import EDIT_FAMILIES, Scene, apply_edit, render


@pytest.fixture(scope="module")
def edits():
    return held_out_edits(16, seed=3)


@pytest.fixture(scope="module")
def scorer():
    return ClipScorer(tiny_open_clip(seed=0), open_clip.get_tokenizer("ViT-B-32"))


def test_held_out_edits_cycle_the_families_and_are_reproducible(edits):
    assert [e.family for e in edits] == [EDIT_FAMILIES[i % 4] for i in range(16)]
    assert held_out_edits(16, seed=3) == edits
    assert held_out_edits(16, seed=4) != edits
    with pytest.raises(ValueError, match="count must be >= 1"):
        held_out_edits(0)
    with pytest.raises(ValueError, match="families must be"):
        held_out_edits(4, families=("recolour", "rotate"))


def test_oracle_summary_gives_ground_truth_full_marks_and_identity_none(edits):
    truth = oracle_summary(edits, [apply_edit(e) for e in edits])
    assert list(truth) == [*EDIT_FAMILIES, "all"]
    assert truth["all"] == {
        "realised": 1.0,
        "unchanged_error": 0.0,
        "intact": 1.0,
        "success": 1.0,
        "count": 16,
    }
    identity = oracle_summary(edits, identity_edits(edits))
    assert identity["all"]["success"] == 0.0
    assert identity["all"]["unchanged_error"] < 1e-3  # the input is the truth outside the edit
    assert all(identity[f]["realised"] == 0.0 for f in EDIT_FAMILIES)
    assert all(identity[f]["count"] == 4 for f in EDIT_FAMILIES)


def test_success_needs_the_rest_of_the_scene_kept(edits):
    # The ground truth with everything darkened: the colours move everywhere, the unchanged
    # region is far off, so none is a success at the default tolerance.
    damaged = [
        Image.fromarray((np.asarray(apply_edit(e), np.float32) * 0.5).astype(np.uint8))
        for e in edits
    ]
    summary = oracle_summary(edits, damaged)
    assert summary["all"]["unchanged_error"] > 0.08
    assert summary["all"]["success"] == 0.0
    # Uniform noise of +-60 on the ground truth: every colour still reads as its own (intact,
    # realised), the pixel error alone decides; a tolerance of 1 lets every edit through.
    rng = np.random.default_rng(0)
    noisy = [
        Image.fromarray(
            np.clip(
                np.asarray(apply_edit(e), np.float32) + rng.uniform(-60, 60, (32, 32, 3)), 0, 255
            ).astype(np.uint8)
        )
        for e in edits
    ]
    strict = oracle_summary(edits, noisy)
    lenient = oracle_summary(edits, noisy, tolerance=1.0)
    assert strict["all"]["intact"] == 1.0
    assert strict["all"]["success"] < 1.0
    assert lenient["all"]["success"] == 1.0
    # Erasing every shape: removals realised, little pixel error, but nothing kept is intact.
    bare = [render(Scene(e.source.background, ())) for e in edits]
    removals = oracle_summary(edits, bare)["remove"]
    assert removals["realised"] == 1.0
    assert removals["intact"] == 0.0
    assert removals["success"] == 0.0
    with pytest.raises(ValueError, match="got 16 edits but 3 outputs"):
        oracle_summary(edits, damaged[:3])


def test_clip_image_similarity_of_the_identity_is_one(edits, scorer):
    scores = clip_similarities(scorer, edits, identity_edits(edits))
    assert scores["image_similarity"] == pytest.approx(1.0, abs=1e-5)
    moved = clip_similarities(scorer, edits, [apply_edit(e) for e in edits])
    assert moved["image_similarity"] < 1.0


@pytest.mark.slow
def test_sdedit_baseline_runs_the_text_to_image_model(tmp_path, edits):
    folder = save_tiny_pipeline(tmp_path / "t2i", kind="text_to_image")
    first = sdedit_edits(folder, edits[:3], strength=0.5, num_inference_steps=4, batch_size=2)
    again = sdedit_edits(folder, edits[:3], strength=0.5, num_inference_steps=4, batch_size=3)
    assert [im.size for im in first] == [(32, 32)] * 3
    # Example i uses noise from seed + i whatever the batching (the batch size changes only the
    # order of float sums: a level or two of 255, where other noise would change everything).
    for a, b in zip(first, again, strict=True):
        assert np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max() <= 3
    other = sdedit_edits(folder, edits[:1], strength=0.5, num_inference_steps=4, seed=1)
    assert np.abs(np.asarray(other[0], np.int16) - np.asarray(first[0], np.int16)).max() > 3
    with pytest.raises(ValueError, match=r"strength must be in \(0, 1\]"):
        sdedit_edits(folder, edits[:1], strength=0.0)


def test_round_trip_decodes_the_encoded_ground_truth(tmp_path, edits):
    vae = tiny_vae(seed=1)
    outputs = round_trip_edits(vae, edits[:5], batch_size=2)
    assert [o.size for o in outputs] == [(32, 32)] * 5
    # Independently: diffusers' encode → posterior mode → decode of the renderer's truth.
    truth = np.stack([np.asarray(apply_edit(e), np.float32) / 127.5 - 1.0 for e in edits[:5]])
    with torch.no_grad():
        pixels = torch.from_numpy(truth).permute(0, 3, 1, 2)
        decoded = vae.decode(vae.encode(pixels).latent_dist.mode()).sample.clamp(-1, 1)
    expected = ((decoded + 1) * 127.5).permute(0, 2, 3, 1).numpy()
    got = np.stack([np.asarray(o, np.float32) for o in outputs])
    assert np.abs(got - expected).max() <= 0.51  # rounding to uint8 (and batching noise) only
    # A folder works too (the recipe passes the model's ``vae``).
    vae.save_pretrained(tmp_path / "vae")
    again = round_trip_edits(tmp_path / "vae", edits[:5], batch_size=2)
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(again, outputs, strict=True)
    )


def test_edit_grid_puts_input_truth_and_outputs_side_by_side(edits):
    rows = edits[:2]
    outputs = {"identity": identity_edits(rows)}
    grid = edit_grid(rows, outputs, scale=2)
    cell, pad, text = 64, 4, 12
    assert grid.size == (3 * (cell + pad) + pad, text + 2 * (cell + text + pad) + pad)
    top = text + text  # first row: instruction line, then the images
    tile = np.asarray(grid)[top : top + cell, pad : pad + cell]
    expected = np.asarray(render(rows[0].source).resize((cell, cell), Image.Resampling.NEAREST))
    assert np.array_equal(tile, expected)


def _candidates(root, scores, images=None, prompt=None):
    """Caption folders whose samples carry the given (image, direction, text0, text1) scores;
    ``images[index][i]``, if given, is sample i's (input, edited) pair (else two blanks);
    ``prompt``: every folder's prompt.json (a fixed recolour by default)."""
    blank = Image.new("RGB", (8, 8))
    for index, rows in enumerate(scores):
        pairs = images[index] if images is not None else [(blank, blank)] * len(rows)
        samples = [
            FolderSample(
                seed=100 * index + i,
                input_image=pairs[i][0],
                edited_image=pairs[i][1],
                metadata={
                    "clip_sim_image": image,
                    "clip_sim_dir": direction,
                    "clip_sim_0": text0,
                    "clip_sim_1": text1,
                },
            )
            for i, (image, direction, text0, text1) in enumerate(rows)
        ]
        write_caption_folder(
            root,
            index,
            prompt or {"input": "a red circle", "edit": "make it blue", "output": "a blue circle"},
            samples,
        )
    return root


def test_select_pairs_applies_the_filter_to_stored_scores(tmp_path):
    root = _candidates(
        tmp_path,
        [
            # caption 0: sample 1 fails image similarity, 2 fails direction, 3 fails text
            [
                (0.9, 0.3, 0.3, 0.3),
                (0.5, 0.9, 0.3, 0.3),
                (0.9, 0.1, 0.3, 0.3),
                (0.9, 0.9, 0.1, 0.3),
            ],
            # caption 1: all pass; best two by direction are samples 2 and 0
            [(0.8, 0.5, 0.3, 0.3), (0.8, 0.3, 0.3, 0.3), (0.8, 0.7, 0.3, 0.3)],
        ],
    )
    config = RecipeConfig(keep_per_pair=2, fewer_pairs_fraction=0.5)
    selections, record = select_pairs(root, ClipDirectionalFilter(None, 0.75, 0.2, 0.2), config)
    assert selections["filtered"] == [["0000000", 0], ["0000001", 100], ["0000001", 102]]
    assert selections["unfiltered"] == [
        ["0000000", 0],
        ["0000000", 1],
        ["0000001", 100],
        ["0000001", 101],
    ]
    assert selections["fewer"] == [["0000000", 0]]
    assert record["filter"] == {
        "kept": 4,
        "image_similarity": 1,
        "direction_similarity": 1,
        "text_similarity": 1,
    }
    assert record["filtered_direction_similarity"] == pytest.approx((0.3 + 0.5 + 0.7) / 3)


def test_select_pairs_checks_the_structure_from_the_images(tmp_path):
    # A white square on black, then the same square moved (no edge kept in place) or recoloured
    # (every edge kept).
    square = np.zeros((12, 12, 3), dtype=np.uint8)
    square[1:5, 1:5] = 255
    moved = np.zeros_like(square)
    moved[7:11, 7:11] = 255
    recoloured = square.copy()
    recoloured[1:5, 1:5] = (255, 0, 0)
    before = Image.fromarray(square)
    root = _candidates(
        tmp_path,
        [[(0.9, 0.9, 0.3, 0.3), (0.9, 0.5, 0.3, 0.3)]],
        images=[[(before, Image.fromarray(moved)), (before, Image.fromarray(recoloured))]],
    )
    config = RecipeConfig(keep_per_pair=1, fewer_pairs_fraction=1.0, min_structure_similarity=0.8)
    checked = ClipDirectionalFilter(None, 0.75, 0.2, 0.2, min_structure_similarity=0.8)
    selections, record = select_pairs(root, checked, config)
    # The CLIP filter alone prefers the moved square (direction 0.9); the structure check
    # leaves the recoloured one.
    assert selections["clip_only"] == [["0000000", 0]]
    assert selections["filtered"] == [["0000000", 1]]
    assert record["filter"] == {"kept": 1, "structure_similarity": 1}
    # Without the check there is no clip_only selection (it would equal filtered).
    selections, _ = select_pairs(root, ClipDirectionalFilter(None, 0.75, 0.2, 0.2), config)
    assert "clip_only" not in selections
    assert selections["filtered"] == [["0000000", 0]]


def test_select_pairs_pools_extra_candidate_sets(tmp_path):
    # Two sets of the same two caption edits (as pair_extra_guidance renders them): each caption
    # edit keeps up to keep_per_pair from each set, entries of the second set name it, and the
    # "fewer" ablation takes the first captions from both sets.
    pairs = tmp_path / "pairs"
    first = _candidates(
        pairs / "candidates",
        [
            [(0.9, 0.5, 0.3, 0.3), (0.9, 0.6, 0.3, 0.3)],
            [(0.9, 0.4, 0.3, 0.3), (0.5, 0.9, 0.3, 0.3)],
        ],
    )
    second = _candidates(
        pairs / "candidates-g3",
        [
            [(0.9, 0.7, 0.3, 0.3), (0.9, 0.2, 0.3, 0.3)],
            [(0.9, 0.8, 0.3, 0.3), (0.9, 0.3, 0.3, 0.3)],
        ],
    )
    config = RecipeConfig(keep_per_pair=1, fewer_pairs_fraction=0.5)
    selections, record = select_pairs(
        first, ClipDirectionalFilter(None, 0.75, 0.2, 0.2), config, extra=[second]
    )
    assert selections["filtered"] == [
        ["0000000", 1],
        ["0000001", 100],
        ["0000000", 0, "candidates-g3"],
        ["0000001", 100, "candidates-g3"],
    ]
    assert selections["unfiltered"] == [
        ["0000000", 0],
        ["0000001", 100],
        ["0000000", 0, "candidates-g3"],
        ["0000001", 100, "candidates-g3"],
    ]
    assert selections["fewer"] == [["0000000", 1], ["0000000", 0, "candidates-g3"]]
    assert record["filter"]["kept"] == 7
    # The records load from the set each entry names.
    write_json_atomic(pairs / "selections.json", selections)
    loaded = load_selection(tmp_path, "filtered")
    assert [r.metadata["clip_sim_dir"] for r in loaded] == [0.6, 0.4, 0.7, 0.8]
    # The same pairs named without decoding them: folder and seed.
    assert selection_folders(tmp_path, "filtered") == [
        (first / "0000000", 1),
        (first / "0000001", 100),
        (second / "0000000", 0),
        (second / "0000001", 100),
    ]
    with pytest.raises(ValueError, match="extra: each set must be a sibling folder"):
        select_pairs(first, ClipDirectionalFilter(None), config, extra=[tmp_path])
    with pytest.raises(ValueError, match="key must be one of"):
        load_selection(tmp_path, "best")
    with pytest.raises(FileNotFoundError, match="no pairs stage"):
        load_selection(tmp_path / "elsewhere")


def test_read_back_pairs_reads_a_set_folder_of_any_name(tmp_path):
    prompt = {
        "input": "a red circle on a white background",
        "edit": "make the circle blue",
        "output": "a blue circle on a white background",
    }
    scores = [[(0.9, 0.5, 0.3, 0.3), (0.9, 0.6, 0.3, 0.3)]]
    first = _candidates(tmp_path / "mine", scores, prompt=prompt)
    second = _candidates(tmp_path / "mine-g3", scores, prompt=prompt)
    selections = {"filtered": [["0000000", 0], ["0000000", 1, "mine-g3"]]}
    read = read_back_pairs(first, selections, extra=[second])
    assert read["candidates"]["recolour"]["count"] == 4
    assert read["filtered"]["recolour"]["count"] == 2


def test_extra_guidance_sets_are_named_and_checked():
    config = RecipeConfig(pair_guidance_range=(7.5, 7.5), pair_extra_guidance=(3.0, 4.5))
    assert candidate_sets(config) == [
        ("candidates", (7.5, 7.5)),
        ("candidates-g3", (3.0, 3.0)),
        ("candidates-g4.5", (4.5, 4.5)),
    ]
    assert candidate_sets(RecipeConfig()) == [("candidates", (7.5, 7.5))]
    with pytest.raises(ValueError, match="pair_extra_guidance must hold finite scales > 0"):
        RecipeConfig(pair_extra_guidance=(0.0,))
    with pytest.raises(ValueError, match="pair_extra_guidance must not repeat"):
        RecipeConfig(pair_extra_guidance=(3.0, 3.0))


def test_select_pairs_says_when_nothing_passes(tmp_path):
    root = _candidates(tmp_path, [[(0.1, 0.1, 0.1, 0.1)]])
    with pytest.raises(RuntimeError, match="kept none of 1 candidates"):
        select_pairs(root, ClipDirectionalFilter(None), RecipeConfig())


def test_calibrated_thresholds_keep_the_ground_truth_pairs(scorer):
    explicit = RecipeConfig(
        min_image_similarity=0.7, min_direction_similarity=0.1, min_text_similarity=0.05
    )
    assert calibrate_thresholds(None, explicit) == {
        "min_image_similarity": 0.7,
        "min_direction_similarity": 0.1,
        "min_text_similarity": 0.05,
    }
    # At quantile 0 every threshold is the lowest score of the calibration pairs: all pass.
    calibrated = {"min_direction_similarity": None, "min_text_similarity": None}
    lowest = calibrate_thresholds(
        scorer, RecipeConfig(**calibrated, calibration_quantile=0.0), count=32
    )
    tenth = calibrate_thresholds(
        scorer, RecipeConfig(**calibrated, calibration_quantile=0.1), count=32
    )
    # A threshold given a value is kept as it is; only the None ones are calibrated.
    mixed = calibrate_thresholds(scorer, RecipeConfig(min_text_similarity=None), count=32)
    assert mixed["min_direction_similarity"] == RecipeConfig().min_direction_similarity
    assert mixed["min_text_similarity"] == pytest.approx(tenth["min_text_similarity"])
    assert all(lowest[k] <= tenth[k] for k in lowest)
    assert all(math.isfinite(v) for v in tenth.values())
    from instructedit.worlds.recipe import ground_truth_records

    records = ground_truth_records(32, RecipeConfig(), stream="calibration")
    result = ClipDirectionalFilter(scorer, **lowest)(
        [r.input_image for r in records],
        [r.edited_image for r in records],
        [r.input_caption for r in records],
        [r.output_caption for r in records],
    )
    assert bool(result.keep.all())
    assert torch.is_tensor(result.keep)


def test_evaluate_shapes_editor_scores_the_default_as_judged_edit_by_edit(tmp_path):
    import json

    import instructedit
    from instructedit.evaluation import PAPER_IMAGE_SCALES
    from instructedit.worlds.evaluation import evaluate_shapes_editor, format_evaluation
    from instructedit.worlds.shapes import judge

    result = evaluate_shapes_editor(
        "shapes", tmp_path / "ev", scenes=8, sweep_scenes=2, progress=False
    )
    # Independently: the default pipeline, the noise of seed + index for each edit, each output
    # judged by the oracle on its own.
    pipe = instructedit.load_default()
    edits = held_out_edits(8, seed=0)
    outputs = pipe(
        [render(edit.source) for edit in edits],
        [edit.instruction for edit in edits],
        num_inference_steps=20,
        generator=[torch.Generator().manual_seed(index) for index in range(8)],
        mask_image="none",  # the "editor" row is the editor unmasked, whatever it stores
        progress=False,
    ).images
    verdicts = [judge(edit, output) for edit, output in zip(edits, outputs, strict=True)]
    editor = result["methods"]["editor"]["oracle"]["all"]
    assert editor["success"] == pytest.approx(
        np.mean([v.realised and v.unchanged_error <= 0.08 and v.rest == "intact" for v in verdicts])
    )
    assert editor["realised"] == pytest.approx(np.mean([v.realised for v in verdicts]))
    assert editor["unchanged_error"] == pytest.approx(
        np.mean([v.unchanged_error for v in verdicts]),
        abs=1e-4,  # float noise of two loads
    )
    assert result["guidance"] == {
        "text_scale": pipe.guidance.text_scale,
        "image_scale": pipe.guidance.image_scale,
    }
    identity = result["methods"]["identity"]
    assert identity["oracle"]["all"]["success"] == 0.0
    assert identity["oracle"]["all"]["unchanged_error"] < 1e-3  # edge pixels of the edit only
    assert identity["clip"]["image_similarity"] == pytest.approx(1.0, abs=1e-4)
    floor = result["methods"]["ground truth, autoencoded"]["oracle"]["all"]
    assert floor["success"] >= 0.75
    assert [p["image_scale"] for p in result["sweep"]] == list(PAPER_IMAGE_SCALES)
    assert all(p["count"] == 2 and p["text_scale"] == 7.5 for p in result["sweep"])
    written = tmp_path / "ev"
    assert json.loads((written / "evaluation.json").read_text()) == json.loads(json.dumps(result))
    assert {p.name for p in written.iterdir()} == {
        "evaluation.json",
        "grid.png",
        "sweep.csv",
        "sweep.png",
    }
    table = format_evaluation(result)
    assert f"{100 * editor['success']:5.1f} %" in table.splitlines()[2]
    assert table.splitlines()[-7].startswith("  1.0 ")


def test_evaluate_shapes_editor_refuses_bad_arguments_before_loading(tmp_path):
    from instructedit.worlds.evaluation import evaluate_shapes_editor

    with pytest.raises(ValueError, match="scenes must be an int >= 1, got 0"):
        evaluate_shapes_editor(scenes=0)
    with pytest.raises(ValueError, match=r"sweep_scenes \(9\) must not exceed scenes \(8\)"):
        evaluate_shapes_editor(scenes=8, sweep_scenes=9)
    with pytest.raises(FileNotFoundError, match=r"model: .*nothing is neither 'shapes'"):
        evaluate_shapes_editor(tmp_path / "nothing")
    editor = save_tiny_pipeline(tmp_path / "editor", kind="edit")
    with pytest.raises(ValueError, match=r"clip: .* is an editor folder, which holds no CLIP"):
        evaluate_shapes_editor(editor)
    with pytest.raises(FileNotFoundError, match=r"clip: .* holds no open_clip_config\.json"):
        evaluate_shapes_editor(editor, clip=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["editor"]  # nothing written


def test_shapes_evaluate_command_writes_its_files_and_keeps_its_options(tmp_path, capsys):
    from instructedit.cli import main

    assert main(["shapes", "evaluate", "--smoke", "--output", str(tmp_path / "ev")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "ev" / "evaluation.json")
    assert (tmp_path / "ev" / "sweep.png").is_file()
    with pytest.raises(SystemExit) as refused:
        main(["shapes", "evaluate", "--until", "clip", "--output", str(tmp_path / "x")])
    assert refused.value.code == 2
    assert "until: reproduce's options, not evaluate's" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["shapes", "reproduce", "--model", "shapes2", "--output", str(tmp_path / "y")])
    assert "model: evaluate's options, not reproduce's" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["shapes", "evaluate", "--smoke", "--scenes", "20", "--output", str(tmp_path / "z")])
    assert "scenes: smoke evaluates 8 edits" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ev"]


def test_family_rows_take_the_first_edits_of_each_family_in_order():
    from instructedit.worlds.evaluation import family_rows

    edits = held_out_edits(12, seed=5)
    # held_out_edits cycles through the families, so the rows are 0, 4, 1, 5, 2, 6, 3, 7.
    assert family_rows(edits) == [0, 4, 1, 5, 2, 6, 3, 7]
    assert [edits[i].family for i in family_rows(edits, per_family=3)] == [
        family for family in EDIT_FAMILIES for _ in range(3)
    ]
    assert family_rows(edits[:6]) == [0, 4, 1, 5, 2, 3]  # as many as there are


def test_the_oracle_region_holds_every_change_of_the_ground_truth(edits):
    from instructedit.worlds.shapes import edit_region

    for edit in edits:
        region = edit_region(edit)
        changed = np.abs(
            np.asarray(apply_edit(edit), np.float32) - np.asarray(render(edit.source), np.float32)
        ).max(axis=2)
        assert region.shape == (32, 32)
        # Outside it, only the kept shapes' cores, which a background change touches at their
        # rims by the background's share of a pixel (under 0.1 of a colour step).
        assert changed[region == 0].max() <= 0.1 * 255, edit.family
        assert changed[region == 1].max() > 0, edit.family  # and the edit does change inside


@pytest.mark.slow
def test_masked_editors_are_scored_beside_the_plain_one(tmp_path):
    from instructedit.worlds.evaluation import evaluate_shapes_editor, format_evaluation

    result = evaluate_shapes_editor(
        "shapes", scenes=8, sweep_scenes=0, masks=("oracle", "auto"), progress=False
    )
    methods = result["methods"]
    assert {"editor, oracle masks", "editor, auto masks"} <= set(methods)
    plain = methods["editor"]["oracle"]["all"]["unchanged_error"]
    assert methods["editor, oracle masks"]["oracle"]["all"]["unchanged_error"] < plain
    assert 0.0 <= result["mask_iou"] <= 1.0
    assert "auto masks: mean IoU" in format_evaluation(result)
    with pytest.raises(ValueError, match="masks must hold 'oracle' and/or 'auto'"):
        evaluate_shapes_editor("shapes", scenes=8, sweep_scenes=0, masks=("given",))
