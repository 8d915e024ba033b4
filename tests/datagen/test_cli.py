import json

import pytest

from instructedit.cli import main
from instructedit.data import read_folder_dataset
from instructedit.datagen import read_captions
from instructedit.testing import save_tiny_open_clip, save_tiny_pipeline


@pytest.mark.slow
def test_generate_command_with_precomputed_edits(tmp_path, capsys):
    edits = tmp_path / "edits.jsonl"
    edits.write_text(
        "\n".join(
            json.dumps({"input": f"a {c} ball", "edit": "make it blue", "output": "a blue ball"})
            for c in ("red", "green")
        )
    )
    t2i = save_tiny_pipeline(tmp_path / "t2i", kind="text_to_image")
    clip = save_tiny_open_clip(tmp_path / "clip")
    code = main(
        [
            "generate",
            str(edits),
            str(tmp_path / "out"),
            "--text-to-image",
            str(t2i),
            "--clip-model",
            f"local-dir:{clip}",
            "--samples",
            "2",
            "--keep",
            "1",
            "--steps",
            "2",
            "--min-image-similarity",
            "0",
            "--min-direction-similarity",
            "-1",
            "--min-text-similarity",
            "-1",
            "--control",
            "cross_attention",
            "--injection-range",
            "0.8",
            "0.8",
            "--guidance-range",
            "6",
            "6",
            "--local-blend",
            "0.3",
            "--min-structure-similarity",
            "0",
        ]
    )
    assert code == 0
    assert "kept 2 from 2 caption edits" in capsys.readouterr().out
    records = list(read_folder_dataset(tmp_path / "out"))
    assert [r.input_caption for r in records] == ["a red ball", "a green ball"]
    rows = [
        json.loads(line)
        for path in sorted((tmp_path / "out").glob("*/metadata.jsonl"))
        for line in path.read_text().splitlines()
    ]
    assert [(row["p2p_threshold"], row["cfg_scale"]) for row in rows] == [(0.8, 6.0)] * 2
    # The structure check was asked for, so each kept pair records its score.
    assert all(0.0 <= row["structure_sim"] <= 1.0 for row in rows)


def test_captions_without_edits_need_a_language_model(tmp_path, capsys):
    captions = tmp_path / "captions.txt"
    captions.write_text("a red ball\na cat\n")
    assert read_captions(captions) == (["a red ball", "a cat"], {})
    with pytest.raises(SystemExit):
        main(["generate", str(captions), str(tmp_path / "o"), "--text-to-image", "unused"])
    assert "pass --language-model" in capsys.readouterr().err


def test_bad_shard_is_rejected_before_loading(tmp_path, capsys):
    captions = tmp_path / "c.txt"
    captions.write_text("a\n")
    with pytest.raises(SystemExit):
        main(
            [
                "generate",
                str(captions),
                str(tmp_path / "o"),
                "--text-to-image",
                "unused",
                "--shard",
                "3/2",
            ]
        )
    assert "shard must satisfy" in capsys.readouterr().err


