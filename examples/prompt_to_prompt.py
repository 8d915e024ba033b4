"""Prompt-to-Prompt with instructedit: a word swap, self-attention injection, attention maps.

    python examples/prompt_to_prompt.py --model runwayml/stable-diffusion-v1-5   # a real model
    python examples/prompt_to_prompt.py --tiny                                  # offline, random

Writes ``OUTPUT/pairs.png`` (rows: independent renders, word swap, self-attention injection;
columns: source, target) and ``OUTPUT/attention.png`` (the target's per-token cross-attention).
With ``--tiny`` the weights are random: the files show the API, not meaningful pictures.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from instructedit.p2p import (
    AttentionStore,
    CrossAttentionEdit,
    PromptToPrompt,
    SelfAttentionInjection,
    WordSwap,
    attention_grid,
)
from instructedit.testing import tiny_components


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="runwayml/stable-diffusion-v1-5")
    parser.add_argument("--tiny", action="store_true", help="tiny random offline components")
    parser.add_argument("--source", default="a photo of a cat riding a bicycle")
    parser.add_argument("--target", default="a photo of a dog riding a bicycle")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--output", type=Path, default=Path("outputs/p2p"))
    args = parser.parse_args()

    if args.tiny:
        p2p = PromptToPrompt(**tiny_components(in_channels=4, seed=0))
        steps, size = args.steps or 20, 64
    else:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.float16 if device == "cuda" else torch.float32
        p2p = PromptToPrompt.from_pretrained(args.model, torch_dtype=dtype).to(device)
        steps, size = args.steps or 50, 512
    common = {"seed": args.seed, "num_inference_steps": steps, "height": size, "width": size}
    tokenizer = p2p.tokenizer

    plain = p2p.generate(args.source, args.target, **common)
    store = AttentionStore()
    swap = CrossAttentionEdit.for_prompts(
        WordSwap.from_prompts([args.source], [args.target], tokenizer),
        [args.target],
        tokenizer,
        steps,
        cross_replace_steps=0.8,
        self_window=0.4,
        store=store,
    )
    swapped = p2p.generate(args.source, args.target, controller=swap, **common)
    injected = p2p.generate(
        args.source, args.target, controller=SelfAttentionInjection(0.5), **common
    )

    rows = [plain, swapped, injected]
    sheet = Image.new("RGB", (2 * size, len(rows) * size))
    for row, output in enumerate(rows):
        assert isinstance(output.source, list)
        assert isinstance(output.target, list)
        sheet.paste(output.source[0], (0, row * size))
        sheet.paste(output.target[0], (size, row * size))
    args.output.mkdir(parents=True, exist_ok=True)
    sheet.save(args.output / "pairs.png")
    resolution = store.resolutions()[0]
    maps = store.aggregate(resolution)
    attention_grid(maps, args.target, tokenizer, row=1).save(args.output / "attention.png")
    print(args.output / "pairs.png")
    print(args.output / "attention.png")


if __name__ == "__main__":
    main()
