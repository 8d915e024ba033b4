"""The worker processes of the ``pairs`` stage: how many, and each rendering its share of the
captions with its own models, watched by the stage's process."""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from pathlib import Path

import torch

from instructedit.worlds.recipe._base_models import clip_scorer
from instructedit.worlds.recipe._candidates import _render_candidates, pair_captions
from instructedit.worlds.recipe._config import RecipeConfig, _device

__all__ = ["pair_worker_count", "render_in_workers"]

logger = logging.getLogger(__name__)


def pair_worker_count(config: RecipeConfig) -> int:
    """Processes of the pairs stage: ``config.pair_workers``, or by default one per torch thread
    on a CPU (at most 4), and one on a GPU or in a process that torchrun or ``accelerate launch``
    started (where the recipe refuses to run; see
    :func:`~instructedit.worlds.recipe.reproduce`)."""
    if config.pair_workers is not None:
        return config.pair_workers
    if _device(config) != "cpu" or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return 1
    return max(1, min(4, torch.get_num_threads()))


def render_in_workers(
    config: RecipeConfig,
    root: Path,
    target: Path,
    guidance: tuple[float, float],
    workers: int,
    progress: bool,
) -> None:
    """Renders a candidate set in ``workers`` processes, torch's threads shared between them;
    stops them all and raises as soon as one fails (what they finished stays: the stage
    resumes)."""
    from tqdm.auto import tqdm

    threads = torch.get_num_threads()
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(
            target=_candidate_worker,
            args=(
                config,
                root,
                target,
                guidance,
                (i, workers),
                threads // workers + (i < threads % workers),
            ),
            daemon=True,
        )
        for i in range(workers)
    ]
    logger.info("pairs stage: %s in %d processes", target.name, workers)
    total = len(pair_captions(config))
    try:
        for process in processes:
            process.start()
        with tqdm(total=total, disable=not progress, desc="captions") as bar:
            while True:
                running = any(process.is_alive() for process in processes)
                failed = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
                if failed:
                    raise RuntimeError(
                        f"a pairs stage worker failed (exit code {failed[0]}); what the workers "
                        "finished is kept, and the stage resumes from it"
                    )
                bar.update(_finished_captions(target) - bar.n)
                if not running:
                    break
                time.sleep(1.0)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()


def _finished_captions(target: Path) -> int:
    """Captions of a candidate folder finished so far (written or refused)."""
    from instructedit.datagen._run import SKIPPED

    if not target.is_dir():
        return 0
    refused = target / SKIPPED
    written = sum(1 for p in target.iterdir() if (p / "prompt.json").is_file())
    return written + (len(list(refused.glob("*.json"))) if refused.is_dir() else 0)


def _candidate_worker(
    config: RecipeConfig,
    root: Path,
    target: Path,
    guidance: tuple[float, float],
    shard: tuple[int, int],
    threads: int,
) -> None:
    """A worker process of the pairs stage: renders its share with its own models, with
    ``threads`` torch threads; ends itself if the stage's process dies."""
    import threading

    from instructedit.p2p import PromptToPrompt

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(2.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
    torch.set_num_threads(max(1, threads))
    p2p = PromptToPrompt.from_pretrained(root / "text_to_image" / "model").to(_device(config))
    _render_candidates(config, p2p, clip_scorer(config), target, guidance, shard, progress=False)
