"""``instructedit evaluate``: the paper's guidance sweep on a test split."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Literal

__all__ = ["evaluate_model"]


def evaluate_model(
    model: str,
    data: Path,
    output: Path,
    *,
    clip_model: str = "ViT-L-14",
    clip_pretrained: str | None = "openai",
    split: Literal["train", "val", "test", "all"] = "test",
    count: int = 100,
    steps: int = 100,
    text_scale: float = 7.5,
    seed: int = 0,
) -> list[str]:
    """Runs the paper's s_I sweep on a dataset split; writes OUTPUT/sweep.csv and OUTPUT/sweep.png.

    Args:
        model: an editing pipeline folder or hub id.
        data: a dataset in the official folder layout (or a .parquet file with captions).
        output: folder for the table and the plot.
        clip_model: open_clip model name ("ViT-L-14", "local-dir:PATH", ...).
        clip_pretrained: open_clip pretrained tag or checkpoint path.
        split: folder-layout split (train, val, test, all).
        count: examples evaluated (the first of the split).
        steps: sampler steps.
        text_scale: s_T, fixed during the sweep.
        seed: sampling seed.
    """
    if count < 1 or steps < 1:
        raise ValueError(f"count and steps must be >= 1, got {count} and {steps}")
    from instructedit.guidance import check_scale

    check_scale("text_scale", text_scale)
    if not data.exists():
        raise FileNotFoundError(f"data: no such dataset: {data}")
    import itertools

    from instructedit._launch import job_state
    from instructedit.clip import ClipScorer
    from instructedit.data import read_folder_dataset, read_parquet
    from instructedit.evaluation._metrics import (
        combine_sweeps,
        guidance_sweep,
        plot_sweep,
        write_csv,
    )
    from instructedit.pipeline import EditPipeline

    records_iter = (
        read_parquet(data) if data.suffix == ".parquet" else read_folder_dataset(data, split=split)
    )
    records = list(itertools.islice(records_iter, count))
    if not records:
        raise ValueError(f"{data} has no examples in split {split!r}")
    # Under torchrun or accelerate launch each process edits its share of the examples; the
    # main process combines the shares and writes the files.
    job = job_state()
    share = records[job.process_index :: job.num_processes]
    pipe = EditPipeline.from_pretrained(model).to(job.device)
    scorer = ClipScorer.from_open_clip(clip_model, clip_pretrained, device=job.device)
    points = (
        guidance_sweep(
            pipe, scorer, share, text_scale=text_scale, num_inference_steps=steps, seed=seed
        )
        if share
        else []
    )
    if job.num_processes > 1:
        from accelerate.utils import gather_object

        points = combine_sweeps(gather_object([points]))
        if not job.is_main_process:
            return []
    written = [str(write_csv(points, output / "sweep.csv"))]
    # The plot needs the optional matplotlib; the CSV holds the same numbers.
    with contextlib.suppress(ImportError):
        written.append(str(plot_sweep(points, output / "sweep.png")))
    return written
