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
8. ``report`` — ``report.rst``, the tables of the documentation's results page.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from PIL import Image

from instructedit._checks import check_counts, check_range
from instructedit.clip._filter import check_structure_threshold
from instructedit.data import folder_index, write_json_atomic
from instructedit.evaluation import PAPER_IMAGE_SCALES
from instructedit.guidance import check_scale
from instructedit.p2p import PAIR_CONTROLS, check_local_blend
from instructedit.sampling import check_sampler
from instructedit.training._config import PREDICTION_TYPES
from instructedit.worlds._models import AUTOENCODER_BLOCKS, check_text_to_image_training

if TYPE_CHECKING:
    from instructedit.datagen import GenerationConfig

__all__ = [
    "ABLATIONS",
    "DEFAULT_ABLATIONS",
    "PAPER_GUIDANCE_ROW",
    "STAGES",
    "RecipeConfig",
    "best_setting",
    "calibrate_thresholds",
    "candidate_sets",
    "chosen_guidance",
    "editor_trainer",
    "evaluate_editor",
    "grid_edges",
    "guidance_grid",
    "load_selection",
    "pair_captions",
    "pair_generation_config",
    "pair_worker_count",
    "reproduce",
    "select_pairs",
    "select_training_sets",
    "selection_folders",
    "shapes_command",
]

logger = logging.getLogger(__name__)

STAGES = (
    "text_to_image",
    "clip",
    "pairs",
    "editor",
    "guidance",
    "evaluate",
    "ablations",
    "report",
)


ABLATIONS: tuple[str, ...] = (
    "no_clip_filter",
    "fewer_pairs",
    "ground_truth",
    "ground_truth_large",
    "zero_init",
)
"""The ``ablations`` stage's editors, each trained ``ablation_steps`` and compared with the full
editor at that step: ``no_clip_filter`` (every candidate, no CLIP involved: the paper's),
``fewer_pairs`` (the pairs of ``fewer_pairs_fraction`` of the captions: the paper's),
``ground_truth`` (the renderer's true pairs, as many as the filter kept: one the paper could not
run), ``ground_truth_large`` (``ground_truth_large_pairs`` of them) and ``zero_init`` (the filtered
pairs with the paper's zero-initialised image channels, against the recipe's copied ones)."""

DEFAULT_ABLATIONS: tuple[str, ...] = ABLATIONS[:3]
""":attr:`RecipeConfig.ablations`' default: the paper's two ablations and the ground-truth one."""


