"""Training throughput and peak memory of the Trainer.

    python benchmarks/train_throughput.py               # tiny model on the CPU
    python benchmarks/train_throughput.py --sd15        # SD-1.5-sized UNet at 256² (CUDA)
    python benchmarks/train_throughput.py --shapes      # ShapesWorld's editor at 32², batch 64
    python benchmarks/train_throughput.py --train-text-encoder   # also with the encoder trained
    python benchmarks/train_throughput.py --shapes --batch-size 32   # the recipe's CPU batch

Prints images/s over the timed steps (after warm-up) and the peak memory (CUDA:
max_memory_allocated; CPU: peak resident set of the process), for fp32 and, on CUDA, bf16 with
and without gradient checkpointing; each also with ``cache_latents=True`` (images/s of the steps,
as the Trainer logs them, and the call's wall time, which includes building the cache), and the
cached/uncached ratio. ``--train-text-encoder`` adds each setting with the text encoder trained
(``train_text_encoder=True``) and its ratio to the frozen one.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from instructedit.data import EditRecord
from instructedit.testing import SD_SCHEDULER_CONFIG, tiny_components
from instructedit.training import TrainConfig, Trainer, to_edit_unet


def _peak_rss() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sd15", action="store_true")
    parser.add_argument("--shapes", action="store_true", help="ShapesWorld's editor and pairs")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="batch size (default: 8 with --sd15, 64 with --shapes, 16 otherwise)",
    )
    parser.add_argument(
        "--train-text-encoder",
        action="store_true",
        help="also time each setting with the text encoder trained",
    )
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    if args.sd15:
        if not cuda:
            raise SystemExit("--sd15 needs a CUDA device")
        from edit_vs_diffusers import sd15_components

        parts = sd15_components(torch.device("cuda"), torch.float32)
        parts["unet"] = parts["unet"].cpu()
        unet_t2i = type(parts["unet"]).from_config({**parts["unet"].config, "in_channels": 4})
        resolution, batch = 256, 8
    elif args.shapes:
        from instructedit.testing import clip_tokenizer
        from instructedit.worlds._models import (
            shapes_autoencoder,
            shapes_text_encoder,
            shapes_unet,
        )

        unet_t2i = shapes_unet(0)
        parts = {
            "vae": shapes_autoencoder(0),
            "text_encoder": shapes_text_encoder(0),
            "tokenizer": clip_tokenizer(),
        }
        resolution, batch = 32, 64
    else:
        parts = dict(tiny_components(in_channels=4, seed=0))
        unet_t2i = parts["unet"]
        resolution, batch = 32, 16
    if args.batch_size is not None:
        if args.batch_size < 1:
            raise SystemExit(f"--batch-size must be at least 1, got {args.batch_size}")
        batch = args.batch_size
    rng = np.random.default_rng(0)
    if args.shapes:  # the renderer's ground-truth pairs, as the recipe's ablations train on
        from instructedit.worlds.evaluation import held_out_edits
        from instructedit.worlds.shapes import edit_record

        records = [edit_record(edit) for edit in held_out_edits(512, seed=1)]
    else:
        records = [
            EditRecord(
                Image.fromarray(rng.integers(0, 256, (resolution, resolution, 3), dtype=np.uint8)),
                "make it red",
                Image.fromarray(rng.integers(0, 256, (resolution, resolution, 3), dtype=np.uint8)),
            )
            for _ in range(64)
        ]
    settings = [("fp32", "no", False)]
    if cuda:
        settings += [("bf16", "bf16", False), ("bf16 + checkpointing", "bf16", True)]
    rates: dict[str, float] = {}
    print(
        f"device {torch.cuda.get_device_name() if cuda else 'cpu'}, "
        f"{'SD-1.5 size' if args.sd15 else 'ShapesWorld' if args.shapes else 'tiny'}, "
        f"{resolution}², batch {batch}, {args.steps} timed steps"
    )
    text_choices = (False, True) if args.train_text_encoder else (False,)
    for (label, precision, checkpointing), cache, train_text in itertools.product(
        settings, (False, True), text_choices
    ):
        with tempfile.TemporaryDirectory() as folder:
            trainer = Trainer(
                TrainConfig(
                    output_dir=folder,
                    resolution=resolution,
                    batch_size=batch,
                    max_steps=args.steps + 3,
                    checkpoint_every=10**6,
                    cache_latents=cache,
                    mixed_precision=precision,
                    gradient_checkpointing=checkpointing,
                    train_text_encoder=train_text,
                    log_with="none",
                    log_every=10**6,
                ),
                unet=to_edit_unet(unet_t2i),
                vae=parts["vae"],
                # A trained encoder is trained in place: each run gets its own.
                text_encoder=copy.deepcopy(parts["text_encoder"]),
                tokenizer=parts["tokenizer"],
                noise_scheduler=DDPMScheduler(**SD_SCHEDULER_CONFIG, clip_sample=False),
                train_dataset=records,
            )
            trainer.train(until=3, resume=False)  # warm-up
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            trainer.train(until=args.steps + 3)
            if cuda:
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
            peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else _peak_rss()
            # The Trainer's own figure for the steps (logged at the last step; after the cache).
            lines = (Path(folder) / "metrics.jsonl").read_text().splitlines()
            rate = json.loads(lines[-1])["images_per_s"]
            name = f"{label}{' cached' if cache else ''}{' text encoder' if train_text else ''}"
            if train_text:
                ratio = f"  ({rate / rates[f'{label}{cache}']:.2f}x frozen)"
            else:
                ratio = f"  ({rate / rates[f'{label}{False}']:.2f}x uncached)" if cache else ""
                rates[f"{label}{cache}"] = rate
            print(
                f"{name:30} {rate:8.1f} images/s  wall {elapsed:6.2f} s  "
                f"peak {peak:9.1f} MiB{ratio}"
            )


if __name__ == "__main__":
    main()
