"""MagicBrush's evaluation protocol (Zhang et al., NeurIPS 2023): L1, L2, CLIP-I, CLIP-T and DINO
of edited images against the human-made ground truth, per turn, for the final turn and over all
turns, with multi-turn (chained) or single-turn (independent) editing.

The definitions follow MagicBrush's ``evaluation/image_eval.py``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

from instructedit._inputs import check_positive_int
from instructedit.clip import ClipScorer
from instructedit.data import EditTurn, SessionRecord
from instructedit.evaluation._metrics import write_csv
from instructedit.guidance import check_scale

__all__ = [
    "DinoFeatures",
    "EditScores",
    "MagicBrushMetrics",
    "MagicBrushResult",
    "dino_preprocess",
    "evaluate_magicbrush",
    "l1_distance",
    "l2_distance",
    "score_edits",
    "summarize_scores",
    "write_magicbrush",
]

TurnMode = Literal["multi", "single"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _unit_pixels(generated: Image.Image, target: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """Both images as RGB in [0, 1], the generated one resized (bicubic) to the target's size."""
    truth = target.convert("RGB")
    output = generated.convert("RGB")
    if output.size != truth.size:
        output = output.resize(truth.size, Image.Resampling.BICUBIC)
    return (
        np.asarray(output, dtype=np.float64) / 255.0,
        np.asarray(truth, dtype=np.float64) / 255.0,
    )


def l1_distance(generated: Image.Image, target: Image.Image) -> float:
    """MagicBrush's L1: the mean absolute difference over all pixels and channels, in [0, 1],
    after resizing ``generated`` to ``target``'s size (bicubic)."""
    output, truth = _unit_pixels(generated, target)
    return float(np.abs(output - truth).mean())


def l2_distance(generated: Image.Image, target: Image.Image) -> float:
    """MagicBrush's L2: the mean *squared* difference over all pixels and channels (no square
    root), in [0, 1], after resizing ``generated`` to ``target``'s size (bicubic)."""
    output, truth = _unit_pixels(generated, target)
    return float(np.square(output - truth).mean())


