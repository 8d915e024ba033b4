"""The recipe's resumable runner: every stage in order, each skipped when its folder holds a
``DONE.json`` that answers the config, each later record made stale when a stage runs again."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from instructedit.data import write_json_atomic
from instructedit.worlds.recipe._base_models import _stage_clip, _stage_text_to_image
from instructedit.worlds.recipe._config import STAGES, RecipeConfig
from instructedit.worlds.recipe._editor import _stage_editor
from instructedit.worlds.recipe._evaluate import _stage_ablations, _stage_evaluate
from instructedit.worlds.recipe._guidance import _stage_guidance
from instructedit.worlds.recipe._pairs import _stage_pairs
from instructedit.worlds.recipe._report import _stage_report

__all__ = ["reproduce"]

logger = logging.getLogger(__name__)


_RUNNERS: dict[str, Callable[[RecipeConfig, Path, bool], dict[str, Any]]] = {
    "text_to_image": _stage_text_to_image,
    "clip": _stage_clip,
    "pairs": _stage_pairs,
    "editor": _stage_editor,
    "guidance": _stage_guidance,
    "evaluate": _stage_evaluate,
    "ablations": _stage_ablations,
    "report": _stage_report,
}


def reproduce(
    config: RecipeConfig, *, until: str | None = None, progress: bool = True
) -> dict[str, Any]:
    """Runs (or continues) the recipe; returns each stage's record (timings and numbers).

    The recipe runs as one process; started by torchrun or ``accelerate launch`` as one of
    several, it refuses to run (the copies would race on one folder).

    Args:
        config: sizes of the run.
        until: last stage to run (one of :data:`STAGES`); all of them by default.
        progress: show progress bars.
    """
    if until is not None and until not in STAGES:
        raise ValueError(f"until must be one of {STAGES}, got {until!r}")
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    if processes > 1:
        raise RuntimeError(
            f"this process is one of {processes} that torchrun or accelerate launch started, and "
            "the ShapesWorld recipe runs as one process (its pairs stage spreads over "
            "RecipeConfig.pair_workers processes itself): each copy would train the same models "
            "into one folder. Run it without a launcher"
        )
    root = Path(config.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(asdict(config), indent=2), encoding="utf-8")
    records: dict[str, Any] = {}
    for position, stage in enumerate(STAGES):
        folder = root / stage
        marker = folder / "DONE.json"
        done = json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else None
        outdated = None if done is None else _outdated(stage, config, done)
        if outdated is not None:
            logger.warning("stage %s runs again: %s", stage, outdated)
        if done is not None and outdated is None:
            records[stage] = done
            logger.info("stage %s already done", stage)
        else:
            # What a later stage recorded predates this one's output (a run of an older version
            # without this stage, or a stage redone by hand): it is redone too.
            for later in STAGES[position + 1 :]:
                stale = root / later / "DONE.json"
                if stale.is_file():
                    logger.warning(
                        "stage %s runs: %s's record is stale and is redone", stage, later
                    )
                    stale.unlink()
            folder.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            record = _RUNNERS[stage](config, folder, progress)
            record["seconds"] = round(time.perf_counter() - start, 1)
            write_json_atomic(marker, record)
            records[stage] = record
            logger.info("stage %s done in %.0f s: %s", stage, record["seconds"], record)
        if stage == until:
            break
    return records


def _outdated(stage: str, config: RecipeConfig, record: dict[str, Any]) -> str | None:
    """Why a finished stage's ``record`` does not answer ``config`` (``None``: it does). Its
    finished parts are reused when it runs again."""
    if stage == "ablations":
        missing = [name for name in config.ablations if name not in record.get("runs", {})]
        if missing:
            return f"the config asks for ablations it has not run: {missing}"
    return None