@dataclass(frozen=True)
class RecipeConfig:
    """Sizes of the ShapesWorld recipe (defaults: the full run on a 2-core CPU)."""

    output_dir: str = "outputs/shapes"
    """Where every stage writes."""
    device: str | None = None
    """Where models run (``"cuda"``, ``"cpu"``, …); ``None``: CUDA when available. The editor's
    training runs where accelerate puts it."""
    seed: int = 0
    """Seed of every stage."""
    size: int = 32
    """Scene side in pixels."""
    latent_downsampling: Literal[2, 4] = 4
    """How much the autoencoder downsamples (:func:`~instructedit.worlds._models.shapes_autoencoder`):
    4, Stable Diffusion's 8× scaled to this world (a 32² scene is an 8² latent), or 2 (a 16²
    latent: on two CPU cores an editor's training step took 3.8× as long). The text-to-image UNet
    is configured for the latent side; the editor, made from it, follows."""
    autoencoder_steps: int = 600
    """Autoencoder training steps (batch 64; ~0.8 s each on two CPU cores)."""
    decoder_steps: int = 1000
    """Steps fine-tuning the autoencoder's decoder with its encoder frozen after the joint training
    (batch 64; ~0.65 s each on two CPU cores; 0: none), as Stability's ``sd-vae-ft-mse``: the
    latent space stays, the decoded shapes get their colours right."""
    decoder_shape_weight: float = 4.0
    """Extra loss weight of the pixels the shapes cover in that fine-tuning
    (:func:`~instructedit.worlds._models.finetune_decoder`'s ``shape_weight``; 0: plain L1 + MSE
    over the whole scene, where shapes are a small share of the pixels, the default until
    2026-11-29). From the eighteenth run's jointly trained autoencoder, 4 lowered the round trip's
    unchanged-region error on the held-out edits from 0.030 to 0.026 (background changes 0.052
    to 0.037, additions 0.049 to 0.041; recolours and removals, whose kept region is mostly
    background, 0.007 to 0.010 and 0.011 to 0.015), at the same speed."""
    text_to_image_steps: int = 3500
    """Text encoder + UNet training steps (batch 64; ~0.87 s each on two CPU cores, measured
    2026-11-29). The first run trained 4000, the default until 2026-11-29, when the recipe's stages
    were timed again and no longer fitted three hours with it."""
    text_to_image_schedule: Literal["constant", "cosine"] = "constant"
    """Learning-rate schedule of the text-to-image training (AdamW, 3e-4): ``"constant"``, or
    ``"cosine"``, decaying to 0 over the steps. Measured on this world's model, annealing hurts:
    4000 more cosine steps on the second run's model drew the captions' colours in 47 % of the
    samples with the average (38 % without), against 73 % halfway (see ``text_to_image_ema``)."""
    text_to_image_ema: float | None = 0.999
    """Decay of an exponential moving average of the text-to-image weights, which the model
    keeps (``None``: the last weights, as the first and second runs kept). On the second run's
    model (63 % of the captions' colours drawn), 2000 more steps at 3e-4 → 1.5e-4 draw 73 % with
    the average and 57 % without it."""
    text_to_image_ema_warmup: bool = True
    """Warm the average up as diffusers' ``EMAModel`` does (the first update copies the weights,
    the k-th uses ``min(text_to_image_ema, k / (9 + k))``), so a model trained from scratch does
    not keep its random start (after 1000 steps at a constant 0.999 the average still holds 37 %
    of it and draws nothing: measured on a GPU, see the ShapesWorld results page). The decay then
    reaches 0.999 only after 8991 steps: the default 3500 steps end at 0.9974, an averaging window
    of about 390 steps. ``False`` averages at the constant decay from the first step, as the runs
    up to the seventh did (the numbers of ``text_to_image_ema`` were measured so); a run folder
    from before this field resumes its text-to-image stage with the warm-up unless its config
    sets it to ``False``."""
    clip_steps: int = 1500
    """CLIP training steps (batch 128; ~0.3 s each on two CPU cores)."""
    captions: int = 400
    """Captions edited and rendered as pairs."""
    samples_per_pair: int = 8
    """Candidate pairs per caption edit."""
    keep_per_pair: int = 4
    """Kept pairs per caption edit (the paper's 4; in ShapesWorld every seed draws a new layout,
    so each kept pair is a different scene). Keeping every candidate that passes the filter
    (``keep_per_pair=samples_per_pair``) kept 40 % more of the fifth run's candidates at the
    same share of correct ones (9295 pairs, 71.2 % correct, against 6754 and 70.1 %)."""
    generation_steps: int = 20
    """Sampler steps when rendering pairs."""
    pair_control: Literal["self_attention", "cross_attention"] = "cross_attention"
    """Prompt-to-Prompt control of the candidates (``GenerationConfig.control``):
    google/prompt-to-prompt's cross-attention edit, which keeps 3–4× more of this world's
    candidates correct than the official generator's self-attention injection
    (``"self_attention"``, the paper's; ``examples/shapes/pair_controls.py``; the results page)."""
    pair_control_range: tuple[float, float] = (0.8, 0.8)
    """p ~ U(range): the control's strength per candidate (google's cross-attention default
    p = 0.8; the paper's is U(0.1, 0.9): ``(0.1, 0.9)``)."""
    pair_local_blend: float | None = None
    """With the cross-attention control: the threshold of a local blend around the edited words
    (``GenerationConfig.local_blend``; google's 0.3), which holds every shape the edit does not
    name in place; ``None``: none (this world's small model's attention maps are too flat for
    it to help)."""
    pair_guidance_range: tuple[float, float] = (7.5, 7.5)
    """Text guidance s ~ U(range) of the candidates: a fixed 7.5, the fifth run's (the
    paper's U(7.5, 15): ``(7.5, 15.0)``). A lower one draws this world's captions more often
    (at 3: 92.6 % of samples with the right colours against 73.4 %) and made 52 % of the
    sixth run's candidates correct against 36.5 %, but its editor, trained on 17 % fewer
    correct pairs, did worse (success 30.5 % against 35 %); the tenth run, whose pairs the
    shipped (sixteenth) run's editor trained on, used 3 with two candidates per caption (the
    results page)."""
    pair_extra_guidance: tuple[float, ...] = ()
    """Further fixed text guidance scales for the candidates: every caption edit's
    ``samples_per_pair`` candidates (the same seeds and control strengths) are rendered again
    at each scale, into ``pairs/candidates-g{scale}``, and the filter pools the sets (up to
    ``keep_per_pair`` per caption edit from each set). ``()``: one set. The fifth run's
    candidates rendered again at 3, all of each set's passing ones kept, gave 22 057 training
    pairs, 76.4 % of them correct (the first set alone: 9295, 71.2 %), three and a half times
    the fifth run's correct pairs, and an editor no better than the fifth run's (success 34 % against
    35 %; the results page)."""
    min_image_similarity: float | None = None
    """CLIP filter threshold on cos(I₀, I₁); ``None``: calibrated (see ``calibration_quantile``).
    The paper's 0.75 belongs to ViT-L/14's similarity scale, not to a small CLIP's."""
    min_direction_similarity: float | None = 0.7
    """CLIP filter threshold on the directional similarity (paper: 0.2); ``None``: calibrated.
    Ground-truth pairs score ≥ 0.78 here (99 %), generated candidates 0.65 at the median:
    calibrating this one (0.86) would keep only 6 % of the candidates."""
    min_text_similarity: float | None = 0.7
    """CLIP filter threshold on the image–caption similarities (paper: 0.2); ``None``:
    calibrated."""
    min_structure_similarity: float | None = 0.8
    """Beyond the paper: the filter also keeps only pairs whose edges stay in place
    (:func:`~instructedit.clip.structure_similarity` ≥ this), since this world's small CLIP
    does not see a layout that moved; ``None``: the paper's CLIP-only filter. On the fourth
    run's candidates, 0.8 raised the share of training pairs that are the edit they claim from
    59 % to 72 % and kept as many correct ones; on the fifth run's, the editor trained on the
    checked pairs succeeds on 35 % of the held-out edits, on the CLIP-only ones 27 % (the
    results page)."""
    calibration_quantile: float = 0.1
    """A ``None`` threshold is set to this quantile of the scores of the renderer's ground-truth
    pairs: the filter keeps candidates that this CLIP scores like true edits."""
    editor_steps: int = 4000
    """Editor training steps (batch ``editor_batch_size``; ~0.51 s each on two CPU cores with the
    text encoder trained and cached latents, measured 2026-11-29). The first run trained 5000."""
    ablation_steps: int = 1000
    """Training steps of each ablation's editor (the full editor is also exported at this step,
    so each ablation is compared with it at the same step). The first run's were 1500."""
    fewer_pairs_fraction: float = 0.1
    """Share of the captions whose filtered pairs train the "fewer pairs" ablation (the paper's
    10 %)."""
    ablations: tuple[str, ...] = DEFAULT_ABLATIONS
    """Which editors the ``ablations`` stage trains, names of :data:`ABLATIONS`. The default is
    three: the paper's two (``no_clip_filter``, ``fewer_pairs``) and the one the
    paper could not run (``ground_truth``), which keeps the CPU run under three hours;
    ``ground_truth_large`` and ``zero_init`` cost 10 to 12 minutes each there (:meth:`gpu` and
    :meth:`smoke` run all five)."""
    ground_truth_large_pairs: int = 20000
    """Renderer ground-truth pairs of the "ground_truth_large" ablation (how far more data goes,
    which no text-to-image model here could generate in time)."""
    editor_batch_size: int = 32
    """Editor batch size."""
    editor_learning_rate: float = 3e-4
    """Editor learning rate (AdamW, constant)."""
    editor_init: Literal["zeros", "copy"] = "copy"
    """How the editor's input-image channels start (:func:`~instructedit.training.to_edit_unet`):
    ``"zeros"`` is the paper's; ``"copy"`` (the noisy-latent weights × the VAE scaling factor)
    makes this small editor use its input image (zero-initialised, it learnt to ignore it)."""
    editor_prediction_type: Literal["epsilon", "v_prediction", "sample"] = "epsilon"
    """What the editor learns to predict (:attr:`TrainConfig.prediction_type
    <instructedit.training.TrainConfig.prediction_type>`; the text-to-image model predicts the
    noise): the paper's ``"epsilon"``. On the fifth run's pairs a ``"v_prediction"`` editor,
    which weighs the clean latent's error at high noise 200× more, trailed the ε one: at step
    2000 it realised 65 % of the edits at an unchanged error of 0.158 (success 22 %), the ε one
    at step 2500 71.5 % at 0.150 (30 %)."""
    editor_train_text_encoder: bool = True
    """Train the text encoder with the editor (:attr:`TrainConfig.train_text_encoder
    <instructedit.training.TrainConfig.train_text_encoder>`); the paper keeps Stable Diffusion's
    frozen. This world's encoder has read only captions in the text-to-image stage: the
    instructions' own words ("make", "remove", "the", …) reach a frozen one through token
    embeddings no training has moved. On the tenth run's pairs, trained with the editor, it
    succeeded in 34 % of the held-out edits against 31.5 % frozen (34 % against 30 % on a second
    set), the rest intact as often, recolour successes 62 % against 56 %. Every run before the
    sixteenth kept it frozen, and their ``config.json`` do not name this setting: to continue
    such a run's editor (say with more ``editor_steps``), pass ``False``, or its checkpoints are
    refused."""
    editor_cache_latents: bool = True
    """Train the editors from latents and text embeddings encoded once
    (:attr:`TrainConfig.cache_latents <instructedit.training.TrainConfig.cache_latents>`; with
    ``editor_train_text_encoder``, latents and tokens): the same losses, faster steps (1.3× on two
    CPU cores with the text encoder frozen, 1.1× trained; on a GPU, where the data pipeline
    bounded this tiny editor's step, far more)."""
    editor_sampler: str | None = None
    """The scheduler the editors are exported with (:attr:`TrainConfig.sampler
    <instructedit.training.TrainConfig.sampler>`, a name of
    :data:`~instructedit.sampling.SCHEDULERS`), and so the one the evaluation and the sweep
    sample with, and the embedded default when
    :func:`~instructedit.default.export_default_model` ships the run; ``None``: Euler ancestral,
    the paper's (plain Euler for ``editor_prediction_type="sample"``)."""
    pair_workers: int | None = None
    """Processes that render the pairs stage's candidates, each a share of the captions
    (:attr:`GenerationConfig.shard <instructedit.datagen.GenerationConfig.shard>`), torch's
    threads divided between them. Each caption's candidates come from its own seed whatever the
    count: byte for byte the candidates of one process with as many threads as each worker has
    (the recipe's test compares them); with other thread counts torch's floating-point sums, and so
    a candidate's pixels, may differ in their last bits. ``None``: one per torch thread on a CPU (at most 4); one on a GPU and in a
    process started by torchrun or ``accelerate launch`` (whose processes share the captions
    already). The workers are spawned, so a script that calls :func:`reproduce` needs the ``if
    __name__ == "__main__":`` guard. A caption's batch (two to eight candidates of a
    4M-parameter UNet on an 8² latent) leaves threads idle: on two CPU cores, two processes of one
    thread ran the stage 1.12× as fast as one of two at the default eight candidates a caption,
    1.26× at two (on 16 and 32 captions, loading and selection included; the nineteenth run's
    11 000 candidates took 0.77 s a caption, the tenth's 1.41 s in one process:
    ``benchmarks/pair_workers.py``)."""
    loader_workers: int = 0
    """Worker processes that prepare training data: the text-to-image stage's scenes (rendered and
    tokenized ahead of the step; the same batches for any count, see
    :func:`~instructedit.worlds._models.train_text_to_image`) and the editor's DataLoader
    without ``editor_cache_latents``. On a GPU the renderer bounds a text-to-image step; on a
    CPU of few cores the workers compete with torch's threads, so 0 is the default."""
    eval_scenes: int = 200
    """Held-out rendered scenes per evaluation."""
    eval_steps: int = 20
    """Sampler steps of the evaluation edits."""
    text_scale: float = 7.5
    """s_T of the sweep and of the SDEdit baseline (the paper's)."""
    tolerance: float = 0.08
    """Largest unchanged-region error of an edit the oracle counts as a success."""
    guidance_text_scales: tuple[float, ...] = (3.0, 5.0, 7.5)
    """s_T values the ``guidance`` stage tries, each with every ``guidance_image_scales`` value."""
    guidance_image_scales: tuple[float, ...] = (1.5, 2.0, 2.5, 3.0)
    """s_I values the ``guidance`` stage tries. The grid holds the paper's (7.5, 1.5) by
    default; the stage keeps the setting of highest oracle success."""
    guidance_scenes: int = 100
    """Validation edits of the ``guidance`` stage: rendered scenes drawn with seed
    ``seed + guidance_seed_offset``, so the test edits (drawn with ``seed``) never choose the
    guidance they are judged at. 100 keeps the stage near 5 minutes on two CPU cores (12
    settings; the shipped editor's run used 200, 570 s)."""
    guidance_seed_offset: int = 7
    """Offset of the validation edits' seed from ``seed`` (not 0)."""
    sweep_scenes: int = 48
    """Held-out scenes of the guidance sweep."""
    sweep_image_scales: tuple[float, ...] = PAPER_IMAGE_SCALES
    """s_I values of the sweep (the paper's)."""
    sdedit_strengths: tuple[float, ...] = (0.4, 0.6, 0.8)
    """Noise strengths of the SDEdit baseline (each reported; the best is the baseline)."""

    def __post_init__(self) -> None:
        counts = (
            "size",
            "autoencoder_steps",
            "text_to_image_steps",
            "clip_steps",
            "captions",
            "samples_per_pair",
            "keep_per_pair",
            "generation_steps",
            "editor_steps",
            "ablation_steps",
            "ground_truth_large_pairs",
            "editor_batch_size",
            "eval_scenes",
            "eval_steps",
            "sweep_scenes",
            "guidance_scenes",
        )
        check_counts(self, counts)
        for name in ("guidance_text_scales", "guidance_image_scales"):
            _check_scales(name, getattr(self, name))
        offset = self.guidance_seed_offset
        if not isinstance(offset, int) or isinstance(offset, bool) or offset == 0:
            raise ValueError(
                "guidance_seed_offset must be a non-zero integer (0 would choose the guidance on "
                f"the test edits), got {self.guidance_seed_offset!r}"
            )
        if self.size % 8:
            # The editor's Trainer crops at multiples of 8: refuse now, not hours later.
            raise ValueError(f"size must be a multiple of 8, got {self.size}")
        value = self.latent_downsampling
        if isinstance(value, bool) or not isinstance(value, int) or value not in AUTOENCODER_BLOCKS:
            offered = " or ".join(map(str, AUTOENCODER_BLOCKS))
            raise ValueError(f"latent_downsampling must be {offered}, got {value!r}")
        if self.pair_control not in PAIR_CONTROLS:
            raise ValueError(
                "pair_control must be 'self_attention' or 'cross_attention', "
                f"got {self.pair_control!r}"
            )
        check_range("pair_control_range", self.pair_control_range, maximum=1.0)
        check_local_blend(self.pair_local_blend, self.pair_control, prefix="pair_")
        check_range("pair_guidance_range", self.pair_guidance_range)
        for scale in self.pair_extra_guidance:
            if not (math.isfinite(scale) and scale > 0):
                raise ValueError(
                    f"pair_extra_guidance must hold finite scales > 0, got {self.pair_extra_guidance!r}"
                )
        if len(set(self.pair_extra_guidance)) != len(self.pair_extra_guidance):
            raise ValueError(
                f"pair_extra_guidance must not repeat a scale, got {self.pair_extra_guidance!r}"
            )
        check_structure_threshold(self.min_structure_similarity)
        check_text_to_image_training(
            self.text_to_image_schedule,
            self.text_to_image_ema,
            prefix="text_to_image_",
            ema_name="text_to_image_ema",
        )
        if not isinstance(self.text_to_image_ema_warmup, bool):
            raise ValueError(
                "text_to_image_ema_warmup must be True or False, got "
                f"{self.text_to_image_ema_warmup!r}"
            )
        if self.editor_prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"editor_prediction_type must be one of {PREDICTION_TYPES}, got "
                f"{self.editor_prediction_type!r}"
            )
        check_sampler(self.editor_sampler, self.editor_prediction_type, argument="editor_sampler")
        if self.editor_init not in ("zeros", "copy"):
            raise ValueError(f"editor_init must be 'zeros' or 'copy', got {self.editor_init!r}")
        if not (math.isfinite(self.editor_learning_rate) and self.editor_learning_rate > 0):
            raise ValueError(
                f"editor_learning_rate must be a finite number > 0, got {self.editor_learning_rate!r}"
            )
        check_counts(self, ("decoder_steps", "loader_workers"), minimum=0)
        workers = self.pair_workers
        if workers is not None and (
            not isinstance(workers, int) or isinstance(workers, bool) or workers < 1
        ):
            raise ValueError(
                f"pair_workers must be None (automatic) or an int >= 1, got {workers!r}"
            )
        if not (
            isinstance(self.decoder_shape_weight, (int, float))
            and not isinstance(self.decoder_shape_weight, bool)
            and math.isfinite(self.decoder_shape_weight)
            and self.decoder_shape_weight >= 0
        ):
            raise ValueError(
                "decoder_shape_weight must be a finite number >= 0, got "
                f"{self.decoder_shape_weight!r}"
            )
        if (
            not isinstance(self.ablations, (tuple, list))
            or not self.ablations
            or any(name not in ABLATIONS for name in self.ablations)
            or len(set(self.ablations)) != len(self.ablations)
        ):
            raise ValueError(
                f"ablations must hold one or more distinct names of {list(ABLATIONS)}, got "
                f"{self.ablations!r} (to run no ablation, stop the recipe with until='evaluate')"
            )
        object.__setattr__(self, "ablations", tuple(self.ablations))
        if not 0 < self.fewer_pairs_fraction <= 1:
            raise ValueError(
                f"fewer_pairs_fraction must be in (0, 1], got {self.fewer_pairs_fraction!r}"
            )

    @property
    def validation_seed(self) -> int:
        """Seed of the validation edits the ``guidance`` stage chooses on: ``seed +
        guidance_seed_offset``, never the test edits' ``seed``."""
        return self.seed + self.guidance_seed_offset

    @classmethod
    def gpu(cls, output_dir: str = "outputs/shapes") -> RecipeConfig:
        """The sizes that trained the second run's editors on one H100: editors at batch 128, the
        full one 4000 steps and the ablations 2250 (they trained before ``editor_cache_latents``,
        when a step took ~0.1 s of CPU-side data work and one loader worker helped)."""
        return cls(
            output_dir=output_dir,
            editor_batch_size=128,
            editor_steps=4000,
            ablation_steps=2250,
            ablations=ABLATIONS,
        )

    @classmethod
    def smoke(cls, output_dir: str = "outputs/shapes-smoke") -> RecipeConfig:
        """A run of every stage in about two minutes (CI): the numbers are meaningless."""
        return cls(
            output_dir=output_dir,
            autoencoder_steps=10,
            decoder_steps=5,
            text_to_image_steps=10,
            clip_steps=10,
            captions=4,
            samples_per_pair=2,
            keep_per_pair=1,
            min_image_similarity=0.0,
            min_direction_similarity=-1.0,
            min_text_similarity=-1.0,
            min_structure_similarity=0.0,
            generation_steps=3,
            pair_workers=1,
            editor_steps=5,
            editor_batch_size=4,
            eval_scenes=8,
            eval_steps=3,
            ablation_steps=3,
            ablations=ABLATIONS,
            ground_truth_large_pairs=16,
            sweep_scenes=4,
            sweep_image_scales=(1.0, 2.0),
            sdedit_strengths=(0.6,),
            guidance_text_scales=(7.5,),
            guidance_image_scales=(1.5, 2.5),
            guidance_scenes=4,
        )