def dino_preprocess(image: Image.Image) -> Tensor:
    """DINO's evaluation transform: the short side resized to 256 (bicubic), a centred 224 crop,
    ImageNet mean and std. Returns ``[3, 224, 224]``."""
    rgb = image.convert("RGB")
    width, height = rgb.size
    short, long = min(width, height), max(width, height)
    resized_long = int(256 * long / short)
    size = (256, resized_long) if width <= height else (resized_long, 256)
    rgb = rgb.resize(size, Image.Resampling.BICUBIC)
    left = round((size[0] - 224) / 2.0)
    top = round((size[1] - 224) / 2.0)
    pixels = np.asarray(rgb.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255.0
    tensor = torch.from_numpy(pixels).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (tensor - mean) / std


class DinoFeatures:
    """DINO image features for MagicBrush's DINO score (Caron et al., ICCV 2021): the class
    token of a ViT, from images prepared by :func:`dino_preprocess`.

    Args:
        model: a ``transformers`` ``ViTModel`` / ``Dinov2Model`` (the class token of
            ``last_hidden_state`` is taken), or any callable from ``[N, 3, 224, 224]`` pixels to
            ``[N, D]`` features (as ``torch.hub``'s ``dino_vits16``) or ``[N, T, D]`` tokens.
            MagicBrush uses DINO ViT-S/16.
        batch_size: images per forward pass.
        device: where to run (default: the model's device, else CPU).
    """

    def __init__(
        self,
        model: Callable[..., Any],
        *,
        batch_size: int = 32,
        device: str | torch.device | None = None,
    ) -> None:
        if not callable(model):
            raise TypeError(f"model must be callable, got {type(model).__name__}")
        check_positive_int(batch_size, "batch_size")
        self.model = model
        self.batch_size = batch_size
        if isinstance(model, torch.nn.Module):
            model.eval()
            parameter = next(model.parameters(), None)
            if device is not None:
                model.to(device)
            elif parameter is not None:
                device = parameter.device
        self.device = torch.device(device or "cpu")

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, *, device: str | torch.device | None = None
    ) -> DinoFeatures:
        """Loads a DINO model saved in ``folder`` with ``transformers.AutoModel`` (for example
        ``facebook/dino-vits16`` downloaded beforehand); never reaches a model hub."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"dino_model: no such model folder: {folder}")
        from transformers import AutoModel

        return cls(AutoModel.from_pretrained(folder, local_files_only=True), device=device)

    def __call__(self, images: Sequence[Image.Image]) -> Tensor:
        """Features ``[N, D]`` (float32, on CPU) of ``images``."""
        features = []
        with torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                chunk = images[start : start + self.batch_size]
                batch = torch.stack([dino_preprocess(image) for image in chunk]).to(self.device)
                features.append(self._class_token(batch).float().cpu())
        return torch.cat(features) if features else torch.empty(0, 0)

    def _class_token(self, pixels: Tensor) -> Tensor:
        if hasattr(self.model, "config"):
            output = self.model(pixel_values=pixels)
        else:
            output = self.model(pixels)
        hidden = getattr(output, "last_hidden_state", output)
        if not isinstance(hidden, Tensor) or hidden.ndim not in (2, 3):
            raise TypeError(
                "the DINO model must return [N, D] features, [N, T, D] tokens or an output with "
                f"last_hidden_state, got {type(hidden).__name__}"
            )
        return hidden[:, 0] if hidden.ndim == 3 else hidden


@dataclass(frozen=True)
class EditScores:
    """MagicBrush's scores of one edited image against its ground truth.

    Attributes:
        session_id: the session (``img_id``).
        turn: the turn's number, from 1.
        l1: mean absolute pixel difference in [0, 1] (lower is closer).
        l2: mean squared pixel difference in [0, 1] (lower is closer).
        clip_i: cosine of the CLIP image features of the output and the ground truth.
        clip_t: cosine of the output's CLIP image features and the ground-truth output's
            caption; ``nan`` when the turn has no output caption.
        clip_t_oracle: the same for the ground-truth image itself (the best an editor can be
            expected to reach); ``nan`` without a caption.
        dino: cosine of the DINO features of the output and the ground truth; ``nan`` without
            a DINO model.
    """

    session_id: str
    turn: int
    l1: float
    l2: float
    clip_i: float
    clip_t: float
    clip_t_oracle: float
    dino: float


@dataclass(frozen=True)
class MagicBrushMetrics:
    """Means of :class:`EditScores` over a set of edits (a ``nan`` score makes its mean ``nan``).

    Attributes:
        l1: mean L1.
        l2: mean L2.
        clip_i: mean CLIP-I.
        clip_t: mean CLIP-T.
        clip_t_oracle: mean CLIP-T of the ground-truth images.
        dino: mean DINO.
        count: edits averaged.
    """

    l1: float
    l2: float
    clip_i: float
    clip_t: float
    clip_t_oracle: float
    dino: float
    count: int


_SCORE_FIELDS = ("l1", "l2", "clip_i", "clip_t", "clip_t_oracle", "dino")


def summarize_scores(scores: Sequence[EditScores]) -> MagicBrushMetrics:
    """The mean of every score over ``scores`` (at least one)."""
    if not scores:
        raise ValueError("scores is empty; a summary averages at least one edit")
    means = {name: float(np.mean([getattr(s, name) for s in scores])) for name in _SCORE_FIELDS}
    return MagicBrushMetrics(**means, count=len(scores))


@dataclass(frozen=True)
class MagicBrushResult:
    """Every edit's scores from one run of :func:`evaluate_magicbrush`, and their summaries.

    Attributes:
        turns: ``"multi"`` (each turn edits the previous turn's output) or ``"single"`` (each
            turn edits the ground-truth input).
        scores: one entry per edited turn, session by session.
    """

    turns: TurnMode
    scores: tuple[EditScores, ...]

    def all_turns(self) -> MagicBrushMetrics:
        """The means over every turn of every session."""
        return summarize_scores(self.scores)

    def final_turn(self) -> MagicBrushMetrics:
        """The means over the last turn of each session."""
        last: dict[str, EditScores] = {}
        for score in self.scores:
            if score.session_id not in last or score.turn > last[score.session_id].turn:
                last[score.session_id] = score
        return summarize_scores(list(last.values()))

    def per_turn(self) -> dict[int, MagicBrushMetrics]:
        """The means over the edits of each turn number (1, 2, …): how quality drifts."""
        numbers = sorted({score.turn for score in self.scores})
        return {
            number: summarize_scores([s for s in self.scores if s.turn == number])
            for number in numbers
        }

    def to_dict(self) -> dict[str, Any]:
        """The summaries as JSON-ready data (``nan`` becomes ``None``)."""

        def clean(metrics: MagicBrushMetrics) -> dict[str, Any]:
            return {
                k: None if isinstance(v, float) and math.isnan(v) else v
                for k, v in asdict(metrics).items()
            }

        return {
            "protocol": "magicbrush",
            "turns": self.turns,
            "sessions": len({score.session_id for score in self.scores}),
            "final_turn": clean(self.final_turn()),
            "all_turns": clean(self.all_turns()),
            "per_turn": {str(n): clean(m) for n, m in self.per_turn().items()},
        }


def score_edits(
    generated: Sequence[Image.Image],
    turns: Sequence[EditTurn],
    scorer: ClipScorer,
    *,
    dino: Callable[[Sequence[Image.Image]], Tensor] | None = None,
) -> list[EditScores]:
    """Scores ``generated[i]`` against ``turns[i]``'s ground-truth output.

    Args:
        generated: the edited images, one per turn.
        turns: the turns they answer (the ground truth is ``turn.record.edited_image``, the
            caption ``turn.record.output_caption``).
        scorer: CLIP features; MagicBrush uses ViT-B/32 with its own transform (resize and
            centre crop: ``ClipScorer.from_open_clip("ViT-B-32", "openai", transforms="model")``).
        dino: a function from images to DINO features ``[N, D]``, e.g. :class:`DinoFeatures`;
            ``None`` leaves DINO ``nan``.
    """
    if isinstance(generated, Image.Image) or not isinstance(generated, Sequence):
        raise TypeError(f"generated must be a list of images, got {type(generated).__name__}")
    if isinstance(turns, EditTurn) or not isinstance(turns, Sequence):
        raise TypeError(f"turns must be a list of EditTurn, got {type(turns).__name__}")
    if len(generated) != len(turns):
        raise ValueError(f"got {len(generated)} generated images for {len(turns)} turns")
    for index, (image, turn) in enumerate(zip(generated, turns, strict=True)):
        if not isinstance(image, Image.Image):
            raise TypeError(f"generated[{index}] must be a PIL image, got {type(image).__name__}")
        if not isinstance(turn, EditTurn):
            raise TypeError(f"turns[{index}] must be an EditTurn, got {type(turn).__name__}")
    if not turns:
        return []
    targets = [turn.record.edited_image for turn in turns]
    output_features = scorer.encode_images(list(generated))
    target_features = scorer.encode_images(targets)
    clip_i = (output_features * target_features).sum(-1)
    captions = [turn.record.output_caption for turn in turns]
    clip_t = torch.full((len(turns),), math.nan)
    clip_t_oracle = torch.full((len(turns),), math.nan)
    known = [i for i, caption in enumerate(captions) if caption]
    if known:
        text_features = scorer.encode_texts([captions[i] or "" for i in known])
        clip_t[known] = (output_features[known] * text_features).sum(-1)
        clip_t_oracle[known] = (target_features[known] * text_features).sum(-1)
    dino_scores = torch.full((len(turns),), math.nan)
    if dino is not None:
        dino_scores = torch.nn.functional.cosine_similarity(
            dino(list(generated)), dino(targets), dim=-1
        )
    return [
        EditScores(
            session_id=turn.session_id,
            turn=turn.turn,
            l1=l1_distance(image, turn.record.edited_image),
            l2=l2_distance(image, turn.record.edited_image),
            clip_i=float(clip_i[i]),
            clip_t=float(clip_t[i]),
            clip_t_oracle=float(clip_t_oracle[i]),
            dino=float(dino_scores[i]),
        )
        for i, (image, turn) in enumerate(zip(generated, turns, strict=True))
    ]


def _edit_session(
    pipe: Any, session: SessionRecord, turns: TurnMode, options: dict[str, Any], seed: int
) -> list[Image.Image]:
    """Edits a session's turns in order; in ``"multi"`` each turn edits the last output."""
    outputs: list[Image.Image] = []
    for turn in session.turns:
        image = outputs[-1] if turns == "multi" and outputs else turn.record.input_image
        # MagicBrush reseeds before every edit: each turn starts from the same noise.
        generator = torch.Generator(pipe.device).manual_seed(seed)
        result = pipe(image, turn.record.edit_prompt, generator=generator, **options)
        outputs.append(result.images[0])
    return outputs


