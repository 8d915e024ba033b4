"""Stage 4: training an InstructPix2Pix editor."""

from instructedit._public import publish
from instructedit.training._cli import load_run_file, train_from_config
from instructedit.training._config import TrainConfig
from instructedit.training._data import (
    DatasetsSource,
    EditSource,
    FolderSource,
    MagicBrushSource,
    ParquetSource,
    RecordSource,
    StepBatches,
    TrainingExamples,
    augment_pair,
)
from instructedit.training._distill import GuidanceDistiller, guidance_target, to_distilled_unet
from instructedit.training._dropout import DroppedConditions, conditioning_dropout
from instructedit.training._surgery import to_edit_unet
from instructedit.training._trainer import NoisyBatch, Trainer, TrainingState

__all__ = [
    "DatasetsSource",
    "DroppedConditions",
    "EditSource",
    "FolderSource",
    "GuidanceDistiller",
    "MagicBrushSource",
    "NoisyBatch",
    "ParquetSource",
    "RecordSource",
    "StepBatches",
    "TrainConfig",
    "Trainer",
    "TrainingExamples",
    "TrainingState",
    "augment_pair",
    "conditioning_dropout",
    "guidance_target",
    "load_run_file",
    "to_distilled_unet",
    "to_edit_unet",
    "train_from_config",
]

publish(__name__, globals(), __all__)
