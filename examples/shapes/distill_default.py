"""Distils the embedded default's dual guidance into one UNet pass a step, and scores the student.

    python examples/shapes/distill_default.py --output outputs/distilled          # train, then score
    python examples/shapes/distill_default.py --output outputs/distilled --steps 50   # a quick look

The teacher is the default's editor (float32); the student starts as its conditional branch
(:func:`~instructedit.training.to_distilled_unet`) and learns, by
:class:`~instructedit.training.GuidanceDistiller`, the teacher's guided prediction at s_T drawn
from [3, 7.5] and s_I from [1, 3.5], on ground-truth ShapesWorld edits of a training stream no
evaluation draws from (other ranges: ``--text-scales LOW HIGH``, ``--image-scales LOW HIGH``;
``--inference-timesteps`` trains only at the 20 timesteps the evaluation takes).
Rerun to continue a stopped run. Then the student (with the teacher's
stored guidance, 5 and 3) and the teacher, both unmasked, edit the 200 held-out test edits
(seed 0, 20 steps), and the oracle scores them; the UNet evaluations per edit are counted.
"""

from __future__ import annotations

import argparse
import copy
import random
import time
from pathlib import Path

from diffusers import DDPMScheduler

import instructedit
from instructedit import EditPipeline
from instructedit.guidance import save_guidance_config
from instructedit.training import GuidanceDistiller, TrainConfig
from instructedit.worlds.evaluation import held_out_edits, oracle_summary, pipeline_edits
from instructedit.worlds.shapes import EDIT_FAMILIES, edit_record, random_edit, random_scene


def training_records(count: int) -> list:
    """Ground-truth edits of the stream ``distill:0``, the four families in turn."""
    rng = random.Random("distill:0")
    records = []
    while len(records) < count:
        edit = random_edit(random_scene(rng), rng, EDIT_FAMILIES[len(records) % 4])
        if edit is not None:
            records.append(edit_record(edit))
    return records


def _counter(calls: list[int]):
    """A forward pre-hook adding each UNet call's batch (images evaluated) to ``calls``."""
    return lambda module, inputs: calls.append(inputs[0].shape[0])


def score(pipe: EditPipeline, edits: list, calls: list[int]) -> tuple[dict, float, float]:
    calls.clear()
    start = time.perf_counter()
    outputs = pipeline_edits(pipe, edits, masks="none", progress=False)
    seconds = (time.perf_counter() - start) / len(edits)
    return oracle_summary(edits, outputs)["all"], seconds, sum(calls) / len(edits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("outputs/distilled"))
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--records", type=int, default=4000)
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--text-scales", type=float, nargs=2, default=(3.0, 7.5))
    parser.add_argument("--image-scales", type=float, nargs=2, default=(1.0, 3.5))
    parser.add_argument(
        "--inference-timesteps",
        action="store_true",
        help="train only at the 20 timesteps the evaluation's scheduler takes",
    )
    args = parser.parse_args()
    teacher = instructedit.load_default()
    sampler = copy.deepcopy(teacher.scheduler)
    sampler.set_timesteps(20)
    distiller = GuidanceDistiller(
        TrainConfig(
            output_dir=str(args.output),
            resolution=32,
            batch_size=64,
            learning_rate=1e-4,
            max_steps=args.steps,
            checkpoint_every=100,
            ema_decay=None,
            log_every=50,
            log_with="none",
            cache_latents=True,
        ),
        teacher=teacher.unet,
        text_scales=tuple(args.text_scales),
        image_scales=tuple(args.image_scales),
        timesteps=sampler.timesteps if args.inference_timesteps else None,
        vae=teacher.vae,
        text_encoder=teacher.text_encoder,
        tokenizer=teacher.tokenizer,
        noise_scheduler=DDPMScheduler.from_config(teacher.scheduler.config, clip_sample=False),
        train_dataset=training_records(args.records),
    )
    losses = distiller.train()
    if losses:
        print(
            f"loss: first 50 steps {sum(losses[:50]) / len(losses[:50]):.4f}, "
            f"last 50 {sum(losses[-50:]) / len(losses[-50:]):.4f}"
        )
    folder = distiller.export()
    save_guidance_config(teacher.guidance, folder)  # the teacher's tuned scales, 5 and 3
    student = EditPipeline.from_pretrained(folder)
    student.scheduler = teacher.scheduler
    edits = held_out_edits(args.scenes, seed=0)
    print(f"{args.scenes} held-out test edits (seed 0), 20 steps, unmasked, s_T 5 / s_I 3")
    print()
    print(
        "| editor | success | realised | unchanged error | UNet evaluations per edit | s per edit |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for name, pipe in (("teacher (the default)", teacher), ("distilled student", student)):
        calls: list[int] = []
        handle = pipe.unet.register_forward_pre_hook(_counter(calls))
        summary, seconds, evaluations = score(pipe, edits, calls)
        handle.remove()
        print(
            f"| {name} | {100 * summary['success']:.1f} % | {100 * summary['realised']:.1f} % | "
            f"{summary['unchanged_error']:.3f} | {evaluations:.0f} | {seconds:.3f} |"
        )
    for text_scale, image_scale in ((7.5, 1.5), (3.0, 1.0)):
        print(f"\nat s_T {text_scale} / s_I {image_scale}:")
        for name, pipe in (("teacher", teacher), ("student", student)):
            outputs = pipeline_edits(
                pipe,
                edits,
                masks="none",
                guidance_scale=text_scale,
                image_guidance_scale=image_scale,
                progress=False,
            )
            summary = oracle_summary(edits, outputs)["all"]
            print(
                f"  {name}: success {100 * summary['success']:.1f} %, "
                f"error {summary['unchanged_error']:.3f}"
            )


if __name__ == "__main__":
    main()