def _save_outputs(
    directory: Path, session: SessionRecord, outputs: Sequence[Image.Image], turns: TurnMode
) -> None:
    """Writes a session's outputs named as MagicBrush's ``image_eval.py`` reads them."""
    folder = directory / session.session_id
    folder.mkdir(parents=True, exist_ok=True)
    tag = "iter" if turns == "multi" else "inde"
    for turn, image in zip(session.turns, outputs, strict=True):
        suffix = "1" if turn.turn == 1 else f"{tag}_{turn.turn}"
        image.save(folder / f"{session.session_id}_{suffix}.png")


def evaluate_magicbrush(
    pipe: Any,
    sessions: Iterable[SessionRecord],
    scorer: ClipScorer,
    *,
    turns: TurnMode = "multi",
    dino: Callable[[Sequence[Image.Image]], Tensor] | None = None,
    num_inference_steps: int = 100,
    text_scale: float = 7.5,
    image_scale: float = 1.5,
    seed: int = 0,
    images_dir: str | Path | None = None,
    progress: bool = True,
) -> MagicBrushResult:
    """Edits MagicBrush sessions turn by turn and scores every output against the ground truth.

    In ``"multi"`` mode (MagicBrush's multi-turn setting) turn ``n + 1`` edits the editor's own
    output of turn ``n``, so errors accumulate; in ``"single"`` mode every turn edits the
    ground-truth input. MagicBrush's tables report the final turn of the multi-turn run and all
    turns of the single-turn run; turn 1 is the same edit in both.

    Args:
        pipe: an :class:`~instructedit.pipeline.EditPipeline` (or anything called as
            ``pipe(image, instruction, generator=..., num_inference_steps=...,
            guidance_scale=..., image_guidance_scale=..., progress=...)`` returning
            ``.images``, with a ``.device``).
        sessions: the sessions, e.g. :func:`~instructedit.data.read_magicbrush`; read lazily.
        scorer: CLIP features (see :func:`score_edits`).
        turns: ``"multi"`` or ``"single"``.
        dino: DINO features (see :func:`score_edits`); ``None`` leaves DINO ``nan``.
        num_inference_steps: sampler steps per edit.
        text_scale: s_T.
        image_scale: s_I.
        seed: every edit starts from this seed's noise, as MagicBrush's editing script does.
        images_dir: where to also write the outputs in MagicBrush's result layout
            (``<img_id>/<img_id>_1.png``, ``_iter_<n>.png`` or ``_inde_<n>.png``), readable by
            its ``image_eval.py``; ``None`` writes nothing.
        progress: show a progress bar over sessions.
    """
    if turns not in ("multi", "single"):
        raise ValueError(f"turns must be 'multi' or 'single', got {turns!r}")
    if isinstance(sessions, SessionRecord) or not isinstance(sessions, Iterable):
        raise TypeError(f"sessions must be an iterable of SessionRecord, got {sessions!r}")
    check_positive_int(num_inference_steps, "num_inference_steps")
    check_scale("text_scale", text_scale)
    check_scale("image_scale", image_scale)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    options = {
        "num_inference_steps": num_inference_steps,
        "guidance_scale": text_scale,
        "image_guidance_scale": image_scale,
        "progress": False,
    }
    scores: list[EditScores] = []
    for index, session in enumerate(tqdm(sessions, disable=not progress, desc="MagicBrush")):
        if not isinstance(session, SessionRecord):
            raise TypeError(f"sessions[{index}] must be an SessionRecord, got {session!r}")
        outputs = _edit_session(pipe, session, turns, options, seed)
        if images_dir is not None:
            _save_outputs(Path(images_dir), session, outputs, turns)
        scores.extend(score_edits(outputs, session.turns, scorer, dino=dino))
    if not scores:
        raise ValueError("sessions is empty; the evaluation needs at least one session")
    return MagicBrushResult(turns=turns, scores=tuple(scores))


def write_magicbrush(
    result: MagicBrushResult, directory: str | Path, *, settings: dict[str, Any] | None = None
) -> list[Path]:
    """Writes ``magicbrush.json`` (final-turn, all-turn and per-turn means, and ``settings``)
    and ``magicbrush.csv`` (every edit's scores) into ``directory``; returns both paths."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    summary = {**result.to_dict(), "settings": dict(settings or {})}
    json_path = target / "magicbrush.json"
    json_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return [json_path, write_csv(list(result.scores), target / "magicbrush.csv")]
