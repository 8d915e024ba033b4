"""The recipe's ``editor`` stage and the editors' shared parts: an editor trained from the
text-to-image UNet on a training set, loaded, and judged on held-out rendered edits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from instructedit.worlds.recipe._base_models import _tail, clip_scorer
from instructedit.worlds.recipe._config import RecipeConfig, _device
from instructedit.worlds.recipe._selection import load_selection

__all__ = ["editor_trainer", "evaluate_editor"]


def editor_trainer(
    config: RecipeConfig, root: Path, records: list[Any], folder: Path, steps: int
) -> Any:
    """The :class:`~instructedit.training.Trainer` of an editor: the text-to-image UNet of the
    run in ``root`` widened by :func:`~instructedit.training.to_edit_unet`, trained ``steps`` on
    ``records`` with checkpoints in ``folder / "run"`` (a rerun resumes)."""
    from diffusers import DDPMScheduler

    from instructedit.components import load_components
    from instructedit.training import RecordSource, TrainConfig, Trainer, to_edit_unet

    parts = load_components(root / "text_to_image" / "model")
    unet = to_edit_unet(
        parts["unet"],
        init=config.editor_init,
        image_scale=float(parts["vae"].config.scaling_factor),
    )
    return Trainer(
        TrainConfig(
            output_dir=str(folder / "run"),
            resolution=config.size,
            batch_size=config.editor_batch_size,
            max_steps=steps,
            learning_rate=config.editor_learning_rate,
            ema_decay=0.999,
            seed=config.seed,
            checkpoint_every=max(1, min(500, steps)),
            log_with="none",
            random_flip=True,
            num_workers=config.loader_workers,
            cache_latents=config.editor_cache_latents,
            train_text_encoder=config.editor_train_text_encoder,
            prediction_type=config.editor_prediction_type,
            sampler=config.editor_sampler,
        ),
        unet=unet,
        vae=parts["vae"],
        text_encoder=parts["text_encoder"],
        tokenizer=parts["tokenizer"],
        noise_scheduler=DDPMScheduler.from_config(parts["scheduler"].config, clip_sample=False),
        train_dataset=RecordSource(records),
    )


def _train_editor(
    config: RecipeConfig,
    root: Path,
    records: list[Any],
    folder: Path,
    steps: int,
    snapshots: tuple[int, ...] = (),
    progress: bool = True,
) -> dict[str, Any]:
    """Trains an editor (resumable) and exports it to ``folder / "model"``, plus
    ``folder / f"model-{step}"`` for each snapshot step."""
    trainer = editor_trainer(config, root, records, folder, steps)
    losses: list[float] = []
    for step in snapshots:
        target = folder / f"model-{step}"
        if 0 < step < steps and not (target / "model_index.json").is_file():
            losses += trainer.train(until=step, progress=progress)
            trainer.export(target)
    losses += trainer.train(progress=progress)
    trainer.export(folder / "model")
    return {"loss": _tail(losses), "examples": len(records), "steps": steps}


def _stage_editor(config: RecipeConfig, folder: Path, progress: bool) -> dict[str, Any]:
    root = folder.parent
    return _train_editor(
        config,
        root,
        load_selection(root, "filtered"),
        folder,
        config.editor_steps,
        snapshots=(config.ablation_steps,),
        progress=progress,
    )


def _load_editor(
    config: RecipeConfig, model: Path, guidance: Any = None, scheduler: str | None = None
) -> Any:
    from instructedit.pipeline import EditPipeline

    return EditPipeline.from_pretrained(model, guidance=guidance, scheduler=scheduler).to(
        _device(config)
    )


def _edit_held_out(
    config: RecipeConfig,
    pipe: Any,
    edits: list[Any],
    text_scale: float | None = None,
    image_scale: float | None = None,
) -> list[Image.Image]:
    """``pipe``'s edits of ``edits`` (at its default guidance unless scales are given)."""
    from instructedit.worlds.evaluation import pipeline_edits

    return pipeline_edits(
        pipe,
        edits,
        size=config.size,
        num_inference_steps=config.eval_steps,
        guidance_scale=text_scale,
        image_guidance_scale=image_scale,
        seed=config.seed,
        progress=False,
    )


def evaluate_editor(model: Path, config: RecipeConfig, guidance: Any = None) -> dict[str, Any]:
    """Edits ``config.eval_scenes`` held-out rendered scenes with the editor in ``model`` at
    ``guidance`` (a :class:`~instructedit.guidance.DualGuidance`; ``None``: the folder's stored
    guidance); returns the oracle's verdicts per family (see
    :func:`~instructedit.worlds.evaluation.oracle_summary`) and the CLIP similarities."""
    from instructedit.worlds.evaluation import held_out_edits, score_edits

    edits = held_out_edits(config.eval_scenes, seed=config.seed)
    outputs = _edit_held_out(config, _load_editor(config, Path(model), guidance), edits)
    return score_edits(
        clip_scorer(config), edits, outputs, size=config.size, tolerance=config.tolerance
    )
