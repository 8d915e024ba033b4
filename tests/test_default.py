"""The embedded default model: shipped inside the package, loadable offline, and it edits."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

import instructedit
from instructedit import default
from instructedit.pipeline import EditPipeline
from instructedit.worlds.evaluation import (
    held_out_edits,
    identity_edits,
    oracle_summary,
    pipeline_edits,
)


@pytest.fixture(scope="module")
def pipe():
    return instructedit.load_default()


def test_shipped_weights_are_float16_safetensors_within_25_mb():
    files = [p for p in default.bundled_dir().rglob("*") if p.is_file()]
    weights = [p for p in files if p.suffix == ".safetensors"]
    assert {p.parent.name for p in weights} == {"unet", "vae", "text_encoder", "clip"}
    assert sum(p.stat().st_size for p in files) <= 25_000_000
    for path in weights:
        with safe_open(str(path), "pt") as file:
            dtypes = {file.get_slice(k).get_dtype() for k in file.keys()}  # noqa: SIM118
        assert dtypes == {"F16"}, path
    assert not list(default.bundled_dir().rglob("*.bin"))
    for config in default.bundled_dir().rglob("config.json"):
        assert "_name_or_path" not in json.loads(config.read_text()), config


@pytest.mark.slow
def test_default_editor_edits_fixed_held_out_scenes_by_the_oracle(pipe):
    # 24 held-out rendered scenes (6 per family) that no training stage drew, at the guidance
    # the editor ships with (s_T 5, s_I 3: chosen by the recipe's guidance stage on validation
    # scenes). The shipped editor (sixteenth run: the tenth run's 4358 cross-attention pairs of
    # 2768 distinct caption edits, kept by the CLIP filter and the structure check, trained with
    # the text encoder; its decoder fine-tuned on the shapes) realises most edits but redraws
    # part of many scenes, and most of its removals erase the other shape too, which the oracle's
    # reading of the kept regions refuses; the unchanged-error target (0.08) is not met
    # yet, see the ShapesWorld results page. This guards what it does: measured 6/6 backgrounds,
    # 17/24 edits realised, 10/24 with the rest intact and 8/24 successes (one verdict of margin
    # below); the identity realises none.
    from instructedit.guidance import DualGuidance

    assert pipe.guidance == DualGuidance(text_scale=5.0, image_scale=3.0)
    edits = held_out_edits(24, seed=12345)
    outputs = pipeline_edits(pipe, edits, num_inference_steps=20, progress=False)
    summary = oracle_summary(edits, outputs)
    assert summary["background"]["realised"] >= 5 / 6
    assert summary["all"]["realised"] >= 16 / 24
    assert summary["all"]["intact"] >= 9 / 24
    assert summary["all"]["success"] >= 7 / 24
    assert oracle_summary(edits, identity_edits(edits))["all"]["realised"] == 0.0


@pytest.mark.slow
def test_diffusers_loads_the_default_folder_and_edits_identically(pipe):
    from diffusers import StableDiffusionInstructPix2PixPipeline

    peer = StableDiffusionInstructPix2PixPipeline.from_pretrained(
        default.default_model_dir(), torch_dtype=torch.float32, safety_checker=None
    )
    peer.set_progress_bar_config(disable=True)
    scene = held_out_edits(1, seed=7)[0]
    from instructedit.worlds.shapes import render

    image = render(scene.source)
    ours = pipe(
        image,
        scene.instruction,
        mask_image="none",  # diffusers ignores editing_config.json too
        num_inference_steps=10,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        progress=False,
    ).images
    theirs = peer(
        scene.instruction,
        image=image,
        num_inference_steps=10,
        # diffusers ignores guidance_config.json: it is given the scales ours read from it.
        guidance_scale=5.0,
        image_guidance_scale=3.0,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    # The tiny random models agree within 1e-6 (tests/pipeline); trained weights amplify the
    # summation-order differences of two threads to ~2e-4, a wrong step would be ~1e-1.
    assert np.abs(np.asarray(ours) - theirs).max() < 1e-3


def test_the_name_shapes_loads_the_default(pipe):
    named = EditPipeline.from_pretrained("shapes")
    assert named.unet.dtype == torch.float32
    assert named.unet.config.in_channels == 8
    # Its stored masking (editing_config.json): masks found from the instruction, threshold 0.5.
    assert (named.editing.mask_image, named.editing.mask_threshold) == ("auto", 0.5)
    assert named.editing.keep_unmasked_pixels
    for a, b in zip(named.unet.parameters(), pipe.unet.parameters(), strict=True):
        assert torch.equal(a, b)


def test_default_clip_scores_shapes_captions():
    from instructedit.worlds.shapes import Scene, Shape, render

    scorer = instructedit.load_default_clip()
    red = render(Scene("white", (Shape("circle", "red", 0.5, 0.5, 0.2),)))
    blue = render(Scene("white", (Shape("circle", "blue", 0.5, 0.5, 0.2),)))
    images = scorer.encode_images([red, blue])
    texts = scorer.encode_texts(
        ["a red circle on a white background", "a blue circle on a white background"]
    )
    similarity = images @ texts.T
    # Each scene matches its own caption better than the other's.
    assert similarity[0, 0] > similarity[0, 1]
    assert similarity[1, 1] > similarity[1, 0]


def test_missing_assets_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(default, "bundled_dir", lambda: tmp_path)
    with pytest.raises(FileNotFoundError, match="embedded default model is missing"):
        instructedit.load_default()
    with pytest.raises(FileNotFoundError, match="reinstall instructedit"):
        default.default_clip_dir()


def test_export_writes_float16_that_loads_back(tmp_path, monkeypatch):
    from instructedit.testing import save_tiny_open_clip, save_tiny_pipeline

    run = tmp_path / "run"
    save_tiny_pipeline(run / "editor" / "model", kind="edit")
    save_tiny_open_clip(run / "clip" / "model")
    from instructedit.guidance import DualGuidance, save_guidance_config

    with pytest.raises(FileNotFoundError, match="has no editor/model folder"):
        default.export_default_model(run / "editor", tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()
    target = default.export_default_model(run, tmp_path / "assets" / "shapes")
    monkeypatch.setattr(default, "bundled_dir", lambda: target)
    # A run without a guidance stage (its editor folder stores none) ships the paper's.
    assert instructedit.load_default().guidance == DualGuidance()
    # The guidance the run's guidance stage chose (written into the editor's folder) ships.
    save_guidance_config(DualGuidance(text_scale=5.0, image_scale=2.5), run / "editor" / "model")
    target = default.export_default_model(run, target)
    assert not (target / "editor" / "tokenizer").exists()  # rebuilt from open_clip's BPE
    for config in (target / "editor").glob("*/config.json"):  # no path of the exporting machine
        assert "_name_or_path" not in json.loads(config.read_text()), config
    (target / "MODEL_CARD.md").write_text("# the card\n")
    target = default.export_default_model(run, target)  # a new export keeps the card
    assert (target / "MODEL_CARD.md").read_text() == "# the card\n"
    exported = instructedit.load_default()
    assert exported.guidance == DualGuidance(text_scale=5.0, image_scale=2.5)
    # New scales of the same file size reach the cached folder too.
    save_guidance_config(DualGuidance(text_scale=3.0, image_scale=2.5), run / "editor" / "model")
    default.export_default_model(run, target)
    assert instructedit.load_default().guidance == DualGuidance(text_scale=3.0, image_scale=2.5)
    original = EditPipeline.from_pretrained(
        run / "editor" / "model", guidance=DualGuidance(text_scale=5.0, image_scale=2.5)
    )
    image = Image.new("RGB", (32, 32), "red")

    def edit(p):
        return p(
            image,
            "make it blue",
            num_inference_steps=3,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
            progress=False,
        ).images

    # Only float16 rounding of the weights separates the two.
    assert np.abs(edit(exported) - edit(original)).max() < 0.02
    assert (
        exported.tokenizer("a red circle").input_ids == original.tokenizer("a red circle").input_ids
    )

    # New weights of the same size reach the cached folder too, even where it holds copies (no
    # symbolic links allowed): here another tiny decoder.
    def no_links(*args, **kwargs):
        raise OSError("symbolic links are not allowed here")

    monkeypatch.setattr(default.os, "symlink", no_links)
    shipped = target / "editor" / "vae" / "diffusion_pytorch_model.safetensors"
    shutil.copyfile(shipped, tmp_path / "old_vae.safetensors")
    size, touched = shipped.stat().st_size, shipped.stat().st_mtime_ns + 2_000_000_000
    os.utime(shipped, ns=(touched, touched))  # as a reinstall does: a folder of copies is built
    assert not (default.default_model_dir() / "vae").is_symlink()
    other = save_tiny_pipeline(tmp_path / "other", kind="edit", seed=1)
    from diffusers import AutoencoderKL

    AutoencoderKL.from_pretrained(other / "vae").half().save_pretrained(
        tmp_path / "vae16", safe_serialization=True
    )
    shutil.copyfile(tmp_path / "vae16" / "diffusion_pytorch_model.safetensors", shipped)
    assert shipped.stat().st_size == size
    reloaded = instructedit.load_default()
    new = AutoencoderKL.from_pretrained(tmp_path / "vae16", torch_dtype=torch.float32)
    for a, b in zip(reloaded.vae.parameters(), new.parameters(), strict=True):
        assert torch.equal(a, b)
    # Even a copy that keeps the old file's size and modification time (``cp -p``) does.
    stamp = shipped.stat().st_mtime_ns
    shutil.copyfile(tmp_path / "old_vae.safetensors", shipped)
    os.utime(shipped, ns=(stamp, stamp))
    assert (shipped.stat().st_size, shipped.stat().st_mtime_ns) == (size, stamp)
    reloaded = instructedit.load_default()
    for a, b in zip(reloaded.vae.parameters(), exported.vae.parameters(), strict=True):
        assert torch.equal(a, b)
    # Each new version of the weights removed the folders of the older ones; the folder of
    # the package's own default (another source, which exists) is kept.
    folders = {
        folder: json.loads((folder / "instructedit_source.txt").read_text())["editor"]
        for folder in default.cache_dir().glob("default-*")
    }
    ours = [
        folder for folder, source in folders.items() if source == str((target / "editor").resolve())
    ]
    assert ours == [default.default_model_dir()]
    monkeypatch.undo()
    package = default.default_model_dir()
    assert package.is_dir()
    assert package.parent == ours[0].parent
    # A folder whose source no longer exists (an uninstalled copy of the package) goes too, but
    # only if this machine built it: another one sharing the cache may still use it.
    older = ours[0].with_name("default-older")  # assembled before sources were recorded
    shutil.copytree(ours[0], older, symlinks=True)
    (older / "instructedit_source.txt").unlink()
    elsewhere = ours[0].with_name("default-elsewhere")
    shutil.copytree(ours[0], elsewhere, symlinks=True)
    source = json.loads((elsewhere / "instructedit_source.txt").read_text())
    (elsewhere / "instructedit_source.txt").write_text(json.dumps({**source, "host": "another"}))
    shutil.rmtree(target)
    default.default_model_dir()
    assert elsewhere.is_dir()
    assert older.is_dir()
    assert not ours[0].exists()
    assert package.is_dir()


def test_the_demo_edits_are_successes_of_the_default_as_it_ships():
    """The demo shows examples chosen among successes: at its settings, each one is one."""
    from instructedit.demo import demo_rows

    rows = demo_rows(instructedit.load_default(), steps=20, seed=0)
    assert [(row.edit.family, row.success) for row in rows] == [
        ("recolour", True),
        ("background", True),
        ("add", True),
        ("remove", True),
    ]
    assert all(row.verdict.startswith("success") for row in rows)
