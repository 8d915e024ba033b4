import re
import shutil

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionInstructPix2PixPipeline
from safetensors.torch import load_file

from instructedit import EditPipeline
from instructedit.testing import save_tiny_pipeline, tiny_components


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("pipe") / "tiny-ip2p", kind="edit", seed=0)


def _edit(pipe, image):
    return pipe(
        image,
        "make it snowy",
        num_inference_steps=3,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
        progress=False,
    ).images


def test_from_pretrained_equals_construction_from_parts(folder, noise_image):
    loaded = EditPipeline.from_pretrained(folder)
    direct = EditPipeline(**tiny_components(seed=0))
    assert type(loaded.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    np.testing.assert_array_equal(_edit(loaded, noise_image), _edit(direct, noise_image))


def test_scheduler_by_name_keeps_the_noise_schedule(folder):
    pipe = EditPipeline.from_pretrained(folder, scheduler="ddim")
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    assert pipe.scheduler.config.clip_sample is False
    assert pipe.scheduler.config.beta_end == 0.012


def test_torch_dtype(folder):
    pipe = EditPipeline.from_pretrained(folder, torch_dtype=torch.float16)
    assert pipe.unet.dtype == torch.float16
    assert pipe.text_encoder.dtype == torch.float16


def test_save_pretrained_round_trips_and_loads_in_diffusers(folder, tmp_path, noise_image):
    pipe = EditPipeline.from_pretrained(folder)
    saved = pipe.save_pretrained(tmp_path / "copy")
    weights = load_file(str(saved / "unet" / "diffusion_pytorch_model.safetensors"))
    assert weights["conv_in.weight"].shape[1] == 8
    again = EditPipeline.from_pretrained(saved)
    np.testing.assert_array_equal(_edit(again, noise_image), _edit(pipe, noise_image))
    theirs = StableDiffusionInstructPix2PixPipeline.from_pretrained(saved, safety_checker=None)
    theirs.set_progress_bar_config(disable=True)
    out = theirs(
        "make it snowy",
        image=noise_image,
        num_inference_steps=3,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert np.abs(out - _edit(pipe, noise_image)).max() < 1e-4


def test_missing_component_is_named(folder, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(FileNotFoundError, match=r"missing component folder\(s\) \['vae'\]"):
        EditPipeline.from_pretrained(broken)


def test_missing_weights_are_named(folder, tmp_path):
    broken = tmp_path / "noweights"
    shutil.copytree(folder, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="unet holds no weights"):
        EditPipeline.from_pretrained(broken)


def test_pickle_weights_need_explicit_opt_in(folder, tmp_path, noise_image):
    pickled = tmp_path / "pickled"
    shutil.copytree(folder, pickled)
    target = pickled / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(str(target)), pickled / "unet" / "diffusion_pytorch_model.bin")
    target.unlink()
    with pytest.raises(ValueError, match="allow_pickle=True"):
        EditPipeline.from_pretrained(pickled)
    loaded = EditPipeline.from_pretrained(pickled, allow_pickle=True)
    np.testing.assert_array_equal(
        _edit(loaded, noise_image), _edit(EditPipeline.from_pretrained(folder), noise_image)
    )


def test_missing_local_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        EditPipeline.from_pretrained(tmp_path / "nowhere")
    # A relative path that cannot be a hub id is refused before the hub is asked.
    with pytest.raises(FileNotFoundError, match="nor a hub id"):
        EditPipeline.from_pretrained("outputs/shapes/editor/model")


def test_a_hub_id_that_cannot_load_names_the_argument():
    # The tests run offline (conftest): a hub id that is not cached cannot load.
    with pytest.raises(OSError, match="is not a local folder, and loading it as a hub id failed"):
        EditPipeline.from_pretrained("nobody-here/no-such-pipeline")


@pytest.mark.parametrize(
    "text",
    [
        "timbrooks/instruct-pix2pix",
        "shapes",
        "org/my_model.v2",
        "a/b/c",
        "--flag",
        "outputs/shapes/editor/model",
        "x" * 97,
        "a..b",
        "a--b",
        "-a/b",
        "a/b-",
        "a b",
        "é/ü",
        "foo.git",
        "a/" + "x" * 95,
    ],
)
def test_hub_id_check_agrees_with_huggingface_hub(text):
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    from instructedit.components import _is_hub_id

    try:
        validate_repo_id(text)
        valid = True
    except HFValidationError:
        valid = False
    assert _is_hub_id(text) == valid


def test_stored_guidance_is_the_loaded_default(folder, tmp_path, noise_image):
    from instructedit.guidance import GUIDANCE_CONFIG_NAME, DualGuidance

    # A diffusers folder has no guidance file: the paper's scales.
    assert not (folder / GUIDANCE_CONFIG_NAME).exists()
    assert EditPipeline.from_pretrained(folder).guidance == DualGuidance()
    tuned = DualGuidance(text_scale=3.0, image_scale=1.2, interval=(0.0, 0.5))
    pipe = EditPipeline.from_pretrained(folder, guidance=tuned)
    saved = pipe.save_pretrained(tmp_path / "tuned")
    loaded = EditPipeline.from_pretrained(saved)
    assert loaded.guidance == tuned
    # The stored scales are what an edit without scales uses.
    explicit = EditPipeline.from_pretrained(folder, guidance=DualGuidance(interval=(0.0, 0.5)))
    np.testing.assert_array_equal(
        _edit(loaded, noise_image),
        explicit(
            noise_image,
            "make it snowy",
            num_inference_steps=3,
            guidance_scale=3.0,
            image_guidance_scale=1.2,
            output_type="np",
            generator=torch.Generator().manual_seed(0),
            progress=False,
        ).images,
    )
    # An argument overrides the file.
    assert EditPipeline.from_pretrained(saved, guidance=DualGuidance()).guidance == DualGuidance()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "is not valid JSON"),
        ("[7.5, 1.5]", "must hold a JSON object"),
        ('{"_class_name": "ClassifierFreeGuidance", "scale": 5}', "not a 'DualGuidance'"),
        ('{"image_scale": -1}', "image_scale must be a finite number >= 0"),
        ('{"interval": 0.5}', "interval must be a \\[start, end\\] list"),
        ('{"interval": [0.6, 0.2]}', "interval must satisfy"),
    ],
)
def test_a_bad_guidance_file_is_named_before_weights_load(folder, tmp_path, text, message):
    from instructedit.guidance import GUIDANCE_CONFIG_NAME

    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / GUIDANCE_CONFIG_NAME).write_text(text)
    # No weights either: reaching the loader would raise FileNotFoundError instead.
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ValueError, match=message) as info:
        EditPipeline.from_pretrained(broken)
    assert GUIDANCE_CONFIG_NAME in str(info.value)


