"""The dataset generation run: captions → caption edits → paired images → CLIP filter → folders.

Sharded (``shard=(i, n)``, and across ``accelerate launch`` processes) and resumable: each
caption pair is finished by one atomic folder rename (or one atomic skip marker), and every
random choice derives from the run seed and the caption's index, so a run killed at any moment
and restarted with the same arguments ends with exactly the files an uninterrupted run writes,
and shards together write what one unsharded run writes.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from instructedit._checks import check_counts, check_range
from instructedit._inputs import check_side, check_texts
from instructedit._launch import job_state
from instructedit.captions import CaptionEdit, CaptionEditor, Rejection
from instructedit.clip import ClipDirectionalFilter
from instructedit.data import (
    FolderSample,
    write_caption_folder,
    write_json_atomic,
    write_seeds_index,
)
from instructedit.data._folder import read_json_file
from instructedit.p2p import (
    PAIR_CONTROLS,
    REAL_EDIT_METHODS,
    PairControl,
    RealEditMethod,
    check_local_blend,
)
from instructedit.seeding import seeded

__all__ = ["GenerationConfig", "GenerationSummary", "generate_dataset", "parse_shard"]

logger = logging.getLogger(__name__)

SKIPPED = "_skipped"
"""Folder of the markers of caption pairs that produced no kept sample."""


def parse_shard(text: str) -> tuple[int, int]:
    """Parses ``"i/n"`` (0 ≤ i < n)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError as error:
        raise ValueError(f"shard must look like 'i/n' (e.g. '0/4'), got {text!r}") from error
    if not 0 <= index < count:
        raise ValueError(f"shard must satisfy 0 <= i < n, got {text!r}")
    return index, count


@dataclass(frozen=True)
class GenerationConfig:
    """Settings of a generation run (the paper's values by default)."""

    samples_per_pair: int = 100
    """Candidate pairs sampled per caption edit (paper: 100)."""
    keep_per_pair: int = 4
    """Kept per caption edit, best directional similarity first (paper: at most 4)."""
    batch_size: int = 4
    """Candidates rendered per batch."""
    num_inference_steps: int = 100
    """Sampler steps (paper: 100, Euler ancestral)."""
    seed: int = 0
    """Run seed; each caption's randomness derives from it and the caption's index."""
    injection_range: tuple[float, float] = (0.1, 0.9)
    """p ~ U(range): the control strength, the fraction of steps under ``control``."""
    control: PairControl = "self_attention"
    """What p controls (:meth:`~instructedit.p2p.PromptToPrompt.sample_pairs`): the official
    generator's self-attention injection, or google/prompt-to-prompt's cross-attention edit."""
    local_blend: float | None = None
    """With ``control="cross_attention"``: the mask threshold of a local blend around the edited
    words (google's 0.3), which keeps the rest of the target the source's; ``None``: none."""
    guidance_range: tuple[float, float] = (7.5, 15.0)
    """Text guidance scale ~ U(range)."""
    height: int | None = None
    """Image height in pixels, a positive multiple of 8 (default: the model's)."""
    width: int | None = None
    """Image width in pixels, a positive multiple of 8 (default: the model's)."""
    shard: tuple[int, int] = (0, 1)
    """(i, n): this run handles captions with index ≡ i (mod n)."""
    real_method: RealEditMethod = "virtual"
    """With real images (``generate_dataset(images=...)``): how each image enters the model
    (:meth:`~instructedit.p2p.PromptToPrompt.sample_real_pairs`): virtual inversion (with
    InfEdit's unified attention control as ``control`` and ``local_blend`` choose), null-text
    or DDIM inversion. Such runs render one candidate at a time; the inversion methods render
    at the edit's guidance 7.5, not ``guidance_range``."""

    def __post_init__(self) -> None:
        check_counts(
            self, ("samples_per_pair", "keep_per_pair", "batch_size", "num_inference_steps")
        )
        if self.control not in PAIR_CONTROLS:
            raise ValueError(f"control must be one of {PAIR_CONTROLS}, got {self.control!r}")
        check_local_blend(self.local_blend, self.control)
        if self.real_method not in REAL_EDIT_METHODS:
            raise ValueError(
                f"real_method must be one of {REAL_EDIT_METHODS}, got {self.real_method!r}"
            )
        check_range("injection_range", self.injection_range, maximum=1.0)
        check_range("guidance_range", self.guidance_range)
        for name in ("height", "width"):
            if getattr(self, name) is not None:
                # Stable Diffusion's VAE: 8 pixels per latent. A model with another factor
                # refuses what it cannot render when sampling starts.
                check_side(getattr(self, name), name, 8)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an int, got {self.seed!r}")
        try:
            index, count = self.shard
        except (TypeError, ValueError):
            raise ValueError(f"shard must be a pair (i, n), got {self.shard!r}") from None
        if not (isinstance(index, int) and isinstance(count, int) and 0 <= index < count):
            raise ValueError(f"shard must satisfy 0 <= i < n, got {self.shard}")