def _check_scales(name: str, scales: Any) -> None:
    """Refuses, naming ``name``, anything but a non-empty sequence of distinct finite scales
    >= 0."""
    if (
        not isinstance(scales, (tuple, list))
        or not scales
        or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
            for v in scales
        )
    ):
        raise ValueError(f"{name} must hold one or more finite numbers, got {scales!r}")
    if len(set(scales)) != len(scales):
        raise ValueError(f"{name} must not repeat a scale, got {scales!r}")
    for value in scales:
        check_scale(name, value)


def _device(config: RecipeConfig) -> str:
    return config.device or ("cuda" if torch.cuda.is_available() else "cpu")


def _autoencoder_sub_stage(
    folder: Path, train: Callable[[], tuple[Any, list[float]]]
) -> tuple[Any, list[float]]:
    """The autoencoder saved in ``folder`` and its losses if that sub-stage finished (its
    ``losses.json`` marks it), else ``train()``'s, saved there first."""
    from diffusers import AutoencoderKL

    if (folder / "losses.json").is_file():
        losses = json.loads((folder / "losses.json").read_text(encoding="utf-8"))
        return AutoencoderKL.from_pretrained(folder), losses
    vae, losses = train()
    vae.save_pretrained(folder, safe_serialization=True)
    write_json_atomic(folder / "losses.json", losses)  # marks the sub-stage done
    return vae, losses


