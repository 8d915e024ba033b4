import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from instructedit.datagen import GenerationConfig, parse_shard

SCRIPT = Path(__file__).with_name("generate_tiny.py")


def _run(output, shard="0/1", mode="captions"):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(output), shard, mode],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _tree(root):
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(Path(root).rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean") / "data"
    summary = _run(root)
    return root, summary


@pytest.fixture(scope="module")
def clean_real(tmp_path_factory):
    """The same run with a real image behind each caption (virtual inversion)."""
    root = tmp_path_factory.mktemp("clean-real") / "data"
    summary = _run(root, mode="images")
    return root, summary


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["captions", "images"])
def test_sigkill_mid_run_then_restart_equals_a_clean_run(clean, clean_real, tmp_path, mode):
    clean_root, clean_summary = clean if mode == "captions" else clean_real
    root = tmp_path / "data"
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(root), "0/1", mode],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    # Kill as soon as work is half done: some caption folders exist, more are being written.
    while time.monotonic() < deadline and process.poll() is None:
        finished = [p for p in root.glob("[0-9]*") if p.is_dir()] if root.exists() else []
        if len(finished) >= 2:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (root / "seeds.json").exists()
    resumed_summary = _run(root, mode=mode)
    assert "resumed 2" in resumed_summary or "resumed 3" in resumed_summary
    assert _tree(root) == _tree(clean_root)
    # The summary counts resumed work too, so it matches the clean run's, line for line after
    # the first (which says how much was resumed).
    assert resumed_summary.splitlines()[1:] == clean_summary.splitlines()[1:]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["captions", "images"])
def test_two_shards_together_equal_one_run(clean, clean_real, tmp_path, mode):
    clean_root, _ = clean if mode == "captions" else clean_real
    root = tmp_path / "data"
    _run(root, "1/2", mode)
    assert not (root / "0000000").exists()
    assert (root / "0000001").exists()
    _run(root, "0/2", mode)
    assert _tree(root) == _tree(clean_root)


def test_real_image_runs_start_from_the_images_and_say_so(clean, clean_real):
    import json

    from instructedit.data import read_folder_dataset

    rendered, real = list(read_folder_dataset(clean[0])), list(read_folder_dataset(clean_real[0]))
    assert [r.edit_prompt for r in real] == [r.edit_prompt for r in rendered]
    metadata = [
        json.loads(line)
        for path in sorted(clean_real[0].glob("*/metadata.jsonl"))
        for line in path.read_text().splitlines()
    ]
    assert metadata
    assert {row["method"] for row in metadata} == {"virtual"}
    assert all(
        "method" not in json.loads(line)
        for path in clean[0].glob("*/metadata.jsonl")
        for line in path.read_text().splitlines()
    )


def test_clean_run_layout(clean):
    root, summary = clean
    assert sorted(p.name for p in root.iterdir()) == [
        "0000000",
        "0000001",
        "0000002",
        "0000003",
        "0000004",
        "0000005",
        "_skipped",
        "seeds.json",
    ]
    assert (root / "_skipped" / "0000006.json").is_file()
    assert "caption edits rejected: {'no_rule': 1}" in summary
    assert "kept 12 from 6 caption edits" in summary
    assert not list(root.rglob(".*"))