@dataclass
class GenerationSummary:
    """Counts of a run (over this shard, resumed work included)."""

    captions: int = 0
    """Captions in this shard."""
    resumed: int = 0
    """Captions already finished by an earlier run."""
    caption_rejections: Counter[str] = field(default_factory=Counter)
    """Captions without an acceptable edit, per reason."""
    samples: int = 0
    """Candidate pairs rendered."""
    dropped: Counter[str] = field(default_factory=Counter)
    """Candidates dropped by the CLIP filter, per failed criterion (plus ``"beyond_top_k"``)."""
    kept: int = 0
    """Pairs written."""
    pairs_with_kept: int = 0
    """Caption edits with at least one kept pair."""

    def add(self, record: dict[str, Any]) -> None:
        """Adds one caption's stored counts."""
        self.samples += record.get("samples", 0)
        self.kept += record.get("kept", 0)
        self.pairs_with_kept += 1 if record.get("kept", 0) else 0
        self.dropped.update(record.get("dropped", {}))
        if record.get("rejected"):
            self.caption_rejections[record["rejected"]] += 1

    def __str__(self) -> str:
        lines = [
            f"captions {self.captions} (resumed {self.resumed})",
            f"caption edits rejected: {dict(self.caption_rejections) or 0}",
            f"candidate pairs {self.samples}, kept {self.kept} from {self.pairs_with_kept} caption edits",
            f"dropped: {dict(self.dropped) or 0}",
        ]
        return "\n".join(lines)


def _caption_seed(run_seed: int, index: int) -> int:
    return (run_seed * 1_000_003 + index) % (2**31 - 1)


def _process_shard(shard: tuple[int, int]) -> tuple[int, int, Any]:
    """Combines ``shard`` with accelerate's processes, when launched with accelerate."""
    state = job_state()
    index = shard[0] * state.num_processes + state.process_index
    return index, shard[1] * state.num_processes, state


def _finished(output: Path, index: int) -> dict[str, Any] | None:
    folder = output / f"{index:07d}"
    if (folder / "prompt.json").is_file():
        summary = folder / "summary.json"
        if summary.is_file():
            return _record(summary)
        # A folder written by another tool (or the official code): count what it holds.
        return {"kept": len(list(folder.glob("*_0.jpg")))}
    marker = output / SKIPPED / f"{index:07d}.json"
    if marker.is_file():
        return _record(marker)
    return None


def _record(path: Path) -> dict[str, Any]:
    """A caption's stored counts (``summary.json`` or a skip marker)."""
    value = read_json_file(path)
    if not isinstance(value, dict):
        raise ValueError(
            f"{path}: expected a JSON object of counts, got {type(value).__name__}; delete the "
            "file to redo this caption"
        )
    return value


def _clean_stale(root: Path, indices: Sequence[int]) -> None:
    """Removes half-written files a killed run of these captions left behind.

    Only this shard's captions are touched, so shards sharing ``root`` never disturb each other.
    """
    names = {f"{index:07d}" for index in indices}
    for folder in (root, root / SKIPPED):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            parts = path.name.split(".")
            if path.name.startswith(".") and len(parts) > 2 and parts[1] in names:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)


STALE_SECONDS = 60.0
"""Age after which a temporary ``seeds.json`` file is a killed run's, not a running shard's."""


def _clean_stale_index(root: Path) -> None:
    """Removes temporary index files that killed runs left; a file younger than
    :data:`STALE_SECONDS` may be another shard's write in flight and is kept."""
    now = time.time()
    for path in root.glob(".seeds.json.*"):
        try:
            if now - path.stat().st_mtime > STALE_SECONDS:
                path.unlink(missing_ok=True)
        except FileNotFoundError:  # renamed by its writer meanwhile
            continue