def test_notes_in_the_guidance_file_are_kept_and_ignored(tmp_path, caplog):
    import json

    from instructedit import __version__
    from instructedit.guidance import DualGuidance, load_guidance_config, save_guidance_config

    path = save_guidance_config(DualGuidance(text_scale=5.0, image_scale=2.5), tmp_path, note="n")
    values = json.loads(path.read_text())
    assert values["_note"] == "n"
    assert values["_instructedit_version"] == __version__
    assert "backend" not in values  # a property of the machine, not of the model
    assert load_guidance_config(tmp_path) == DualGuidance(text_scale=5.0, image_scale=2.5)
    assert load_guidance_config(tmp_path / "elsewhere") is None
    # A field written by a newer version is ignored, with a warning naming it.
    path.write_text(json.dumps({**values, "stochasticity": 0.3}))
    with caplog.at_level("WARNING"):
        assert load_guidance_config(tmp_path) == DualGuidance(text_scale=5.0, image_scale=2.5)
    assert "ignoring field(s) ['stochasticity']" in caplog.text


def test_hub_settings_are_read_when_the_repository_has_them(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    from instructedit.guidance import DualGuidance, save_guidance_config
    from instructedit.pipeline._edit import _hub_folder_with

    snapshot = tmp_path / "snapshot"
    stored = save_guidance_config(DualGuidance(text_scale=4.0, image_scale=2.0), snapshot)
    asked = []

    def download(repo_id, filename, **kwargs):
        asked.append((repo_id, filename, kwargs["revision"]))
        return str(stored)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    found = _hub_folder_with("owner/model", "guidance_config.json", revision="v1", cache_dir=None)
    assert found == snapshot
    assert asked == [("owner/model", "guidance_config.json", "v1")]

    def missing(repo_id, filename, **kwargs):
        raise EntryNotFoundError("no such file")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", missing)
    assert _hub_folder_with("owner/model", "x.json", revision=None, cache_dir=None) is None


def test_offline_hub_settings_fall_back_with_a_warning(caplog):
    from instructedit.pipeline._edit import _hub_folder_with

    # Offline (the tests' setting) and not cached: the defaults, and the user is told.
    with caplog.at_level("WARNING"):
        found = _hub_folder_with(
            "nobody-here/no-such-pipeline", "guidance_config.json", revision=None, cache_dir=None
        )
    assert found is None
    assert "could not check nobody-here/no-such-pipeline" in caplog.text


def test_from_pretrained_asks_the_hub_only_for_hub_ids(folder, tmp_path, monkeypatch):
    from instructedit.guidance import DualGuidance, save_guidance_config
    from instructedit.pipeline import EditingConfig, _edit, save_editing_config

    snapshot = tmp_path / "snapshot"
    save_guidance_config(DualGuidance(text_scale=4.0), snapshot)
    save_editing_config(EditingConfig(mask_image="auto"), snapshot)
    asked = []

    def hub_folder_with(hub_id, name, *, revision, cache_dir):
        asked.append((hub_id, name, revision))
        return snapshot

    monkeypatch.setattr(_edit, "_hub_folder_with", hub_folder_with)
    monkeypatch.setattr(_edit, "load_components", lambda *a, **k: tiny_components(seed=0))
    pipe = EditPipeline.from_pretrained("owner/model", revision="v2")
    assert pipe.guidance == DualGuidance(text_scale=4.0)
    assert pipe.editing == EditingConfig(mask_image="auto")
    expected = [
        ("owner/model", "guidance_config.json", "v2"),
        ("owner/model", "editing_config.json", "v2"),
    ]
    assert asked == expected
    explicit = EditPipeline.from_pretrained(
        "owner/model", guidance=DualGuidance(), editing=EditingConfig()
    )
    assert (explicit.guidance, explicit.editing) == (DualGuidance(), EditingConfig())
    EditPipeline.from_pretrained(folder)
    assert asked == expected  # neither explicit settings nor a folder ask


def test_editing_config_round_trips_and_refuses_bad_values(tmp_path, caplog):
    import json

    from instructedit.pipeline import EditingConfig, load_editing_config, save_editing_config

    config = EditingConfig(mask_image="auto", mask_threshold=0.3, keep_unmasked_pixels=True)
    path = save_editing_config(config, tmp_path, note="chosen on validation edits")
    assert load_editing_config(tmp_path) == config
    assert load_editing_config(tmp_path / "elsewhere") is None
    values = json.loads(path.read_text())
    assert values["_note"] == "chosen on validation edits"
    for bad, named in (
        ({"mask_threshold": 1.5}, "mask_threshold must be in [0, 1], got 1.5"),
        ({"mask_image": "mask.png"}, "mask_image must be 'auto' or None"),
        ({"keep_unmasked_pixels": "yes"}, "keep_unmasked_pixels must be True or False"),
        ({"mask_feather": -1}, "mask_feather must be finite and >= 0"),
    ):
        path.write_text(json.dumps({**values, **bad}))
        with pytest.raises(ValueError, match=re.escape(named)) as info:
            load_editing_config(tmp_path)
        assert str(path) in str(info.value)
    path.write_text(json.dumps({"_class_name": "DualGuidance"}))
    with pytest.raises(ValueError, match="describes a 'DualGuidance', not a 'EditingConfig'"):
        load_editing_config(tmp_path)


def test_save_pretrained_stores_the_editing_config(tmp_path):
    from instructedit.pipeline import EditingConfig

    pipe = EditPipeline(**tiny_components(seed=0))
    pipe.editing = EditingConfig(mask_image="auto", mask_threshold=0.7)
    pipe.save_pretrained(tmp_path / "saved")
    assert EditPipeline.from_pretrained(tmp_path / "saved").editing == pipe.editing
