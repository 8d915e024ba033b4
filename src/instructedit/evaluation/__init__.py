"""Evaluation: the paper's guidance sweep (CLIP directional vs image similarity) and
MagicBrush-style metrics."""

from instructedit._public import publish
from instructedit.evaluation._cli import evaluate_model
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
    "EditMetrics",
    "SweepPoint",
    "combine_sweeps",
    "edit_metrics",
    "evaluate_model",
    "guidance_sweep",
    "plot_sweep",
    "write_csv",
]

publish(__name__, globals(), __all__)
