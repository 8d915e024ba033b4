"""Dataset generation throughput: the CLIP filter batched vs one pair at a time, and pairs/s.

    python benchmarks/datagen.py [--pairs 64]

Part 1 scores the same candidate pairs with :class:`ClipDirectionalFilter` in one batched call
and pair by pair (what a naive loop over candidates does), on the tiny open_clip model (CPU) or
ViT-L-14-sized random weights (``--large``; use on CUDA), and prints pairs/s, the speed-up and
the largest score difference. Part 2 times ``PromptToPrompt.sample_pairs`` on the tiny models.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import open_clip
import torch
from PIL import Image

from instructedit.clip import ClipDirectionalFilter, ClipScorer
from instructedit.p2p import PromptToPrompt
from instructedit.testing import tiny_components, tiny_open_clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--large", action="store_true", help="ViT-L-14-sized random CLIP")
    parser.add_argument("--samples", type=int, default=8, help="pairs for the generation timing")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.large:
        model = open_clip.create_model("ViT-L-14", pretrained=None, device=device)
    else:
        model = tiny_open_clip(seed=0).to(device)
    scorer = ClipScorer(model, open_clip.get_tokenizer("ViT-B-32"), batch_size=64, device=device)
    clip_filter = ClipDirectionalFilter(scorer)
    rng = np.random.default_rng(0)
    side = 256
    before = [
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
        for _ in range(args.pairs)
    ]
    after = [
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
        for _ in range(args.pairs)
    ]
    captions_0 = ["a photograph of a girl riding a horse"] * args.pairs
    captions_1 = ["a photograph of a girl riding a dragon"] * args.pairs
    clip_filter(before[:2], after[:2], captions_0[:2], captions_1[:2])  # warm-up

    start = time.perf_counter()
    batched = clip_filter(before, after, captions_0, captions_1)
    batched_time = time.perf_counter() - start
    start = time.perf_counter()
    single = [
        clip_filter([b], [a], [c0], [c1])
        for b, a, c0, c1 in zip(before, after, captions_0, captions_1, strict=True)
    ]
    single_time = time.perf_counter() - start
    single_dir = torch.cat([r.scores.direction_similarity for r in single])
    difference = (single_dir - batched.scores.direction_similarity).abs().max().item()
    print(
        f"device {device}, CLIP {'ViT-L-14 (random)' if args.large else 'tiny'}, {args.pairs} pairs of {side}² images"
    )
    print(
        f"CLIP filter: batched {args.pairs / batched_time:8.1f} pairs/s, one at a time "
        f"{args.pairs / single_time:8.1f} pairs/s, speed-up {single_time / batched_time:5.2f}×, "
        f"max |diff| {difference:.2e}"
    )

    p2p = PromptToPrompt(**tiny_components(in_channels=4, seed=0))
    for batch_size in (1, 4):
        start = time.perf_counter()
        p2p.sample_pairs(
            "a red ball",
            "a blue ball",
            num_samples=args.samples,
            batch_size=batch_size,
            num_inference_steps=20,
            progress=False,
        )
        elapsed = time.perf_counter() - start
        print(
            f"generation (tiny, 32², 20 steps, batch {batch_size}): {args.samples / elapsed:6.2f} pairs/s"
        )


if __name__ == "__main__":
    main()
