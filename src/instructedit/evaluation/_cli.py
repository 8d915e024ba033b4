"""``instructedit evaluate``: the paper's guidance sweep on a test split, or MagicBrush's
protocol on its sessions."""

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
    protocol: Literal["sweep", "magicbrush"] = "sweep",
    clip_model: str | None = None,
    clip_pretrained: str | None = "openai",
    split: Literal["train", "val", "test", "all"] = "test",
    count: int = 100,
    steps: int = 100,
    text_scale: float = 7.5,
    image_scale: float = 1.5,
    turns: Literal["multi", "single"] = "multi",
    dino_model: Path | None = None,
    descriptions: Literal["local", "global", "none"] = "local",
    seed: int = 0,
) -> list[str]:
    """Runs the paper's s_I sweep on a dataset split (OUTPUT/sweep.csv, OUTPUT/sweep.png), or
    MagicBrush's protocol (OUTPUT/magicbrush.json, OUTPUT/magicbrush.csv, OUTPUT/images/).

    The sweep splits its examples across the processes of a torchrun or ``accelerate launch``
    job; the MagicBrush protocol runs in one process.

    Args:
        model: an editing pipeline folder or hub id.
        data: sweep: a dataset in the official folder layout (or a .parquet file with captions);
            magicbrush: MagicBrush's dev/test folder (with edit_sessions.json) or its parquet.
        output: folder for the tables, the plot and (magicbrush) the edited images.
        protocol: "sweep" (the paper's CLIP sweep over s_I) or "magicbrush" (L1, L2, CLIP-I,
            CLIP-T and DINO against MagicBrush's ground-truth edits).
        clip_model: open_clip model name ("ViT-L-14", "local-dir:PATH", ...); default ViT-L-14
            for the sweep, ViT-B-32 (MagicBrush's) for magicbrush.
        clip_pretrained: open_clip pretrained tag or checkpoint path.
        split: folder-layout split of the sweep (train, val, test, all).
        count: examples (sweep) or sessions (magicbrush) evaluated, the first of the data.
        steps: sampler steps.
        text_scale: s_T (fixed during the sweep).
        image_scale: s_I of the magicbrush protocol.
        turns: magicbrush: "multi" (each turn edits the previous output) or "single" (each
            turn edits the ground-truth input).
        dino_model: magicbrush: a local folder with a transformers DINO model (e.g. a saved
            facebook/dino-vits16); without it DINO is not computed.
        descriptions: magicbrush: the captions CLIP-T compares with (local_descriptions.json,
            global_descriptions.json, or none).
        seed: sampling seed.
    """
    if count < 1 or steps < 1:
        raise ValueError(f"count and steps must be >= 1, got {count} and {steps}")
    from instructedit.guidance import check_scale

    check_scale("text_scale", text_scale)
    if not data.exists():
        raise FileNotFoundError(f"data: no such dataset: {data}")
    if protocol == "magicbrush":
        return _evaluate_magicbrush(
            model,
            data,
            output,
            clip_model=clip_model or "ViT-B-32",
            clip_pretrained=clip_pretrained,
            count=count,
            steps=steps,
            text_scale=text_scale,
            image_scale=image_scale,
            turns=turns,
            dino_model=dino_model,
            descriptions=descriptions,
            seed=seed,
        )
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
    scorer = ClipScorer.from_open_clip(clip_model or "ViT-L-14", clip_pretrained, device=job.device)
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


def _evaluate_magicbrush(
    model: str,
    data: Path,
    output: Path,
    *,
    clip_model: str,
    clip_pretrained: str | None,
    count: int,
    steps: int,
    text_scale: float,
    image_scale: float,
    turns: Literal["multi", "single"],
    dino_model: Path | None,
    descriptions: Literal["local", "global", "none"],
    seed: int,
) -> list[str]:
    """The magicbrush protocol of :func:`evaluate_model`, in this process."""
    import itertools

    from instructedit.guidance import check_scale

    check_scale("image_scale", image_scale)
    if dino_model is not None and not dino_model.is_dir():
        raise FileNotFoundError(f"dino_model: no such model folder: {dino_model}")
    from instructedit._launch import job_state
    from instructedit.clip import ClipScorer
    from instructedit.data import read_magicbrush
    from instructedit.evaluation._magicbrush import (
        DinoFeatures,
        evaluate_magicbrush,
        write_magicbrush,
    )
    from instructedit.pipeline import EditPipeline

    # Reading checks the whole index before any model loads.
    sessions = itertools.islice(read_magicbrush(data, descriptions=descriptions), count)
    job = job_state()
    if job.num_processes > 1:
        raise ValueError(
            f"protocol 'magicbrush' runs in one process, got a job of {job.num_processes}; "
            "start it without torchrun or accelerate launch"
        )
    device = job.device
    pipe = EditPipeline.from_pretrained(model).to(device)
    # MagicBrush scores CLIP on the model's own transform: resize and centre crop.
    scorer = ClipScorer.from_open_clip(
        clip_model, clip_pretrained, transforms="model", device=device
    )
    dino = None if dino_model is None else DinoFeatures.from_pretrained(dino_model, device=device)
    result = evaluate_magicbrush(
        pipe,
        sessions,
        scorer,
        turns=turns,
        dino=dino,
        num_inference_steps=steps,
        text_scale=text_scale,
        image_scale=image_scale,
        seed=seed,
        images_dir=output / "images",
    )
    settings = {
        "model": model,
        "data": str(data),
        "clip_model": clip_model,
        "clip_pretrained": clip_pretrained,
        "dino_model": None if dino_model is None else str(dino_model),
        "descriptions": descriptions,
        "steps": steps,
        "text_scale": text_scale,
        "image_scale": image_scale,
        "seed": seed,
    }
    return [str(path) for path in write_magicbrush(result, output, settings=settings)]