def test_ranges_take_two_values(tmp_path, capsys):
    edits = tmp_path / "edits.jsonl"
    edits.write_text(json.dumps({"input": "a red ball", "edit": "blue", "output": "a blue ball"}))
    with pytest.raises(SystemExit):
        main(
            [
                "generate",
                str(edits),
                str(tmp_path / "o"),
                "--text-to-image",
                "unused",
                "--injection-range",
                "0.1",
                "0.5",
                "0.9",
            ]
        )
    assert "injection_range takes two values, LOW HIGH; got [0.1, 0.5, 0.9]" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "captions.jsonl",
            '{"caption": "a red ball"}\n{"caption": "a cat"\n',
            r"captions.jsonl:2: not valid JSON",
        ),
        ("captions.jsonl", '"a red ball"\n', r"captions.jsonl:1: expected a JSON object, got str"),
        ("captions.jsonl", "\n\n", r"captions.jsonl holds no captions"),
        ("captions.txt", "  \n", r"captions.txt holds no captions"),
    ],
)
def test_malformed_or_empty_captions_file_is_named(tmp_path, capsys, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_captions(path)
    with pytest.raises(SystemExit):
        main(["generate", str(path), str(tmp_path / "o"), "--text-to-image", "unused"])
    assert name in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--min-image-similarity", "1.5", "min_image_similarity must be a cosine similarity in"),
        ("--min-text-similarity", "nan", "min_text_similarity must be a cosine similarity in"),
    ],
)
def test_thresholds_are_checked_before_any_model_loads(tmp_path, capsys, flag, value, message):
    edits = tmp_path / "edits.jsonl"
    edits.write_text(json.dumps({"input": "a red ball", "edit": "blue", "output": "a blue ball"}))
    with pytest.raises(SystemExit):
        main(
            ["generate", str(edits), str(tmp_path / "o"), "--text-to-image", "unused", flag, value]
        )
    assert message in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("control", ["self_attention", "cross_attention"])
def test_generate_command_on_an_sdxl_model(tmp_path, control):
    edits = tmp_path / "edits.jsonl"
    edits.write_text(
        json.dumps({"input": "a red ball", "edit": "make it blue", "output": "a blue ball"})
    )
    t2i = save_tiny_pipeline(tmp_path / "xl", kind="text_to_image_xl")
    clip = save_tiny_open_clip(tmp_path / "clip")
    arguments = ["--clip-model", f"local-dir:{clip}", "--samples", "2", "--keep", "1"]
    arguments += ["--steps", "2", "--min-image-similarity", "0", "--control", control]
    arguments += ["--min-direction-similarity", "-1", "--min-text-similarity", "-1"]
    out = tmp_path / "out"
    assert main(["generate", str(edits), str(out), "--text-to-image", str(t2i), *arguments]) == 0
    (record,) = read_folder_dataset(out)
    assert record.input_caption == "a red ball"
    assert record.input_image.size == (32, 32)  # the SDXL model's native size


@pytest.mark.slow
def test_generate_command_with_a_chat_model(tmp_path, capsys):
    from instructedit.captions import CaptionEdit, finetune_caption_editor
    from instructedit.testing import serve_chat_model, tiny_causal_lm

    edits = [
        CaptionEdit(
            f"a {c} ball on a {b} table", f"make the ball {n}", f"a {n} ball on a {b} table"
        )
        for c, n in [("red", "blue"), ("green", "yellow"), ("blue", "red")]
        for b in ["wooden", "glass"]
    ]
    model, tokenizer = tiny_causal_lm(seed=0)
    finetune_caption_editor(
        model, tokenizer, edits, epochs=150, learning_rate=3e-3, batch_size=6, progress=False
    )
    captions = tmp_path / "captions.txt"
    captions.write_text("a red ball on a wooden table\na green ball on a glass table\n")
    t2i = save_tiny_pipeline(tmp_path / "t2i", kind="text_to_image")
    clip = save_tiny_open_clip(tmp_path / "clip")
    out = tmp_path / "out"
    with serve_chat_model(model.eval(), tokenizer) as server:
        arguments = [
            "generate", str(captions), str(out), "--text-to-image", str(t2i),
            "--chat-model", "tiny", "--chat-base-url", server.base_url,
            "--clip-model", f"local-dir:{clip}", "--samples", "1", "--keep", "1",
            "--steps", "2", "--min-image-similarity", "0",
            "--min-direction-similarity", "-1", "--min-text-similarity", "-1",
        ]  # fmt: skip
        assert main(arguments) == 0
        sent = len(server.requests)
        assert main(arguments) == 0  # resumed: nothing asked again
        assert len(server.requests) == sent
    assert sent >= 2
    assert any((out / ".chat-cache").iterdir())
    records = list(read_folder_dataset(out))
    assert records
    assert all(r.edit_prompt.startswith("make the ball") for r in records)