def generate_dataset(
    captions: Sequence[str],
    output: str | Path,
    *,
    caption_editor: CaptionEditor,
    p2p: Any,
    clip_filter: ClipDirectionalFilter,
    config: GenerationConfig | None = None,
    images: Sequence[Any] | None = None,
    progress: bool = True,
) -> GenerationSummary:
    """Generates an InstructPix2Pix training set in the official folder layout.

    For each caption of this shard: the caption editor proposes (instruction, edited caption);
    :meth:`~instructedit.p2p.PromptToPrompt.sample_pairs` renders ``samples_per_pair`` candidate
    pairs with the recipe's random parameters; the CLIP filter keeps those clearing its
    thresholds, best ``keep_per_pair`` by directional similarity; the caption's folder is written
    atomically. Finished captions are skipped on restart.

    Args:
        captions: all captions of the run (indices are global, whatever the shard).
        output: dataset root.
        caption_editor: stage 1 (e.g. a fine-tuned :class:`~instructedit.captions.LanguageModelCaptionEditor`).
        p2p: stage 2, a :class:`~instructedit.p2p.PromptToPrompt`.
        clip_filter: stage 3.
        config: run settings.
        images: real images, one per caption (what it describes), or a sequence that loads
            them on indexing: each pair then starts from its image
            (:meth:`~instructedit.p2p.PromptToPrompt.sample_real_pairs` with
            ``config.real_method``) instead of a rendered one; every sample's metadata records
            the method.
        progress: show a progress bar.

    Returns:
        The run's summary (also logged).
    """
    config = config or GenerationConfig()
    if not isinstance(config, GenerationConfig):
        raise TypeError(f"config must be a GenerationConfig, got {type(config).__name__}")
    if isinstance(captions, (str, bytes)) or not isinstance(captions, Sequence):
        raise TypeError(f"captions must be a list of str, got {type(captions).__name__}")
    check_texts(captions, "captions", allow_empty=True)
    if images is not None and len(images) != len(captions):
        raise ValueError(f"got {len(images)} images for {len(captions)} captions")
    root = Path(output)
    root.mkdir(parents=True, exist_ok=True)
    shard_index, shard_count, state = _process_shard(config.shard)
    mine = [i for i in range(len(captions)) if i % shard_count == shard_index]
    _clean_stale(root, mine)
    summary = GenerationSummary(captions=len(mine))
    for index in tqdm(mine, disable=not progress, desc="captions"):
        done = _finished(root, index)
        if done is not None:
            summary.resumed += 1
            summary.add(done)
            continue
        seed = _caption_seed(config.seed, index)
        with seeded(seed):
            (edit,) = caption_editor.edit([captions[index]])
        if isinstance(edit, Rejection):
            record: dict[str, Any] = {
                "rejected": edit.reason,
                "samples": 0,
                "kept": 0,
                "dropped": {},
            }
            write_json_atomic(root / SKIPPED / f"{index:07d}.json", record)
            summary.add(record)
            continue
        image = None if images is None else images[index]
        record = _render_and_filter(root, index, edit, seed, p2p, clip_filter, config, image)
        summary.add(record)
    if state is not None:
        state.wait_for_everyone()
    if state is None or state.is_main_process:
        _clean_stale_index(root)
        write_seeds_index(root)
    logger.info("generation summary\n%s", summary)
    return summary


def _render_and_filter(
    root: Path,
    index: int,
    edit: CaptionEdit,
    seed: int,
    p2p: Any,
    clip_filter: ClipDirectionalFilter,
    config: GenerationConfig,
    image: Any = None,
) -> dict[str, Any]:
    method: dict[str, str] = {}
    shared: dict[str, Any] = {
        "num_samples": config.samples_per_pair,
        "seed": seed,
        "num_inference_steps": config.num_inference_steps,
        "injection_range": config.injection_range,
        "guidance_range": config.guidance_range,
        "control": config.control,
        "local_blend": config.local_blend,
        "height": config.height,
        "width": config.width,
        "progress": False,
    }
    if image is not None:
        candidates = p2p.sample_real_pairs(
            image, edit.input, edit.output, method=config.real_method, **shared
        )
        method = {"method": config.real_method}
    else:
        candidates = p2p.sample_pairs(
            edit.input, edit.output, batch_size=config.batch_size, **shared
        )
    count = len(candidates)
    result = clip_filter(
        [c.source for c in candidates],
        [c.target for c in candidates],
        [edit.input] * count,
        [edit.output] * count,
    )
    chosen = ClipDirectionalFilter.top_k(result, k=config.keep_per_pair)
    dropped = Counter(r for r in result.reasons if r is not None)
    passed = sum(r is None for r in result.reasons)
    if passed > len(chosen):
        dropped["beyond_top_k"] = passed - len(chosen)
    record: dict[str, Any] = {"samples": count, "kept": len(chosen), "dropped": dict(dropped)}
    if not chosen:
        write_json_atomic(root / SKIPPED / f"{index:07d}.json", record)
        return record
    scores = result.scores
    samples = [
        FolderSample(
            seed=candidates[i].seed,
            input_image=candidates[i].source,
            edited_image=candidates[i].target,
            metadata={
                "p2p_threshold": candidates[i].injection,
                "cfg_scale": candidates[i].guidance_scale,
                "clip_sim_0": _round(scores.text_similarity_before[i]),
                "clip_sim_1": _round(scores.text_similarity_after[i]),
                "clip_sim_dir": _round(scores.direction_similarity[i]),
                "clip_sim_image": _round(scores.image_similarity[i]),
                **method,
                **(
                    {}
                    if scores.structure_similarity is None
                    else {"structure_sim": _round(scores.structure_similarity[i])}
                ),
            },
        )
        for i in chosen
    ]
    write_caption_folder(root, index, edit.to_json(), samples, extra=record)
    return record


def _round(value: Any) -> float:
    number = float(value)
    return number if math.isfinite(number) else 0.0
