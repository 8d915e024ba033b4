"""The ShapesWorld reproduction of the paper: every stage with the library's public parts.

Stages (each skipped when its folder holds a ``DONE.json``; the long ones resume inside):

1. ``text_to_image`` — train the autoencoder, then text encoder + UNet, on rendered scenes;
2. ``clip`` — train a small CLIP on renders and captions;
3. ``pairs`` — :class:`~instructedit.worlds.shapes.ShapesCaptionEditor` edits captions,
   :class:`~instructedit.p2p.PromptToPrompt` samples candidate pairs (``generate_dataset``),
   :class:`~instructedit.clip.ClipDirectionalFilter` chooses the training set (and the
   ablations' sets) from their CLIP scores;
4. ``editor`` — :class:`~instructedit.training.Trainer` from the text-to-image UNet via
   :func:`~instructedit.training.to_edit_unet`;
5. ``guidance`` — the editor's guidance scales (s_T, s_I), chosen over a grid by the oracle on
   *validation* edits (rendered scenes of another seed than the test edits'), written as
   ``guidance/guidance_config.json``;
6. ``evaluate`` — held-out *rendered* scenes judged by the oracle per edit family at the chosen
   guidance and at the paper's, against the identity and SDEdit baselines; the guidance sweep;
   a before/after grid;
7. ``ablations`` — editors trained without the CLIP filter, on fewer pairs and on the
   renderer's ground-truth pairs (each at the paper's guidance; two more on request:
   :data:`ABLATIONS`);
8. ``report`` — ``report.rst``, the tables of the ShapesWorld research notes.

:func:`reproduce` runs them; ``instructedit shapes reproduce`` (:func:`shapes_command`) is its
command.
"""

from instructedit._public import publish
from instructedit.worlds.recipe import _config, _evaluate
from instructedit.worlds.recipe._base_models import (
    autoencoder_sub_stage,
    clip_scorer,
    text_to_image_pipeline,
)
from instructedit.worlds.recipe._candidates import (
    candidate_sets,
    ground_truth_records,
    pair_captions,
    pair_generation_config,
)
from instructedit.worlds.recipe._command import shapes_command
from instructedit.worlds.recipe._config import RecipeConfig
from instructedit.worlds.recipe._editor import editor_trainer, evaluate_editor
from instructedit.worlds.recipe._guidance import (
    best_setting,
    chosen_guidance,
    grid_edges,
    guidance_grid,
)
from instructedit.worlds.recipe._report import edges_note
from instructedit.worlds.recipe._runner import reproduce
from instructedit.worlds.recipe._selection import (
    calibrate_thresholds,
    load_selection,
    read_back_pairs,
    select_pairs,
    select_training_sets,
    selection_folders,
)
from instructedit.worlds.recipe._workers import pair_worker_count, render_in_workers

# Constants carry no ``__module__``: the API reference reads their docstrings here, where they
# are exported.
STAGES = _config.STAGES
"""The recipe's stages, in the order :func:`reproduce` runs them, each writing the folder of its
name in :attr:`RecipeConfig.output_dir`."""

ABLATIONS = _config.ABLATIONS
"""The ``ablations`` stage's editors, each trained ``ablation_steps`` and compared with the full
editor at that step: ``no_clip_filter`` (every candidate, no CLIP involved: the paper's),
``fewer_pairs`` (the pairs of ``fewer_pairs_fraction`` of the captions: the paper's),
``ground_truth`` (the renderer's true pairs, as many as the filter kept: one the paper could not
run), ``ground_truth_large`` (``ground_truth_large_pairs`` of them) and ``zero_init`` (the filtered
pairs with the paper's zero-initialised image channels, against the recipe's copied ones)."""

DEFAULT_ABLATIONS = _config.DEFAULT_ABLATIONS
""":attr:`RecipeConfig.ablations`' default: the paper's two ablations and the ground-truth one."""

PAPER_GUIDANCE_ROW = _evaluate.PAPER_GUIDANCE_ROW
"""The ``evaluate`` stage's name of the editor at the paper's guidance, when the ``guidance``
stage chose another."""

__all__ = [
    "ABLATIONS",
    "DEFAULT_ABLATIONS",
    "PAPER_GUIDANCE_ROW",
    "STAGES",
    "RecipeConfig",
    "autoencoder_sub_stage",
    "best_setting",
    "calibrate_thresholds",
    "candidate_sets",
    "chosen_guidance",
    "clip_scorer",
    "edges_note",
    "editor_trainer",
    "evaluate_editor",
    "grid_edges",
    "ground_truth_records",
    "guidance_grid",
    "load_selection",
    "pair_captions",
    "pair_generation_config",
    "pair_worker_count",
    "read_back_pairs",
    "render_in_workers",
    "reproduce",
    "select_pairs",
    "select_training_sets",
    "selection_folders",
    "shapes_command",
    "text_to_image_pipeline",
]

# RecipeConfig keeps its module: the API reference reads its fields' docstrings from the source
# of the module that defines it, named by ``__module__``.
publish(__name__, globals(), [name for name in __all__ if name != "RecipeConfig"])
