"""Pairs from real images: reading images with captions, and `instructedit generate --images`
writing pairs whose inputs are the given images through the autoencoder."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from instructedit.cli import main
from instructedit.data import read_folder_dataset, write_parquet
from instructedit.data._records import EditRecord
from instructedit.datagen import read_image_captions
from instructedit.p2p import PromptToPrompt
from instructedit.testing import save_tiny_open_clip, save_tiny_pipeline


def _photo(seed, size=(32, 32)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def test_a_folder_with_caption_files(tmp_path):
    for index, caption in enumerate(["a red ball", "a blue cube"]):
        _photo(index).save(tmp_path / f"{index}.png")
        (tmp_path / f"{index}.txt").write_text(caption + "\n")
    captions, images, edits = read_image_captions(tmp_path)
    assert captions == ["a red ball", "a blue cube"]
    assert np.array_equal(np.asarray(images[1]), np.asarray(_photo(1)))
    assert edits == {}
    (tmp_path / "2.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match=r"2.jpg has no caption: write it to 2.txt"):
        read_image_captions(tmp_path)


def test_a_folder_with_metadata_a_jsonl_and_a_parquet(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    _photo(0).save(folder / "a.png")
    rows = {"file_name": "a.png", "caption": "a red ball", "edit": "make it blue"}
    (folder / "metadata.jsonl").write_text(json.dumps({**rows, "output": "a blue ball"}) + "\n")
    captions, _, edits = read_image_captions(folder)
    assert captions == ["a red ball"]
    assert edits["a red ball"].output == "a blue ball"
    listing = tmp_path / "list.jsonl"
    listing.write_text(json.dumps({"image": "folder/a.png", "caption": "a red ball"}) + "\n")
    captions, images, _ = read_image_captions(listing)
    assert np.array_equal(np.asarray(images[0]), np.asarray(_photo(0)))
    parquet = write_parquet(
        [EditRecord(_photo(3), "make it blue", _photo(4), "a red ball", "a blue ball")],
        tmp_path / "pairs.parquet",
    )
    with pytest.raises(ValueError, match=r"needs an 'image' column and a 'caption'"):
        read_image_captions(parquet)
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(parquet)
    photos = pa.table({"image": table["input_image"], "caption": table["input_caption"]})
    pq.write_table(photos, tmp_path / "photos.parquet")
    captions, images, _ = read_image_captions(tmp_path / "photos.parquet")
    assert captions == ["a red ball"]
    assert np.array_equal(np.asarray(images[0]), np.asarray(_photo(3)))


@pytest.mark.parametrize(
    ("rows", "error", "message"),
    [
        ([{"caption": "a cat"}], ValueError, r"list.jsonl:1: field 'image' is missing"),
        ([{"image": "nope.png", "caption": "a"}], FileNotFoundError, "no such image"),
        ([{"image": "a.png", "caption": ""}], ValueError, "field 'caption' is missing or empty"),
        ([{"image": "a.png", "caption": "a", "edit": "x"}], ValueError, "must both be text"),
    ],
)
def test_bad_image_lists_name_the_line(tmp_path, rows, error, message):
    _photo(0).save(tmp_path / "a.png")
    listing = tmp_path / "list.jsonl"
    listing.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(error, match=message):
        read_image_captions(listing)


def test_missing_and_unknown_sources_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder or file"):
        read_image_captions(tmp_path / "missing")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"must be a folder of images, a \.jsonl"):
        read_image_captions(tmp_path / "x.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        read_image_captions(tmp_path / "empty")


@pytest.mark.parametrize("method", ["virtual", "ddim"])
def test_real_pairs_come_at_the_native_size_and_the_edit_guidance(tmp_path, method):
    from instructedit.testing import tiny_components

    p2p = PromptToPrompt(**tiny_components(in_channels=4, seed=0, scheduler="ddim"))
    photo = _photo(0, size=(64, 48))
    candidates = p2p.sample_real_pairs(
        photo, "a red ball", "a blue ball", 2, method=method, num_inference_steps=2,
        guidance_range=(9.0, 9.0), progress=False,
    )  # fmt: skip
    assert [c.source.size for c in candidates] == [(32, 24)] * 2  # native 32, aspect kept
    assert [c.target.size for c in candidates] == [(32, 24)] * 2
    expected = 9.0 if method == "virtual" else 7.5  # an inversion renders at the edit's 7.5
    assert [c.guidance_scale for c in candidates] == [expected] * 2
    from instructedit.testing import tiny_sdxl_components

    xl = PromptToPrompt(**tiny_sdxl_components(in_channels=4))
    with pytest.raises(ValueError, match="real-image pairs are made with Stable Diffusion 1"):
        xl.sample_real_pairs(photo, "a", "b", 1, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["virtual", "ddim"])
def test_generate_images_writes_pairs_from_the_given_images(tmp_path, method):
    photos = tmp_path / "photos"
    photos.mkdir()
    metadata = []
    for index, (colour, new) in enumerate([("red", "blue"), ("green", "yellow")]):
        _photo(index).save(photos / f"{index}.png")
        metadata.append(
            {
                "file_name": f"{index}.png",
                "caption": f"a {colour} ball",
                "edit": f"make it {new}",
                "output": f"a {new} ball",
            }
        )
    (photos / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in metadata))
    t2i = save_tiny_pipeline(tmp_path / "t2i", kind="text_to_image", scheduler="ddim")
    clip = save_tiny_open_clip(tmp_path / "clip")
    out = tmp_path / "out"
    arguments = [
        "generate", str(photos), str(out), "--images", "--real-method", method,
        "--text-to-image", str(t2i), "--clip-model", f"local-dir:{clip}",
        "--samples", "2", "--keep", "1", "--steps", "3", "--min-image-similarity", "0",
        "--min-direction-similarity", "-1", "--min-text-similarity", "-1",
    ]  # fmt: skip
    assert main(arguments) == 0
    records = list(read_folder_dataset(out))
    assert [r.input_caption for r in records] == ["a red ball", "a green ball"]
    # Each input is its photograph through the autoencoder.
    p2p = PromptToPrompt.from_pretrained(t2i)
    for index, record in enumerate(records):
        pixels = torch.from_numpy(np.asarray(_photo(index), np.float32) / 127.5 - 1)
        with torch.no_grad():
            latent = p2p.vae.encode(pixels.permute(2, 0, 1)[None]).latent_dist.mean
            decoded = p2p.vae.decode(latent).sample[0].permute(1, 2, 0)
        expected = ((decoded.clamp(-1, 1) + 1) * 127.5).numpy()
        got = np.asarray(record.input_image, np.float32)
        # The layout stores JPEG: within its error of the autoencoded photo, far from the photo.
        assert np.abs(got - expected).mean() < 1.5
        assert np.abs(got - expected).max() < 8.0
        assert np.abs(got - np.asarray(_photo(index), np.float32)).mean() > 20.0
    rows = [
        json.loads(line)
        for path in sorted(out.glob("*/metadata.jsonl"))
        for line in path.read_text().splitlines()
    ]
    assert {row["method"] for row in rows} == {method}


@pytest.mark.parametrize("method", ["virtual", "ddim"])
def test_real_image_pairs_take_the_pair_controls(method):
    from instructedit.p2p import CrossAttentionEdit, LocalBlend, UnifiedAttentionControl, WordSwap
    from instructedit.testing import tiny_components

    p2p = PromptToPrompt(**tiny_components(in_channels=4, seed=0, scheduler="ddim"))
    photo, source, target = _photo(0), "a red ball", "a blue ball"
    kwargs = {"num_samples": 1, "num_inference_steps": 3, "method": method, "progress": False}
    plain = p2p.sample_real_pairs(photo, source, target, **kwargs)[0]
    crossed = p2p.sample_real_pairs(
        photo, source, target, control="cross_attention", local_blend=0.3, **kwargs
    )[0]
    assert plain.injection == crossed.injection  # p, drawn alike
    plain_pixels, crossed_pixels = (np.asarray(c.target, np.float32) for c in (plain, crossed))
    assert np.abs(plain_pixels - crossed_pixels).max() > 1.0
    # What the control means: the documented controller, with p from the same draw.
    p = crossed.injection
    if method == "virtual":

        def virtual(**settings):
            controller = UnifiedAttentionControl.from_prompts(
                [source], [target], p2p.tokenizer, encode_text=p2p.encode_text, **settings
            )
            return p2p.edit_real(
                photo, source, target, controller=controller, num_inference_steps=3,
                guidance_scale=crossed.guidance_scale, seed=crossed.seed, progress=False,
            ).target[0]  # fmt: skip

        direct = virtual(
            local_words="edits", cross_replace_steps=p, self_replace_steps=0.3,
            local_threshold=0.3,
        )  # fmt: skip
        # control="self_attention": the source's self-attention for p, no cross-attention control
        own = virtual(cross_replace_steps=0.0, self_replace_steps=p)
        assert np.abs(np.asarray(own, np.float32) - plain_pixels).max() <= 1.0
    else:
        # google's edit as sample_pairs documents it: a word swap for the first p of the steps,
        # the source's self-attention for the first 0.4, a local blend at 0.3.
        words = ([source], [target], p2p.tokenizer)
        controller = CrossAttentionEdit.for_prompts(
            WordSwap.from_prompts(*words), [target], p2p.tokenizer, 3, cross_replace_steps=p,
            self_window=0.4, self_max_resolution=None,
            local_blend=LocalBlend.from_edits(*words, threshold=0.3),
        )  # fmt: skip
        direct = p2p.edit_real(
            photo, source, target, method="ddim", controller=controller, num_inference_steps=3,
            progress=False,
        ).target[0]  # fmt: skip
    assert np.abs(np.asarray(direct, np.float32) - crossed_pixels).max() <= 1.0
    with pytest.raises(ValueError, match="local_blend needs control='cross_attention'"):
        p2p.sample_real_pairs(photo, source, target, local_blend=0.3, **kwargs)


def test_a_captioner_captions_images_that_have_none(tmp_path):
    from instructedit.datagen import ImageCaptioner
    from instructedit.testing import save_tiny_captioner

    model = save_tiny_captioner(tmp_path / "captioner", caption="a photo of shapes")
    folder = tmp_path / "photos"
    folder.mkdir()
    _photo(0).save(folder / "a.png")
    _photo(1, size=(48, 40)).save(folder / "b.png")
    (folder / "b.txt").write_text("a green square")
    with pytest.raises(ValueError, match="or pass a captioner"):
        read_image_captions(folder)
    captions, images, _ = read_image_captions(folder, captioner=ImageCaptioner(model))
    assert captions == ["a photo of shapes", "a green square"]  # b keeps its own
    assert images[1].size == (48, 40)
    with pytest.raises(SystemExit):  # --captioner without --images
        main(["generate", str(folder), str(tmp_path / "o"), "--text-to-image", "x",
              "--captioner", str(model)])  # fmt: skip


def test_a_datasets_split_in_memory_or_saved(tmp_path):
    import datasets

    photos = [_photo(0), _photo(1, size=(40, 32))]
    split = datasets.Dataset.from_dict(
        {"image": photos, "text": ["a red ball", "a blue cube"]}
    ).cast_column("image", datasets.Image())
    saved = tmp_path / "split"
    split.save_to_disk(str(saved))
    for source in (split, saved):
        captions, images, edits = read_image_captions(source)
        assert captions == ["a red ball", "a blue cube"]
        assert edits == {}
        assert images[1].size == (40, 32)
        assert np.array_equal(np.asarray(images[1]), np.asarray(photos[1]))
    both = tmp_path / "both"
    datasets.DatasetDict({"train": split, "test": split}).save_to_disk(str(both))
    with pytest.raises(ValueError, match=r"holds the splits \['test', 'train'\]; pass one split"):
        read_image_captions(both)
    assert read_image_captions(both / "train")[0] == ["a red ball", "a blue cube"]
    with pytest.raises(ValueError, match=r"needs an 'image' column and a 'caption'"):
        read_image_captions(split.rename_column("text", "label"))
    with pytest.raises(ValueError, match=r"pass one split of the DatasetDict, e.g. dataset\['a'\]"):
        read_image_captions(datasets.DatasetDict({"a": split, "b": split}))
    with pytest.raises(ValueError, match="a streamed IterableDataset cannot be indexed"):
        read_image_captions(split.to_iterable_dataset())