def _text_to_image_pipeline(unet: Any, text_encoder: Any, tokenizer: Any, vae: Any) -> Any:
    """The stage's model as a diffusers ``StableDiffusionPipeline`` (Euler ancestral on the
    training schedule, no safety checker), as it is saved to ``text_to_image/model``."""
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline

    from instructedit.testing import SD_SCHEDULER_CONFIG

    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=EulerAncestralDiscreteScheduler(**SD_SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _stage_text_to_image(config: RecipeConfig, folder: Path, progress: bool) -> dict[str, Any]:
    from diffusers import DDPMScheduler

    from instructedit.components import vae_scale_factor
    from instructedit.testing import SD_SCHEDULER_CONFIG, clip_tokenizer
    from instructedit.worlds._models import (
        finetune_decoder,
        shapes_autoencoder,
        shapes_text_encoder,
        shapes_unet,
        train_autoencoder,
        train_text_to_image,
    )

    device = _device(config)

    def autoencoder() -> tuple[Any, list[float]]:
        vae = shapes_autoencoder(config.seed, config.latent_downsampling)
        losses = train_autoencoder(
            vae,
            steps=config.autoencoder_steps,
            size=config.size,
            seed=config.seed,
            progress=progress,
            checkpoint=folder / "checkpoints" / "autoencoder.pt",
            device=device,
        )
        return vae, losses

    vae, ae_losses = _autoencoder_sub_stage(folder / "autoencoder", autoencoder)

    def decoder() -> tuple[Any, list[float]]:
        losses = finetune_decoder(
            vae,
            steps=config.decoder_steps,
            shape_weight=config.decoder_shape_weight,
            size=config.size,
            seed=config.seed,
            progress=progress,
            checkpoint=folder / "checkpoints" / "decoder.pt",
            device=device,
        )
        return vae, losses

    vae, decoder_losses = _autoencoder_sub_stage(folder / "decoder", decoder)
    factor = vae_scale_factor(vae)
    if factor != config.latent_downsampling:  # a run resumed with another latent_downsampling
        raise ValueError(
            f"latent_downsampling is {config.latent_downsampling} but the run's autoencoder in "
            f"{folder} downsamples {factor}x: use a new output_dir or latent_downsampling={factor}"
        )
    unet, text_encoder, tokenizer = (
        shapes_unet(config.seed, sample_size=config.size // config.latent_downsampling),
        shapes_text_encoder(config.seed),
        clip_tokenizer(),
    )
    scheduler = DDPMScheduler(**SD_SCHEDULER_CONFIG, clip_sample=False)
    losses = train_text_to_image(
        unet,
        text_encoder,
        tokenizer,
        vae,
        scheduler,
        steps=config.text_to_image_steps,
        schedule=config.text_to_image_schedule,
        ema_decay=config.text_to_image_ema,
        ema_warmup=config.text_to_image_ema_warmup,
        data_workers=config.loader_workers,
        size=config.size,
        seed=config.seed,
        progress=progress,
        checkpoint=folder / "checkpoints" / "text_to_image.pt",
        device=device,
    )
    pipe = _text_to_image_pipeline(unet, text_encoder, tokenizer, vae)
    pipe.save_pretrained(folder / "model", safe_serialization=True)
    return {
        "autoencoder_loss": _tail(ae_losses),
        "decoder_loss": _tail(decoder_losses),
        "text_to_image_loss": _tail(losses),
    }


def _stage_clip(config: RecipeConfig, folder: Path, progress: bool) -> dict[str, Any]:
    import open_clip

    from instructedit.testing import save_open_clip
    from instructedit.worlds._models import SHAPES_CLIP_CONFIG, shapes_clip, train_clip

    model = shapes_clip(config.seed)
    losses = train_clip(
        model,
        open_clip.get_tokenizer("ViT-B-32"),
        steps=config.clip_steps,
        size=config.size,
        seed=config.seed,
        progress=progress,
        checkpoint=folder / "checkpoints" / "clip.pt",
        device=_device(config),
    )
    save_open_clip(model, SHAPES_CLIP_CONFIG, folder / "model")
    return {"clip_loss": _tail(losses)}


def _scorer(config: RecipeConfig) -> Any:
    from instructedit.clip import ClipScorer

    model = Path(config.output_dir) / "clip" / "model"
    return ClipScorer.from_open_clip(f"local-dir:{model}", device=_device(config))


def candidate_sets(config: RecipeConfig) -> list[tuple[str, tuple[float, float]]]:
    """The pairs stage's candidate sets: (folder name under ``pairs/``, text guidance range), the
    first ``"candidates"`` at ``pair_guidance_range``, then one per ``pair_extra_guidance``."""
    return [("candidates", config.pair_guidance_range)] + [
        (f"candidates-g{scale:g}", (scale, scale)) for scale in config.pair_extra_guidance
    ]


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
    scorer = _scorer(config)
    workers = pair_worker_count(config)
    p2p = PromptToPrompt.from_pretrained(root / "text_to_image" / "model").to(_device(config))
    samples = 0
    caption_rejections: dict[str, int] = defaultdict(int)
    for name, guidance in candidate_sets(config):
        if workers > 1:
            _render_in_workers(config, root, folder / name, guidance, workers, progress)
        # With workers, every caption is finished: this pass counts them and indexes the folder.
        summary = _candidates(
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


_LAUNCHER_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
"""Environment of a process started by torchrun or ``accelerate launch``."""


def pair_worker_count(config: RecipeConfig) -> int:
    """Processes of the pairs stage: ``config.pair_workers``, or by default one per torch thread
    on a CPU (at most 4) and one on a GPU or in a process started by torchrun or ``accelerate
    launch`` (whose processes already share the captions)."""
    if config.pair_workers is not None:
        return config.pair_workers
    if _device(config) != "cpu" or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return 1
    return max(1, min(4, torch.get_num_threads()))


def _candidates(
    config: RecipeConfig,
    p2p: Any,
    scorer: Any,
    target: Path,
    guidance: tuple[float, float],
    shard: tuple[int, int],
    progress: bool,
) -> Any:
    """Renders one share of a candidate set (all of it for ``shard=(0, 1)``; captions already
    finished are only counted); returns the :class:`~instructedit.datagen.GenerationSummary`."""
    from instructedit.clip import ClipDirectionalFilter
    from instructedit.datagen import generate_dataset
    from instructedit.worlds.shapes import ShapesCaptionEditor

    return generate_dataset(
        pair_captions(config),
        target,
        caption_editor=ShapesCaptionEditor(seed=config.seed),
        p2p=p2p,
        # Score every candidate, keep all: thresholds are applied later, on the stored scores.
        clip_filter=ClipDirectionalFilter(scorer, -1.0, -1.0, -1.0),
        config=pair_generation_config(config, guidance, shard=shard),
        progress=progress,
    )


def _render_in_workers(
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
    _candidates(config, p2p, _scorer(config), target, guidance, shard, progress=False)


def pair_captions(config: RecipeConfig) -> list[str]:
    """The pairs stage's ``config.captions`` captions (random scenes, seeded by ``config.seed``)."""
    from instructedit.worlds.shapes import caption, random_scene

    rng = random.Random(f"captions:{config.seed}")
    return [caption(random_scene(rng)) for _ in range(config.captions)]


def pair_generation_config(
    config: RecipeConfig, guidance: tuple[float, float], shard: tuple[int, int] = (0, 1)
) -> GenerationConfig:
    """The :class:`~instructedit.datagen.GenerationConfig` of one of the pairs stage's candidate
    sets (``guidance``: its text guidance range); ``shard`` splits the captions between
    processes (see :func:`~instructedit.datagen.generate_dataset`), for a stage run by several."""
    from instructedit.datagen import GenerationConfig

    return GenerationConfig(
        samples_per_pair=config.samples_per_pair,
        keep_per_pair=config.samples_per_pair,
        batch_size=min(8, config.samples_per_pair),
        num_inference_steps=config.generation_steps,
        control=config.pair_control,
        injection_range=config.pair_control_range,
        local_blend=config.pair_local_blend,
        guidance_range=guidance,
        seed=config.seed,
        height=config.size,
        width=config.size,
        shard=shard,
    )


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
    records = _ground_truth_records(count, config, stream="calibration")
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


def _ground_truth_records(
    count: int, config: RecipeConfig, stream: str = "ground-truth"
) -> list[Any]:
    """``count`` pairs drawn by the renderer itself (edits of random scenes, exact targets)."""
    from instructedit.worlds.shapes import edit_record, random_edit, random_scene

    rng = random.Random(f"{stream}:{config.seed}")
    records: list[Any] = []
    while len(records) < count:
        edit = random_edit(random_scene(rng), rng)
        if edit is not None:
            records.append(edit_record(edit, config.size))
    return records


def editor_trainer(
    config: RecipeConfig, root: Path, records: list[Any], folder: Path, steps: int
) -> Any:
    """The :class:`~instructedit.training.Trainer` of an editor: the text-to-image UNet of the
    run in ``root`` widened by :func:`~instructedit.training.to_edit_unet`, trained ``steps`` on
    ``records`` with checkpoints in ``folder / "run"`` (a rerun resumes)."""
    from diffusers import DDPMScheduler

    from instructedit.components import load_components
    from instructedit.training import RecordSource, TrainConfig, Trainer, to_edit_unet

    parts = load_components(root / "text_to_image" / "model")
    unet = to_edit_unet(
        parts["unet"],
        init=config.editor_init,
        image_scale=float(parts["vae"].config.scaling_factor),
    )
    return Trainer(
        TrainConfig(
            output_dir=str(folder / "run"),
            resolution=config.size,
            batch_size=config.editor_batch_size,
            max_steps=steps,
            learning_rate=config.editor_learning_rate,
            ema_decay=0.999,
            seed=config.seed,
            checkpoint_every=max(1, min(500, steps)),
            log_with="none",
            random_flip=True,
            num_workers=config.loader_workers,
            cache_latents=config.editor_cache_latents,
            train_text_encoder=config.editor_train_text_encoder,
            prediction_type=config.editor_prediction_type,
            sampler=config.editor_sampler,
        ),
        unet=unet,
        vae=parts["vae"],
        text_encoder=parts["text_encoder"],
        tokenizer=parts["tokenizer"],
        noise_scheduler=DDPMScheduler.from_config(parts["scheduler"].config, clip_sample=False),
        train_dataset=RecordSource(records),
    )


def _train_editor(
    config: RecipeConfig,
    root: Path,
    records: list[Any],
    folder: Path,
    steps: int,
    snapshots: tuple[int, ...] = (),
    progress: bool = True,
) -> dict[str, Any]:
    """Trains an editor (resumable) and exports it to ``folder / "model"``, plus
    ``folder / f"model-{step}"`` for each snapshot step."""
    trainer = editor_trainer(config, root, records, folder, steps)
    losses: list[float] = []
    for step in snapshots:
        target = folder / f"model-{step}"
        if 0 < step < steps and not (target / "model_index.json").is_file():
            losses += trainer.train(until=step, progress=progress)
            trainer.export(target)
    losses += trainer.train(progress=progress)
    trainer.export(folder / "model")
    return {"loss": _tail(losses), "examples": len(records), "steps": steps}


def _stage_editor(config: RecipeConfig, folder: Path, progress: bool) -> dict[str, Any]:
    root = folder.parent
    return _train_editor(
        config,
        root,
        load_selection(root, "filtered"),
        folder,
        config.editor_steps,
        snapshots=(config.ablation_steps,),
        progress=progress,
    )


def _load_editor(
    config: RecipeConfig, model: Path, guidance: Any = None, scheduler: str | None = None
) -> Any:
    from instructedit.pipeline import EditPipeline

    return EditPipeline.from_pretrained(model, guidance=guidance, scheduler=scheduler).to(
        _device(config)
    )


def _edit_held_out(
    config: RecipeConfig,
    pipe: Any,
    edits: list[Any],
    text_scale: float | None = None,
    image_scale: float | None = None,
) -> list[Image.Image]:
    """``pipe``'s edits of ``edits`` (at its default guidance unless scales are given)."""
    from instructedit.worlds.evaluation import pipeline_edits

    return pipeline_edits(
        pipe,
        edits,
        size=config.size,
        num_inference_steps=config.eval_steps,
        guidance_scale=text_scale,
        image_guidance_scale=image_scale,
        seed=config.seed,
        progress=False,
    )


def guidance_grid(
    model: str | Path,
    config: RecipeConfig,
    *,
    text_scales: Sequence[float] | None = None,
    image_scales: Sequence[float] | None = None,
    scheduler: str | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """The ``guidance`` stage's measurements: the editor in ``model`` edits
    ``config.guidance_scenes`` *validation* edits (rendered scenes drawn with seed
    ``config.seed + config.guidance_seed_offset``; the sampling noise from ``config.seed``, as
    every evaluation's) at every (s_T, s_I) of ``text_scales`` × ``image_scales`` (default: the
    config's grid) in ``config.eval_steps`` steps of the model's scheduler (or ``scheduler``, a
    name of :data:`~instructedit.sampling.SCHEDULERS`), and the oracle judges them.

    Returns one row per setting, in grid order: ``{"text_scale", "image_scale", "oracle"}`` with
    the :func:`~instructedit.worlds.evaluation.oracle_summary`. :func:`best_setting` picks the
    stage's choice among them; :func:`grid_edges` says whether it lies on the grid's edge.
    """
    from tqdm.auto import tqdm

    from instructedit.guidance import DualGuidance
    from instructedit.worlds.evaluation import held_out_edits, oracle_summary

    if text_scales is not None:
        _check_scales("text_scales", text_scales)
    if image_scales is not None:
        _check_scales("image_scales", image_scales)
    texts = tuple(config.guidance_text_scales if text_scales is None else text_scales)
    images = tuple(config.guidance_image_scales if image_scales is None else image_scales)
    edits = held_out_edits(config.guidance_scenes, seed=config.validation_seed)
    editor = _load_editor(config, Path(model), DualGuidance(), scheduler)
    rows: list[dict[str, Any]] = []
    for text_scale, image_scale in tqdm(
        [(t, i) for t in texts for i in images], disable=not progress, desc="guidance"
    ):
        outputs = _edit_held_out(config, editor, edits, text_scale, image_scale)
        oracle = oracle_summary(edits, outputs, size=config.size, tolerance=config.tolerance)
        rows.append({"text_scale": text_scale, "image_scale": image_scale, "oracle": oracle})
    return rows


def _stage_guidance(config: RecipeConfig, folder: Path, progress: bool) -> dict[str, Any]:
    """The editor's (s_T, s_I): every pair of the grid edits the validation scenes, the oracle
    judges them, and the highest success wins (ties: the lower unchanged-region error, then the
    earlier setting). Writes ``guidance_config.json``."""
    from instructedit.guidance import DualGuidance, save_guidance_config

    seed = config.validation_seed
    rows = guidance_grid(folder.parent / "editor" / "model", config, progress=progress)
    best = best_setting(rows)
    chosen = DualGuidance(
        text_scale=rows[best]["text_scale"], image_scale=rows[best]["image_scale"]
    )
    note = (
        "chosen by the ShapesWorld recipe's guidance stage: the highest oracle success on "
        f"{config.guidance_scenes} validation edits (seed {seed}) over "
        f"s_T {list(config.guidance_text_scales)} x s_I {list(config.guidance_image_scales)}"
    )
    edges = grid_edges(
        chosen.text_scale,
        chosen.image_scale,
        config.guidance_text_scales,
        config.guidance_image_scales,
    )
    if edges:
        logger.warning(
            "the guidance chosen lies on the grid's edge (%s): a wider grid may do better",
            "; ".join(edges),
        )
    save_guidance_config(chosen, folder, note=note)
    # The editor's folder carries it too, so that loading it (or shipping it) edits at it.
    save_guidance_config(chosen, folder.parent / "editor" / "model", note=note)
    logger.info("guidance chosen: s_T %g, s_I %g", chosen.text_scale, chosen.image_scale)
    return {
        "text_scale": chosen.text_scale,
        "image_scale": chosen.image_scale,
        "scenes": config.guidance_scenes,
        "seed": seed,
        "edges": edges,
        "grid": rows,
    }


def grid_edges(
    text_scale: float,
    image_scale: float,
    text_scales: Sequence[float],
    image_scales: Sequence[float],
) -> list[str]:
    """Which of the chosen scales sit at an end of the values tried, e.g. ``["s_I = 3 is the
    largest tried"]``: a best setting on the grid's edge says the best may lie beyond it. A scale
    tried at one value alone is not an edge."""
    edges = []
    for name, value, tried in (
        ("s_T", text_scale, text_scales),
        ("s_I", image_scale, image_scales),
    ):
        if len(set(tried)) < 2:
            continue
        if value == max(tried):
            edges.append(f"{name} = {value:g} is the largest tried")
        elif value == min(tried):
            edges.append(f"{name} = {value:g} is the smallest tried")
    return edges


def best_setting(rows: Sequence[dict[str, Any]]) -> int:
    """The index of the guidance stage's choice among its ``rows`` (each with an ``oracle``
    summary): the highest success of all edits; ties go to the lower unchanged-region error,
    then to the earlier row."""
    if not rows:
        raise ValueError("rows must hold at least one setting")
    return min(
        range(len(rows)),
        key=lambda k: (
            -rows[k]["oracle"]["all"]["success"],
            rows[k]["oracle"]["all"]["unchanged_error"],
            k,
        ),
    )


def chosen_guidance(run: str | Path) -> Any:
    """The :class:`~instructedit.guidance.DualGuidance` a run's ``guidance`` stage chose, or
    ``None`` before that stage."""
    from instructedit.guidance import load_guidance_config

    return load_guidance_config(Path(run) / "guidance")


def evaluate_editor(model: Path, config: RecipeConfig, guidance: Any = None) -> dict[str, Any]:
    """Edits ``config.eval_scenes`` held-out rendered scenes with the editor in ``model`` at
    ``guidance`` (a :class:`~instructedit.guidance.DualGuidance`; ``None``: the folder's stored
    guidance); returns the oracle's verdicts per family (see
    :func:`~instructedit.worlds.evaluation.oracle_summary`) and the CLIP similarities."""
    from instructedit.worlds.evaluation import held_out_edits, score_edits

    edits = held_out_edits(config.eval_scenes, seed=config.seed)
    outputs = _edit_held_out(config, _load_editor(config, Path(model), guidance), edits)
    return score_edits(
        _scorer(config), edits, outputs, size=config.size, tolerance=config.tolerance
    )


PAPER_GUIDANCE_ROW = "editor at the paper's guidance (7.5, 1.5)"
"""The ``evaluate`` stage's name of the editor at the paper's guidance, when the ``guidance``
stage chose another."""


def _stage_evaluate(config: RecipeConfig, folder: Path, progress: bool) -> dict[str, Any]:
    """The editor (at the chosen guidance, and at the paper's) and both baselines on held-out
    rendered scenes, the sweep, the figure."""
    from instructedit.evaluation import guidance_sweep, plot_sweep, write_csv
    from instructedit.guidance import DualGuidance
    from instructedit.worlds.evaluation import (
        edit_grid,
        family_rows,
        held_out_edits,
        identity_edits,
        round_trip_edits,
        score_edits,
        sdedit_edits,
    )
    from instructedit.worlds.shapes import edit_record

    root = folder.parent
    scorer = _scorer(config)
    edits = held_out_edits(config.eval_scenes, seed=config.seed)
    chosen = chosen_guidance(root) or DualGuidance()
    editor = _load_editor(config, root / "editor" / "model", chosen)
    outputs = {"editor": _edit_held_out(config, editor, edits)}
    paper = DualGuidance()
    if (chosen.text_scale, chosen.image_scale) != (paper.text_scale, paper.image_scale):
        outputs[PAPER_GUIDANCE_ROW] = _edit_held_out(
            config, editor, edits, paper.text_scale, paper.image_scale
        )
    outputs["identity"] = identity_edits(edits, size=config.size)
    # Not a method: the floor every latent editor shares (its decoder on the true result).
    outputs["ground truth, autoencoded"] = round_trip_edits(editor.vae, edits, size=config.size)
    from diffusers import StableDiffusionImg2ImgPipeline

    text_to_image = StableDiffusionImg2ImgPipeline.from_pretrained(
        root / "text_to_image" / "model", safety_checker=None, requires_safety_checker=False
    ).to(_device(config))
    text_to_image.set_progress_bar_config(disable=True)
    for strength in config.sdedit_strengths:
        outputs[f"sdedit-{strength:g}"] = sdedit_edits(
            text_to_image,
            edits,
            strength=strength,
            size=config.size,
            num_inference_steps=config.eval_steps,
            guidance_scale=config.text_scale,
            seed=config.seed,
            progress=progress,
        )
    methods = {
        name: score_edits(scorer, edits, images, size=config.size, tolerance=config.tolerance)
        for name, images in outputs.items()
    }

    examples = [edit_record(edit, config.size) for edit in edits[: config.sweep_scenes]]
    points = guidance_sweep(
        editor,
        scorer,
        examples,
        text_scale=config.text_scale,
        image_scales=config.sweep_image_scales,
        num_inference_steps=config.eval_steps,
        seed=config.seed,
        progress=progress,
    )
    write_csv(points, folder / "sweep.csv")
    plot_sweep(points, folder / "sweep.png", label="ShapesWorld editor")

    best_sdedit = max(
        (name for name in methods if name.startswith("sdedit")),
        key=lambda name: methods[name]["oracle"]["all"]["success"],
    )
    rows = family_rows(edits)
    edit_grid(
        [edits[i] for i in rows],
        {
            "editor": [outputs["editor"][i] for i in rows],
            best_sdedit: [outputs[best_sdedit][i] for i in rows],
        },
        size=config.size,
    ).save(folder / "grid.png")
    return {
        "methods": methods,
        "sweep": [asdict(point) for point in points],
        "best_sdedit": best_sdedit,
        "guidance": {"text_scale": chosen.text_scale, "image_scale": chosen.image_scale},
    }


def _stage_ablations(config: RecipeConfig, folder: Path, progress: bool) -> dict[str, Any]:
    """Editors trained ``ablation_steps`` on other training sets, against the full recipe's
    editor at the same step, all at the paper's guidance."""
    from instructedit.guidance import DualGuidance

    root = folder.parent
    full = (
        root
        / "editor"
        / (
            f"model-{config.ablation_steps}"
            if config.ablation_steps < config.editor_steps
            else "model"
        )
    )
    if not (full / "model_index.json").is_file():
        snapshots = sorted(p.name for p in (root / "editor").glob("model-*"))
        raise FileNotFoundError(
            f"the ablations compare with the full editor at step {config.ablation_steps}, but "
            f"{full} does not exist (the editor's snapshots: {snapshots or 'none'}); pass the "
            "ablation_steps the run's editor stage was made with (1500 before 2026-11-29)"
        )
    filtered_pairs = len(selection_folders(root, "filtered"))  # counted, not decoded
    # name → (training set, config): the paper's two ablations, two this world allows, and the
    # paper's zero-initialised image channels against this recipe's copied ones (see ABLATIONS).
    recipes: dict[str, tuple[Callable[[], list[Any]], RecipeConfig]] = {
        "no_clip_filter": (lambda: load_selection(root, "unfiltered"), config),
        "fewer_pairs": (lambda: load_selection(root, "fewer"), config),
        "ground_truth": (lambda: _ground_truth_records(filtered_pairs, config), config),
        "ground_truth_large": (
            lambda: _ground_truth_records(
                config.ground_truth_large_pairs, config, stream="ground-truth-large"
            ),
            config,
        ),
        "zero_init": (
            lambda: load_selection(root, "filtered"),
            replace(config, editor_init="zeros"),
        ),
    }
    results: dict[str, Any] = {}
    marker = folder / "full" / "DONE.json"
    if not marker.is_file():
        start = time.perf_counter()
        record = {"examples": filtered_pairs, **evaluate_editor(full, config, DualGuidance())}
        record["seconds"] = round(time.perf_counter() - start, 1)
        write_json_atomic(marker, record)
    results["full"] = json.loads(marker.read_text(encoding="utf-8"))
    for name in config.ablations:
        records, variant = recipes[name]
        marker = folder / name / "DONE.json"
        if not marker.is_file():
            start = time.perf_counter()
            record = _train_editor(
                variant, root, records(), folder / name, config.ablation_steps, progress=progress
            )
            record.update(evaluate_editor(folder / name / "model", config, DualGuidance()))
            record["seconds"] = round(time.perf_counter() - start, 1)
            write_json_atomic(marker, record)
            logger.info("ablation %s done: %s", name, record)
        results[name] = json.loads(marker.read_text(encoding="utf-8"))
        if results[name].get("steps", config.ablation_steps) != config.ablation_steps:
            raise ValueError(
                f"{folder / name} holds an editor trained {results[name]['steps']} steps but "
                f"ablation_steps is {config.ablation_steps}: pass ablation_steps="
                f"{results[name]['steps']}, or delete that folder to train it again"
            )
    return {"steps": config.ablation_steps, "runs": results}


def _percent(value: float) -> str:
    return f"{100 * value:.0f} %"


def _table(header: list[str], rows: list[list[str]]) -> str:
    """An RST list-table."""
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in [header, *rows]:
        lines.append(f"   * - {row[0]}")
        lines.extend(f"     - {cell}" for cell in row[1:])
    return "\n".join(lines) + "\n"


def _method_row(name: str, scores: dict[str, Any]) -> list[str]:
    from instructedit.worlds.shapes import EDIT_FAMILIES

    oracle, clip = scores["oracle"], scores["clip"]
    return [
        name,
        *(_percent(oracle[f]["realised"]) if f in oracle else "–" for f in EDIT_FAMILIES),
        _percent(oracle["all"]["success"]),
        # Records written before the oracle read the kept regions have no "intact".
        _percent(oracle["all"]["intact"]) if "intact" in oracle["all"] else "–",
        f"{oracle['all']['unchanged_error']:.3f}",
        f"{clip['direction_similarity']:.3f}",
        f"{clip['image_similarity']:.3f}",
    ]


_METHOD_HEADER = [
    "model",
    "recolour",
    "background",
    "add",
    "remove",
    "success (all)",
    "rest intact",
    "unchanged MAE",
    "CLIP direction",
    "CLIP image",
]


def _edges_note(guidance: dict[str, Any]) -> str:
    """The report's note of a guidance choice on the grid's edge (recomputed from the grid for a
    record from before the stage kept ``edges``)."""
    grid = guidance["grid"]
    edges = guidance.get("edges")
    if edges is None:
        edges = grid_edges(
            guidance["text_scale"],
            guidance["image_scale"],
            [row["text_scale"] for row in grid],
            [row["image_scale"] for row in grid],
        )
    return f"; on the grid's edge: {'; '.join(edges)}" if edges else ""


def _stage_report(config: RecipeConfig, folder: Path, progress: bool) -> dict[str, Any]:
    """Writes ``report.rst``: every table of the results page, from the stages' records."""
    root = folder.parent
    records = {
        stage: json.loads((root / stage / "DONE.json").read_text(encoding="utf-8"))
        for stage in STAGES[:-1]
    }
    evaluation, ablations, pairs = records["evaluate"], records["ablations"], records["pairs"]
    # An evaluation recorded before the guidance stage existed was made at the paper's guidance.
    from instructedit.guidance import DualGuidance

    paper = DualGuidance()
    evaluated = evaluation.get(
        "guidance", {"text_scale": paper.text_scale, "image_scale": paper.image_scale}
    )
    parts = [
        "Stage times (seconds)\n\n",
        _table(
            ["stage", "seconds"],
            [[stage, f"{record['seconds']:.0f}"] for stage, record in records.items()],
        ),
        "\nPairs\n\n",
        _table(
            ["candidates", "filter verdicts", "filtered", "unfiltered", "fewer"],
            [
                [
                    str(pairs["candidates"]),
                    ", ".join(f"{k}: {v}" for k, v in sorted(pairs["filter"].items())),
                    str(pairs["filtered_pairs"]),
                    str(pairs["unfiltered_pairs"]),
                    str(pairs["fewer_pairs"]),
                ]
            ],
        ),
        "\nPairs read back (share of each set; colours, layout, both)\n\n",
        _table(
            ["set", "family", "pairs", "input shown", "edited shown", "layout kept", "correct"],
            [
                [
                    name,
                    family,
                    str(row["count"]),
                    *(
                        _percent(row[key])
                        for key in ("input_shown", "edited_shown", "layout_kept", "correct")
                    ),
                ]
                for name, families in pairs.get("read_back", {}).items()
                for family, row in families.items()
            ],
        ),
        f"\nGuidance chosen on {records['guidance']['scenes']} validation edits (seed "
        f"{records['guidance']['seed']}): s_T {records['guidance']['text_scale']:g}, "
        f"s_I {records['guidance']['image_scale']:g}; the held-out edits below were made at "
        f"s_T {evaluated['text_scale']:g}, s_I {evaluated['image_scale']:g}"
        + _edges_note(records["guidance"])
        + "\n\n",
        _table(
            ["s_T", "s_I", "success (all)", "rest intact", "unchanged MAE"],
            [
                [
                    f"{row['text_scale']:g}",
                    f"{row['image_scale']:g}",
                    _percent(row["oracle"]["all"]["success"]),
                    _percent(row["oracle"]["all"]["intact"]),
                    f"{row['oracle']['all']['unchanged_error']:.3f}",
                ]
                for row in records["guidance"]["grid"]
            ],
        ),
        f"\nHeld-out edits ({config.eval_scenes} rendered scenes, realised per family)\n\n",
        _table(
            _METHOD_HEADER,
            [_method_row(name, scores) for name, scores in evaluation["methods"].items()],
        ),
        f"\nAblations ({ablations['steps']} training steps each)\n\n",
        _table(
            [*_METHOD_HEADER, "pairs"],
            [
                [*_method_row(name, run), str(run["examples"])]
                for name, run in ablations["runs"].items()
            ],
        ),
        f"\nGuidance sweep (s_T = {config.text_scale:g})\n\n",
        _table(
            ["s_I", "CLIP direction", "CLIP image"],
            [
                [
                    f"{point['image_scale']:g}",
                    f"{point['direction_similarity']:.3f}",
                    f"{point['image_similarity']:.3f}",
                ]
                for point in evaluation["sweep"]
            ],
        ),
    ]
    report = folder / "report.rst"
    report.write_text("".join(parts), encoding="utf-8")
    return {"report": str(report)}


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


def _tail(losses: list[float]) -> float:
    window = losses[-max(1, len(losses) // 10) :]
    return sum(window) / len(window) if window else float("nan")


def reproduce(
    config: RecipeConfig, *, until: str | None = None, progress: bool = True
) -> dict[str, Any]:
    """Runs (or continues) the recipe; returns each stage's record (timings and numbers).

    Args:
        config: sizes of the run.
        until: last stage to run (one of :data:`STAGES`); all of them by default.
        progress: show progress bars.
    """
    if until is not None and until not in STAGES:
        raise ValueError(f"until must be one of {STAGES}, got {until!r}")
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


def shapes_command(
    action: Literal["reproduce", "evaluate"],
    *,
    output: Path | None = None,
    smoke: bool = False,
    gpu: bool = False,
    seed: int = 0,
    until: Literal[
        "text_to_image", "clip", "pairs", "editor", "guidance", "evaluate", "ablations", "report"
    ]
    | None = None,
    model: str = "shapes",
    clip: Path | None = None,
    scenes: int = 200,
) -> str:
    """Runs the ShapesWorld reproduction of the paper (rerun to continue a stopped run), or
    scores an editor on held-out rendered scenes as the results page does.

    Args:
        action: "reproduce" runs (or continues) every stage; "evaluate" scores ``model``
            (:func:`~instructedit.worlds.evaluation.evaluate_shapes_editor`) and logs the table.
        output: folder of the run (default outputs/shapes), or of the evaluation's files
            (default outputs/shapes-evaluation).
        smoke: run every stage at toy size (about two minutes; the numbers are meaningless), or
            evaluate on 8 edits with a 4-edit sweep.
        gpu: the editor sizes of the second run (:meth:`RecipeConfig.gpu`; for a CUDA device).
        seed: seed of every stage; for "evaluate" the held-out scenes' (0: the test edits the
            results page reports, 7: the validation edits).
        until: last stage to run (default: all of them).
        model: for "evaluate": "shapes" (the embedded default), a run's folder or an editor
            folder (then give ``clip``).
        clip: for "evaluate": the open_clip folder that scores the edits (default: the model's).
        scenes: for "evaluate": held-out edits (the sweep takes the first 48).
    """
    if action == "evaluate":
        given = [name for name, value in (("gpu", gpu), ("until", until)) if value]
        if given:
            raise ValueError(f"{' and '.join(given)}: reproduce's options, not evaluate's")
        if smoke and scenes != 200:
            raise ValueError(f"scenes: smoke evaluates 8 edits, so scenes={scenes} cannot apply")
        from instructedit.worlds.evaluation import evaluate_shapes_editor

        folder = output if output is not None else Path("outputs/shapes-evaluation")
        evaluate_shapes_editor(
            model,
            folder,
            clip=clip,
            scenes=8 if smoke else scenes,
            seed=seed,
            sweep_scenes=4 if smoke else min(48, scenes),
        )
        return str(folder / "evaluation.json")
    given = [
        name
        for name, value in (("model", model != "shapes"), ("clip", clip), ("scenes", scenes != 200))
        if value
    ]
    if given:
        raise ValueError(f"{' and '.join(given)}: evaluate's options, not reproduce's")
    if smoke and gpu:
        raise ValueError("smoke and gpu are two presets: pass at most one")
    output = output if output is not None else Path("outputs/shapes")
    if smoke:
        base = RecipeConfig.smoke(str(output))
    elif gpu:
        base = RecipeConfig.gpu(str(output))
    else:
        base = RecipeConfig(output_dir=str(output))
    config = replace(base, seed=seed)
    records = reproduce(config, until=until)
    summary = Path(config.output_dir) / "summary.json"
    write_json_atomic(summary, records)
    return str(summary)
