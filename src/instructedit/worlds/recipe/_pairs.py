"""The recipe's ``pairs`` stage: every candidate set rendered (here or in worker processes),
then the training sets chosen from the candidates' stored CLIP scores."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from instructedit.worlds.recipe._base_models import clip_scorer
from instructedit.worlds.recipe._candidates import _render_candidates, candidate_sets
from instructedit.worlds.recipe._config import RecipeConfig, _device
from instructedit.worlds.recipe._selection import select_training_sets
from instructedit.worlds.recipe._workers import pair_worker_count, render_in_workers

__all__: list[str] = []


def _stage_pairs(config: RecipeConfig, folder: Path, progress: bool) -> dict[str, Any]:
    """Renders every candidate pair once, scored by CLIP, then selects the training sets.

    Candidates are written with their CLIP scores and no threshold; the paper's filter is then
    applied to the stored scores (:meth:`ClipDirectionalFilter.judge` and ``top_k``), so the
    filtered set and the ablations' sets come from the very same candidates. With several
    :attr:`~RecipeConfig.pair_workers`, worker processes render the candidates, each a share of
    the captions, and this one counts what they finished.
    """
    from instructedit.p2p import PromptToPrompt

    root = folder.parent
    scorer = clip_scorer(config)
    workers = pair_worker_count(config)
    p2p = PromptToPrompt.from_pretrained(root / "text_to_image" / "model").to(_device(config))
    samples = 0
    caption_rejections: dict[str, int] = defaultdict(int)
    for name, guidance in candidate_sets(config):
        if workers > 1:
            render_in_workers(config, root, folder / name, guidance, workers, progress)
        # With workers, every caption is finished: this pass counts them and indexes the folder.
        summary = _render_candidates(
            config, p2p, scorer, folder / name, guidance, (0, 1), progress and workers == 1
        )
        samples += summary.samples
        for reason, count in summary.caption_rejections.items():
            caption_rejections[reason] += count
    return {
        "candidates": samples,
        "caption_rejections": dict(caption_rejections),
        **select_training_sets(config, folder, scorer),
    }
