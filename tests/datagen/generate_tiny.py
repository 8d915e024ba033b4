"""A tiny generation run, executed as a subprocess by test_run.py (so it can be SIGKILLed).

python generate_tiny.py OUTPUT [i/n] [images]

With "images", each caption describes a real image (seeded noise) that its pairs start from.
"""

import sys
from pathlib import Path

import numpy as np
import open_clip
from PIL import Image

from instructedit.captions import TemplateCaptionEditor, TemplateRule
from instructedit.clip import ClipDirectionalFilter, ClipScorer
from instructedit.datagen import GenerationConfig, generate_dataset
from instructedit.p2p import PromptToPrompt
from instructedit.testing import tiny_components, tiny_open_clip

out = Path(sys.argv[1])
shard = sys.argv[2] if len(sys.argv) > 2 else "0/1"
real = len(sys.argv) > 3 and sys.argv[3] == "images"
i, n = (int(x) for x in shard.split("/"))
CAPTIONS = [f"a {c} ball on the {p}" for c in ["red", "blue", "green"] for p in ["grass", "sand"]]
captions = [*CAPTIONS, "nothing to edit here"]
rule = TemplateRule(
    r"\b(red|blue|green)\b",
    ["red", "blue", "green", "yellow"],
    ["make it {new}", "turn the {old} ball {new}"],
)
editor = TemplateCaptionEditor([rule], seed=0)
p2p = PromptToPrompt(**tiny_components(in_channels=4, seed=0))
scorer = ClipScorer(tiny_open_clip(seed=0), open_clip.get_tokenizer("ViT-B-32"))
clip_filter = ClipDirectionalFilter(scorer, 0.0, -1.0, -1.0)
config = GenerationConfig(
    samples_per_pair=3, keep_per_pair=2, batch_size=2, num_inference_steps=3, seed=1, shard=(i, n)
)
summary = generate_dataset(
    captions,
    out,
    caption_editor=editor,
    p2p=p2p,
    clip_filter=clip_filter,
    config=config,
    images=(
        [
            Image.fromarray(np.random.default_rng(k).integers(0, 256, (32, 32, 3), dtype=np.uint8))
            for k in range(len(captions))
        ]
        if real
        else None
    ),
    progress=False,
)
print(summary)
