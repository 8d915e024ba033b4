"""Evaluation: the paper's guidance sweep (CLIP directional vs image similarity) and
MagicBrush's protocol (L1, L2, CLIP-I, CLIP-T, DINO against human-made edits)."""

from instructedit._public import publish
from instructedit.evaluation._cli import evaluate_model
from instructedit.evaluation._magicbrush import (
    DinoFeatures,
    EditScores,
    MagicBrushMetrics,
    MagicBrushResult,
    dino_preprocess,
    evaluate_magicbrush,
    l1_distance,
    l2_distance,
    score_edits,
    summarize_scores,
    write_magicbrush,
)
from instructedit.evaluation._metrics import (
    PAPER_IMAGE_SCALES,
    EditMetrics,
    SweepPoint,
    combine_sweeps,
    edit_metrics,
    guidance_sweep,
    plot_sweep,
    write_csv,
)

__all__ = [
    "PAPER_IMAGE_SCALES",
    "DinoFeatures",
    "EditMetrics",
    "EditScores",
    "MagicBrushMetrics",
    "MagicBrushResult",
    "SweepPoint",
    "combine_sweeps",
    "dino_preprocess",
    "edit_metrics",
    "evaluate_magicbrush",
    "evaluate_model",
    "guidance_sweep",
    "l1_distance",
    "l2_distance",
    "plot_sweep",
    "score_edits",
    "summarize_scores",
    "write_csv",
    "write_magicbrush",
]

publish(__name__, globals(), __all__)
