"""The whole data chain on the tiny offline models: captions → edits → pairs → CLIP → dataset.

    python examples/build_dataset.py --output outputs/tiny_dataset

1. a tiny language model is fine-tuned on a handful of human-written caption edits and writes
   edits for new captions (GPT-3's part in the paper);
2. Prompt-to-Prompt renders candidate pairs with the recipe's random parameters;
3. the CLIP filter keeps the best pairs;
4. the dataset is written in the official folder layout and converted to parquet.

All weights are random or trained for seconds, so the pictures are not meaningful; the files,
formats and counts are exactly those of a real run. Rerunning resumes where a run stopped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import open_clip
import torch

from instructedit.captions import (
    CaptionEdit,
    LanguageModelCaptionEditor,
    SamplingConfig,
    finetune_caption_editor,
)
from instructedit.clip import ClipDirectionalFilter, ClipScorer
from instructedit.data import folder_to_parquet
from instructedit.datagen import GenerationConfig, generate_dataset
from instructedit.p2p import PromptToPrompt
from instructedit.testing import tiny_causal_lm, tiny_components, tiny_open_clip

HUMAN_WRITTEN = [
    CaptionEdit(
        f"a {colour} {shape} on a {background} background",
        f"make the {shape} {new}",
        f"a {new} {shape} on a {background} background",
    )
    for colour, new in [("red", "blue"), ("green", "yellow"), ("blue", "red")]
    for shape in ["circle", "square"]
    for background in ["white", "black"]
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("outputs/tiny_dataset"))
    parser.add_argument("--samples", type=int, default=6, help="candidate pairs per caption edit")
    args = parser.parse_args()

    model, tokenizer = tiny_causal_lm(seed=0)
    finetune_caption_editor(
        model, tokenizer, HUMAN_WRITTEN, epochs=150, learning_rate=3e-3, batch_size=12
    )
    editor = LanguageModelCaptionEditor(
        model, tokenizer, sampling=SamplingConfig(max_new_tokens=40)
    )

    p2p = PromptToPrompt(**tiny_components(in_channels=4, seed=0))
    scorer = ClipScorer(tiny_open_clip(seed=0), open_clip.get_tokenizer("ViT-B-32"))
    # Random CLIP features barely move with the image: loosen the paper's thresholds.
    clip_filter = ClipDirectionalFilter(
        scorer, min_image_similarity=0.5, min_direction_similarity=-1.0, min_text_similarity=-1.0
    )
    captions = [
        f"a {c} {s} on a {b} background"
        for c in ("red", "green", "blue")
        for s in ("circle", "square")
        for b in ("white", "grey")
    ]
    config = GenerationConfig(
        samples_per_pair=args.samples, keep_per_pair=2, batch_size=3, num_inference_steps=10
    )
    torch.manual_seed(0)
    summary = generate_dataset(
        captions,
        args.output,
        caption_editor=editor,
        p2p=p2p,
        clip_filter=clip_filter,
        config=config,
    )
    print(summary)
    print(folder_to_parquet(args.output, args.output.with_suffix(".parquet")))


if __name__ == "__main__":
    main()
