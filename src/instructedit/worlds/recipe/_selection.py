"""The training sets of the ``pairs`` stage: the CLIP filter's thresholds calibrated, the sets
chosen from the candidates' stored scores and read back, and loaded again from a run's
``pairs/selections.json``."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from instructedit.data import folder_index, write_json_atomic
from instructedit.worlds.recipe._candidates import candidate_sets, ground_truth_records
from instructedit.worlds.recipe._config import RecipeConfig

__all__ = [
    "calibrate_thresholds",
    "load_selection",
    "read_back_pairs",
    "select_pairs",
    "select_training_sets",
    "selection_folders",
]


def select_training_sets(
    config: RecipeConfig, folder: Path, scorer: Any, *, read_back: bool = True
) -> dict[str, Any]:
    """The pairs stage's end, once every candidate set in ``folder`` is written: calibrates the
    CLIP filter's thresholds, selects the training sets (:func:`select_pairs`), writes them to
    ``folder / "selections.json"`` and returns the thresholds, the counts and, with
    ``read_back``, each set read back (:func:`read_back_pairs`)."""
    from instructedit.clip import ClipDirectionalFilter

    thresholds = calibrate_thresholds(scorer, config)
    clip_filter = ClipDirectionalFilter(
        scorer,
        thresholds["min_image_similarity"],
        thresholds["min_direction_similarity"],
        thresholds["min_text_similarity"],
        min_structure_similarity=config.min_structure_similarity,
    )
    extra = [folder / name for name, _ in candidate_sets(config)[1:]]
    selections, record = select_pairs(folder / "candidates", clip_filter, config, extra=extra)
    write_json_atomic(folder / "selections.json", selections)
    result = {"thresholds": thresholds, **record}
    if read_back:
        result["read_back"] = read_back_pairs(
            folder / "candidates", selections, config.size, extra=extra
        )
    return result


def _entries(candidates: Path, extra: Sequence[Path]) -> list[tuple[Path, str, int]]:
    """(set folder, caption folder, seed) of every candidate of the pooled sets."""
    for root in extra:
        if Path(root).parent != Path(candidates).parent or Path(root).name == Path(candidates).name:
            raise ValueError(
                f"extra: each set must be a sibling folder of {candidates} (selections name it "
                f"by its folder name), got {root}"
            )
    return [
        (root, name, seed) for root in (candidates, *extra) for name, seed in folder_index(root)
    ]


def _selection_entry(candidates: Path, entry: tuple[Path, str, int]) -> list[Any]:
    """A selection's JSON entry: ``[folder, seed]`` in ``candidates``, ``[folder, seed, set]``
    in an extra set (a sibling folder of ``candidates``)."""
    root, name, seed = entry
    return [name, seed] if root == candidates else [name, seed, root.name]


def read_back_pairs(
    candidates: Path,
    selections: dict[str, list[Any]],
    size: int = 32,
    *,
    extra: Sequence[Path] = (),
) -> dict[str, dict[str, dict[str, float]]]:
    """Every candidate (of ``candidates`` and the ``extra`` sets), and each selection, read back
    against its captions (:func:`~instructedit.worlds.reading.summarise_pairs`): how many pairs
    are the edit they claim, what the CLIP filter estimates."""
    from instructedit.worlds.reading import summarise_pairs

    pooled = [_selection_entry(candidates, e) for e in _entries(candidates, extra)]
    return {
        name: summarise_pairs(_load_entries(candidates, keys), size=size)
        for name, keys in {"candidates": pooled, **selections}.items()
    }


def calibrate_thresholds(scorer: Any, config: RecipeConfig, count: int = 256) -> dict[str, float]:
    """The CLIP filter's thresholds: each set in ``config``, else the ``calibration_quantile`` of
    that score over ``count`` ground-truth pairs drawn by the renderer."""
    from instructedit.clip import ClipDirectionalFilter

    wanted = {
        "min_image_similarity": config.min_image_similarity,
        "min_direction_similarity": config.min_direction_similarity,
        "min_text_similarity": config.min_text_similarity,
    }
    if all(value is not None for value in wanted.values()):
        return {key: float(value) for key, value in wanted.items() if value is not None}
    records = ground_truth_records(count, config, stream="calibration")
    scores = ClipDirectionalFilter(scorer).score(
        [r.input_image for r in records],
        [r.edited_image for r in records],
        [r.input_caption for r in records],
        [r.output_caption for r in records],
    )
    observed = {
        "min_image_similarity": scores.image_similarity,
        "min_direction_similarity": scores.direction_similarity,
        "min_text_similarity": torch.minimum(
            scores.text_similarity_before, scores.text_similarity_after
        ),
    }
    return {
        key: float(value)
        if value is not None
        else float(torch.quantile(observed[key].float(), config.calibration_quantile))
        for key, value in wanted.items()
    }


def select_pairs(
    candidates: Path,
    clip_filter: Any,
    config: RecipeConfig,
    *,
    extra: Sequence[Path] = (),
) -> tuple[dict[str, list[list[Any]]], dict[str, Any]]:
    """Chooses the training sets from scored candidates (a dataset folder whose samples carry
    ``clip_sim_*`` metadata, and any ``extra`` such folders of the same caption edits, pooled:
    each caption edit's candidates in each set are a group of their own).

    Returns ``{"filtered", "unfiltered", "fewer"}`` (and ``"clip_only"``) → ``[folder, seed]``
    lists (``[folder, seed, set]`` for a candidate of an ``extra`` set, named by its folder),
    and counts:

    * ``filtered``: the paper's filter, best ``keep_per_pair`` per caption by directional
      similarity (with ``clip_filter.min_structure_similarity`` set, the structure similarity
      is computed from the candidates' images and checked too);
    * ``clip_only``: only when the structure is checked, the same without it (read back, to
      show what the structure check changes);
    * ``unfiltered``: the first ``keep_per_pair`` candidates of each caption (random seeds), no
      CLIP involved (the paper's "without CLIP filtering" ablation);
    * ``fewer``: ``filtered`` restricted to the first ``fewer_pairs_fraction`` of the captions.
    """
    from instructedit.clip import ClipDirectionalFilter, ClipScores, structure_similarity
    from instructedit.data import load_folder_sample

    index = _entries(candidates, extra)
    samples = [load_folder_sample(root, name, seed) for root, name, seed in index]
    metadata = [sample.metadata for sample in samples]

    def column(key: str) -> torch.Tensor:
        return torch.tensor([float(row[key]) for row in metadata])

    structure = None
    if clip_filter.min_structure_similarity is not None:
        structure = structure_similarity(
            [s.input_image for s in samples], [s.edited_image for s in samples]
        )
    scores = ClipScores(
        image_similarity=column("clip_sim_image"),
        direction_similarity=column("clip_sim_dir"),
        text_similarity_before=column("clip_sim_0"),
        text_similarity_after=column("clip_sim_1"),
        structure_similarity=structure,
    )
    result = clip_filter.judge(scores)
    groups = [f"{root.name}/{name}" for root, name, _ in index]
    filtered = sorted(ClipDirectionalFilter.top_k(result, groups, k=config.keep_per_pair))
    clip_only_sets: dict[str, list[int]] = {}
    if structure is not None:
        clip_only = ClipDirectionalFilter(
            clip_filter.scorer,
            clip_filter.min_image_similarity,
            clip_filter.min_direction_similarity,
            clip_filter.min_text_similarity,
        ).judge(scores)
        clip_only_sets["clip_only"] = sorted(
            ClipDirectionalFilter.top_k(clip_only, groups, k=config.keep_per_pair)
        )
    taken: dict[str, int] = defaultdict(int)
    unfiltered = []
    for i, name in enumerate(groups):
        if taken[name] < config.keep_per_pair:
            taken[name] += 1
            unfiltered.append(i)
    names = sorted({name for _, name, _ in index})
    few = set(names[: max(1, math.ceil(config.fewer_pairs_fraction * len(names)))])
    fewer = [i for i in filtered if index[i][1] in few]
    if not filtered:
        raise RuntimeError(
            f"the CLIP filter kept none of {len(index)} candidates ({result.counts()}): lower "
            "the thresholds or train the text-to-image model longer"
        )
    selections = {
        key: [_selection_entry(candidates, index[i]) for i in chosen]
        for key, chosen in (
            ("filtered", filtered),
            ("unfiltered", unfiltered),
            ("fewer", fewer),
            *clip_only_sets.items(),
        )
    }
    directions = result.scores.direction_similarity
    record = {
        "filter": {k: v for k, v in result.counts().items()},
        **{f"{key}_pairs": len(value) for key, value in selections.items()},
        "filtered_direction_similarity": float(directions[filtered].mean()),
        "unfiltered_direction_similarity": float(directions[unfiltered].mean()),
    }
    return selections, record


def _entry_folder(candidates: Path, entry: Sequence[Any]) -> tuple[Path, int]:
    """A selection entry's (caption folder, seed): ``[folder, seed]`` in ``candidates``,
    ``[folder, seed, set]`` in its sibling set folder."""
    root = candidates.parent / entry[2] if len(entry) > 2 else candidates
    return root / entry[0], int(entry[1])


def _load_entries(candidates: Path, entries: Sequence[Sequence[Any]]) -> list[Any]:
    """The :class:`~instructedit.data.EditRecord` s of selection entries."""
    from instructedit.data import load_folder_sample

    return [
        load_folder_sample(folder.parent, folder.name, seed)
        for folder, seed in (_entry_folder(candidates, entry) for entry in entries)
    ]


def _selections(run: str | Path, key: str) -> list[Any]:
    path = Path(run) / "pairs" / "selections.json"
    if not path.is_file():
        raise FileNotFoundError(f"no pairs stage in {run}: {path} is missing")
    selections = json.loads(path.read_text(encoding="utf-8"))
    if key not in selections:
        raise ValueError(f"key must be one of {sorted(selections)}, got {key!r}")
    return list(selections[key])


def selection_folders(run: str | Path, key: str = "filtered") -> list[tuple[Path, int]]:
    """The (caption folder, seed) of every pair of one of a run's training sets, as
    :func:`load_selection` names them, without decoding an image (each folder's ``prompt.json``
    holds its caption edit)."""
    candidates = Path(run) / "pairs" / "candidates"
    return [_entry_folder(candidates, entry) for entry in _selections(run, key)]


def load_selection(run: str | Path, key: str = "filtered") -> list[Any]:
    """The :class:`~instructedit.data.EditRecord` s of one of a run's training sets
    (``pairs/selections.json``: ``"filtered"``, ``"unfiltered"``, ``"fewer"``, ``"clip_only"``),
    whichever candidate set each pair comes from."""
    return _load_entries(Path(run) / "pairs" / "candidates", _selections(run, key))