def test_shard_parsing_and_config_validation():
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "a/b", "1"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
    with pytest.raises(ValueError, match="samples_per_pair"):
        GenerationConfig(samples_per_pair=0)
    with pytest.raises(ValueError, match="control must be one of"):
        GenerationConfig(control="local_blend")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="local_blend needs control='cross_attention'"):
        GenerationConfig(local_blend=0.3)
    with pytest.raises(ValueError, match=r"local_blend must be a threshold in \[0, 1\)"):
        GenerationConfig(control="cross_attention", local_blend=-0.1)
    with pytest.raises(ValueError, match="guidance_range must be"):
        GenerationConfig(guidance_range=(9.0, 8.0))
    # Checked when the config is made, not when the first pair is sampled after loading.
    with pytest.raises(ValueError, match=r"injection_range must be \(low, high\) with 0 <= low"):
        GenerationConfig(injection_range=(0.2, 1.2))


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_processes_under_a_launcher_split_the_captions(clean, tmp_path, launcher):
    clean_root, _ = clean
    root = tmp_path / "data"
    if launcher == "torchrun":
        start = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", "2"]
    else:  # accelerate's multi-process launcher; without CUDA the processes join over gloo
        start = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
        start += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
        start += ["--dynamo_backend", "no", "--main_process_port", "29519"]
    result = subprocess.run(
        [*start, str(SCRIPT), str(root)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Each process reports its own share: 4 captions (indices 0, 2, 4, 6) and 3 (1, 3, 5). Both
    # write to one stdout, and print() writes a line and its newline separately, so one report
    # can land on the other's line: find them anywhere.
    reports = re.findall(r"captions (\d+) \(resumed (\d+)\)", result.stdout)
    assert sorted(reports) == [("3", "0"), ("4", "0")], result.stdout
    # torchrun runs each process on one thread, so floats may differ in the last bits from the
    # clean run; the work done (folders, seeds, prompts) is the same.
    assert (root / "seeds.json").read_text() == (clean_root / "seeds.json").read_text()
    for folder in clean_root.glob("[0-9]*"):
        assert (root / folder.name / "prompt.json").read_text() == (
            folder / "prompt.json"
        ).read_text()


def test_the_config_reaches_the_pair_sampler(tmp_path):
    import open_clip

    from instructedit.captions import TemplateCaptionEditor, TemplateRule
    from instructedit.clip import ClipDirectionalFilter, ClipScorer
    from instructedit.datagen import generate_dataset
    from instructedit.p2p import PromptToPrompt
    from instructedit.testing import tiny_components, tiny_open_clip

    calls = []

    class Spy(PromptToPrompt):
        def sample_pairs(self, *args, **kwargs):
            calls.append(kwargs)
            return super().sample_pairs(*args, **kwargs)

    p2p = Spy(**tiny_components(in_channels=4, seed=0))
    scorer = ClipScorer(tiny_open_clip(seed=0), open_clip.get_tokenizer("ViT-B-32"))
    config = GenerationConfig(
        samples_per_pair=2,
        keep_per_pair=1,
        batch_size=2,
        num_inference_steps=2,
        control="cross_attention",
        injection_range=(0.8, 0.8),
        local_blend=0.3,
        guidance_range=(8.0, 8.0),
    )
    generate_dataset(
        ["a red ball on the grass"],
        tmp_path / "data",
        caption_editor=TemplateCaptionEditor(
            [TemplateRule(r"\b(red)\b", ["blue"], ["make it {new}"])], seed=0
        ),
        p2p=p2p,
        clip_filter=ClipDirectionalFilter(scorer, -1.0, -1.0, -1.0),
        config=config,
        progress=False,
    )
    [call] = calls
    assert call["control"] == "cross_attention"
    assert call["local_blend"] == 0.3
    assert call["guidance_range"] == (8.0, 8.0)
    assert call["injection_range"] == (0.8, 0.8)


def test_only_stale_temporary_index_files_are_removed(tmp_path):
    # A shard that finishes cleans the temporary index files of killed runs, not the one another
    # shard is writing at that moment (its os.replace would fail).
    from instructedit.datagen._run import STALE_SECONDS, _clean_stale_index

    old, fresh = tmp_path / ".seeds.json.killed", tmp_path / ".seeds.json.writing"
    for path in (old, fresh):
        path.write_text("{}")
    past = time.time() - STALE_SECONDS - 5
    os.utime(old, (past, past))
    _clean_stale_index(tmp_path)
    assert not old.exists()
    assert fresh.exists()


def test_repeated_captions_get_their_own_edits_reproducibly(tmp_path):
    # A dataset's captions can repeat; a rule-based editor must give each repeat its own edit (as
    # a language model's sampling does), the same ones on every run.
    import open_clip

    from instructedit.captions import TemplateCaptionEditor, TemplateRule
    from instructedit.clip import ClipDirectionalFilter, ClipScorer
    from instructedit.datagen import generate_dataset
    from instructedit.p2p import PromptToPrompt
    from instructedit.testing import tiny_components, tiny_open_clip

    p2p = PromptToPrompt(**tiny_components(in_channels=4, seed=0))
    scorer = ClipScorer(tiny_open_clip(seed=0), open_clip.get_tokenizer("ViT-B-32"))
    colours = ["blue", "green", "yellow", "purple", "orange", "white", "black", "pink"]
    rule = TemplateRule(r"\b(red)\b", colours, ["make it {new}", "turn the ball {new}"])
    config = GenerationConfig(
        samples_per_pair=1, keep_per_pair=1, batch_size=1, num_inference_steps=1
    )

    def edits(folder):
        generate_dataset(
            ["a red ball on the grass"] * 8,
            folder,
            caption_editor=TemplateCaptionEditor([rule], seed=0),
            p2p=p2p,
            clip_filter=ClipDirectionalFilter(scorer, -1.0, -1.0, -1.0),
            config=config,
            progress=False,
        )
        return [(p.parent.name, p.read_text()) for p in sorted(folder.glob("*/prompt.json"))]

    first = edits(tmp_path / "a")
    assert len(first) == 8
    assert len({prompt for _, prompt in first}) >= 4
    assert edits(tmp_path / "b") == first


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"height": 33}, ValueError, "height must be a positive multiple of 8, got 33"),
        ({"width": 0}, ValueError, "width must be a positive multiple of 8, got 0"),
        ({"height": 256.0}, TypeError, "height must be an int"),
        ({"seed": 1.5}, ValueError, "seed must be an int, got 1.5"),
        ({"shard": (0,)}, ValueError, r"shard must be a pair \(i, n\)"),
    ],
)
def test_config_refuses_sizes_off_the_latent_grid_and_bad_values(kwargs, error, message):
    with pytest.raises(error, match=message):
        GenerationConfig(**kwargs)
    assert GenerationConfig(height=64, width=128).height == 64


def test_a_corrupt_summary_of_a_finished_caption_names_the_file(tmp_path):
    from instructedit.datagen import generate_dataset

    folder = tmp_path / "0000000"
    folder.mkdir()
    (folder / "prompt.json").write_text('{"input": "a", "edit": "b", "output": "c"}')
    (folder / "summary.json").write_text('{"samples": 2, "kept": ')
    with pytest.raises(ValueError, match=r"0000000/summary.json: not valid JSON"):
        generate_dataset(
            ["a red ball"],
            tmp_path,
            caption_editor=None,  # type: ignore[arg-type]
            p2p=None,
            clip_filter=None,  # type: ignore[arg-type]
            progress=False,
        )


def test_captions_must_be_a_list_of_strings(tmp_path):
    from instructedit.datagen import generate_dataset

    for captions, message in (
        ("a red ball", "captions must be a list of str"),
        ([None], r"captions\[0\] must be a str"),
    ):
        with pytest.raises(TypeError, match=message):
            generate_dataset(
                captions,
                tmp_path,
                caption_editor=None,  # type: ignore[arg-type]
                p2p=None,
                clip_filter=None,  # type: ignore[arg-type]
                progress=False,
            )
