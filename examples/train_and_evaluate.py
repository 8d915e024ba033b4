"""Train a tiny editor on synthetic ground-truth edits, export it, and run the paper's sweep.

    python examples/train_and_evaluate.py --output outputs/tiny_train --steps 300

The data are procedurally drawn squares recoloured as the instruction says; the models are the
tiny components of instructedit.testing, trained from their random initialisation. It runs on a
CPU in about a minute and shows every piece: to_edit_unet, Trainer (checkpoints, EMA, metrics,
validation edits), export, EditPipeline on the export, guidance_sweep with a tiny CLIP.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import open_clip
from diffusers import DDPMScheduler
from PIL import Image

from instructedit import EditPipeline
from instructedit.clip import ClipScorer
from instructedit.data import EditRecord
from instructedit.evaluation import guidance_sweep, plot_sweep, write_csv
from instructedit.testing import SD_SCHEDULER_CONFIG, tiny_components, tiny_open_clip
from instructedit.training import TrainConfig, Trainer, to_edit_unet

COLOURS = {
    "red": (220, 30, 30),
    "blue": (30, 30, 220),
    "green": (30, 200, 30),
    "yellow": (230, 210, 30),
}


def squares(count: int, seed: int) -> list[EditRecord]:
    """Squares on random backgrounds, recoloured by the instruction (exact ground truth)."""
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    records = []
    for _ in range(count):
        old, new = rng.choice(names, 2, replace=False)
        before = np.full((32, 32, 3), rng.integers(0, 256, 3), np.uint8)
        after = before.copy()
        before[8:24, 8:24], after[8:24, 8:24] = COLOURS[old], COLOURS[new]
        records.append(
            EditRecord(
                Image.fromarray(before),
                f"make the square {new}",
                Image.fromarray(after),
                f"a {old} square",
                f"a {new} square",
            )
        )
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("outputs/tiny_train"))
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()

    parts = tiny_components(in_channels=4, seed=0)
    validation = args.output / "validation_input.png"
    validation.parent.mkdir(parents=True, exist_ok=True)
    squares(1, seed=99)[0].input_image.save(validation)
    trainer = Trainer(
        TrainConfig(
            output_dir=str(args.output),
            resolution=32,
            batch_size=16,
            max_steps=args.steps,
            learning_rate=1e-3,
            ema_decay=0.995,
            checkpoint_every=100,
            log_every=25,
            validation_prompts=("make the square blue",),
            validation_image=str(validation),
            validation_every=100,
            validation_steps=20,
        ),
        unet=to_edit_unet(parts["unet"]),
        vae=parts["vae"],
        text_encoder=parts["text_encoder"],
        tokenizer=parts["tokenizer"],
        noise_scheduler=DDPMScheduler(**SD_SCHEDULER_CONFIG, clip_sample=False),
        train_dataset=squares(256, seed=0),
    )
    trainer.train()
    folder = trainer.export()
    print(folder)

    pipe = EditPipeline.from_pretrained(folder)
    scorer = ClipScorer(tiny_open_clip(seed=0), open_clip.get_tokenizer("ViT-B-32"))
    points = guidance_sweep(pipe, scorer, squares(16, seed=1), num_inference_steps=20)
    print(write_csv(points, args.output / "sweep.csv"))
    print(plot_sweep(points, args.output / "sweep.png"))


if __name__ == "__main__":
    main()
