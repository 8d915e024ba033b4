"""The recipe's configuration: its stages, its ablations and :class:`RecipeConfig`, checked when
made."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from instructedit._checks import check_counts, check_range
from instructedit.clip._filter import check_structure_threshold
from instructedit.evaluation import PAPER_IMAGE_SCALES
from instructedit.guidance import check_scale
from instructedit.p2p import PAIR_CONTROLS, check_local_blend
from instructedit.sampling import check_sampler
from instructedit.training._config import PREDICTION_TYPES
from instructedit.worlds._models import AUTOENCODER_BLOCKS, check_text_to_image_training

__all__ = ["ABLATIONS", "DEFAULT_ABLATIONS", "STAGES", "RecipeConfig"]

# The package's __init__ documents STAGES, ABLATIONS and DEFAULT_ABLATIONS where it exports them.
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

DEFAULT_ABLATIONS: tuple[str, ...] = ABLATIONS[:3]


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
    4 (default), Stable Diffusion's 8× scaled to this world (a 32² scene is an 8² latent), or 2
    (a 16² latent, whose editor's training step takes about 3.8× as long on two CPU cores). The
    text-to-image UNet is configured for the latent side; the editor, made from it, follows."""
    autoencoder_steps: int = 600
    """Autoencoder training steps (batch 64; ~0.8 s each on two CPU cores)."""
    decoder_steps: int = 1000
    """Steps fine-tuning the autoencoder's decoder with its encoder frozen after the joint training
    (batch 64; ~0.65 s each on two CPU cores; 0: none), as Stability's ``sd-vae-ft-mse``: the
    latent space stays, the decoded shapes get their colours right."""
    decoder_shape_weight: float = 4.0
    """Extra loss weight of the pixels the shapes cover in that fine-tuning
    (:func:`~instructedit.worlds._models.finetune_decoder`'s ``shape_weight``): a finite number
    >= 0, default 4; 0 is plain L1 + MSE over the whole scene, where shapes are a small share of
    the pixels. Weighting the shapes lowers the autoencoder round trip's unchanged-region error
    of the edits that change or add shapes (background changes, additions) and raises it slightly
    for recolours and removals, whose kept region is mostly background; the steps take as long."""
    text_to_image_steps: int = 3500
    """Text encoder + UNet training steps (batch 64; ~0.87 s each on two CPU cores, where the
    default keeps every stage of the recipe within three hours)."""
    text_to_image_schedule: Literal["constant", "cosine"] = "constant"
    """Learning-rate schedule of the text-to-image training (AdamW, 3e-4): ``"constant"``
    (default), or ``"cosine"``, decaying to 0 over the steps. On this world's model annealing
    hurts: a model whose training goes on with a cosine decay draws the captions' colours less
    often than one that goes on at a constant rate with the average of ``text_to_image_ema``."""
    text_to_image_ema: float | None = 0.999
    """Decay of an exponential moving average of the text-to-image weights, which the model
    keeps: in [0, 1), default 0.999; ``None``: the last weights. The average draws the captions'
    colours markedly more often than the last weights of the same training."""
    text_to_image_ema_warmup: bool = True
    """Warm the average up as diffusers' ``EMAModel`` does (default ``True``): the first update
    copies the weights, the k-th uses ``min(text_to_image_ema, k / (9 + k))``, so a model trained
    from scratch does not keep its random start (after 1000 steps at a constant 0.999, 0.999¹⁰⁰⁰
    ≈ 37 % of the average is still that start, and it draws nothing). The decay then reaches 0.999
    only after 8991 steps: the default 3500 steps end at 0.9974, an averaging window of about 390
    steps. ``False`` averages at the constant decay from the first step; a run folder whose
    ``config.json`` does not name this field resumes its text-to-image stage with the warm-up
    unless its config sets it to ``False``."""
    clip_steps: int = 1500
    """CLIP training steps (batch 128; ~0.3 s each on two CPU cores)."""
    captions: int = 400
    """Captions edited and rendered as pairs."""
    samples_per_pair: int = 8
    """Candidate pairs per caption edit."""
    keep_per_pair: int = 4
    """Kept pairs per caption edit (the paper's 4; in ShapesWorld every seed draws a new layout,
    so each kept pair is a different scene). ``keep_per_pair=samples_per_pair`` keeps every
    candidate that passes the filter: about 40 % more pairs, at the same share of correct ones."""
    generation_steps: int = 20
    """Sampler steps when rendering pairs."""
    pair_control: Literal["self_attention", "cross_attention"] = "cross_attention"
    """Prompt-to-Prompt control of the candidates (``GenerationConfig.control``):
    google/prompt-to-prompt's cross-attention edit, which keeps 3–4× more of this world's
    candidates correct than the official generator's self-attention injection
    (``"self_attention"``, the paper's; ``examples/shapes/pair_controls.py``; the ShapesWorld research notes)."""
    pair_control_range: tuple[float, float] = (0.8, 0.8)
    """p ~ U(range): the control's strength per candidate (google's cross-attention default
    p = 0.8; the paper's is U(0.1, 0.9): ``(0.1, 0.9)``)."""
    pair_local_blend: float | None = None
    """With the cross-attention control: the threshold of a local blend around the edited words
    (``GenerationConfig.local_blend``; google's 0.3), which holds every shape the edit does not
    name in place; ``None``: none (this world's small model's attention maps are too flat for
    it to help)."""
    pair_guidance_range: tuple[float, float] = (7.5, 7.5)
    """Text guidance s ~ U(range) of the candidates, finite with 0 <= low <= high: a fixed 7.5 by
    default (the paper's U(7.5, 15): ``(7.5, 15.0)``). A lower scale draws this world's captions
    more often (at 3: about 93 % of samples with the right colours against 73 %) and makes more
    candidates correct, but the editor trained on its filtered pairs, fewer of them correct, does
    worse (the ShapesWorld research notes)."""
    pair_extra_guidance: tuple[float, ...] = ()
    """Further fixed text guidance scales for the candidates (each finite and > 0, none
    repeated; default ``()``: one set): every caption edit's ``samples_per_pair`` candidates (the
    same seeds and control strengths) are rendered again at each scale, into
    ``pairs/candidates-g{scale}``, and the filter pools the sets (up to ``keep_per_pair`` per
    caption edit from each set). A set rendered again at 3 adds many training pairs, more of them
    correct, but gives no better editor (the ShapesWorld research notes)."""
    min_image_similarity: float | None = None
    """CLIP filter threshold on cos(I₀, I₁); ``None``: calibrated (see ``calibration_quantile``).
    The paper's 0.75 belongs to ViT-L/14's similarity scale, not to a small CLIP's."""
    min_direction_similarity: float | None = 0.7
    """CLIP filter threshold on the directional similarity (paper: 0.2); ``None``: calibrated.
    This world's CLIP scores nearly every ground-truth pair above 0.78 and the median generated
    candidate near 0.65: a calibrated threshold would keep only a few percent of the
    candidates."""
    min_text_similarity: float | None = 0.7
    """CLIP filter threshold on the image–caption similarities (paper: 0.2); ``None``:
    calibrated."""
    min_structure_similarity: float | None = 0.8
    """Beyond the paper: the filter also keeps only pairs whose edges stay in place
    (:func:`~instructedit.clip.structure_similarity` ≥ this, in [0, 1]), since this world's small
    CLIP does not see a layout that moved; ``None``: the paper's CLIP-only filter. The check raises
    the share of training pairs that are the edit they claim and keeps as many correct ones; the
    editor trained on the checked pairs succeeds more often than one trained on the CLIP-only
    pairs (the ShapesWorld research notes)."""
    calibration_quantile: float = 0.1
    """A ``None`` threshold is set to this quantile of the scores of the renderer's ground-truth
    pairs: the filter keeps candidates that this CLIP scores like true edits."""
    editor_steps: int = 4000
    """Editor training steps (batch ``editor_batch_size``; ~0.51 s each on two CPU cores with the
    text encoder trained and cached latents)."""
    ablation_steps: int = 1000
    """Training steps of each ablation's editor (the full editor is also exported at this step,
    so each ablation is compared with it at the same step)."""
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
    noise): the paper's ``"epsilon"`` (default), ``"v_prediction"`` or ``"sample"``. On this
    world's pairs a ``"v_prediction"`` editor, which weighs the clean latent's error at high noise
    far more, realises fewer edits than the ε one and succeeds less often."""
    editor_train_text_encoder: bool = True
    """Train the text encoder with the editor (:attr:`TrainConfig.train_text_encoder
    <instructedit.training.TrainConfig.train_text_encoder>`; default ``True``); the paper keeps
    Stable Diffusion's frozen. This world's encoder has read only captions in the text-to-image
    stage: the instructions' own words ("make", "remove", "the", …) reach a frozen one through
    token embeddings no training has moved. Trained with the editor, it succeeds in more of the
    held-out edits (recolours above all) and keeps the rest intact as often. A run whose
    ``config.json`` does not name this setting trained its editor with the encoder frozen: to
    continue that editor (say with more ``editor_steps``), pass ``False``, or its checkpoints are
    refused."""
    editor_cache_latents: bool = True
    """Train the editors from latents and text embeddings encoded once
    (:attr:`TrainConfig.cache_latents <instructedit.training.TrainConfig.cache_latents>`; with
    ``editor_train_text_encoder``, latents and tokens; default ``True``): the same losses, faster
    steps (1.3× on two CPU cores with the text encoder frozen, 1.1× trained; on a GPU, where the
    data pipeline bounds this tiny editor's step, far more)."""
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
    threads divided between them: an int >= 1, or ``None``. Each caption's candidates come from
    its own seed whatever the count: byte for byte the candidates of one process with as many
    threads as each worker has (the recipe's test compares them); with other thread counts
    torch's floating-point sums, and so a candidate's pixels, may differ in their last bits.
    ``None`` (default): one per torch thread on a CPU (at most 4); one on a GPU and in a process
    started by torchrun or ``accelerate launch`` (whose processes share the captions already).
    The workers are spawned, so a script that calls :func:`reproduce` needs the ``if __name__ ==
    "__main__":`` guard. A caption's batch (two to eight candidates of a 4M-parameter UNet on an
    8² latent) leaves threads idle: on two CPU cores, two processes of one thread run the stage
    about 1.1× as fast as one of two at the default eight candidates a caption, 1.25× at two
    (``benchmarks/pair_workers.py``)."""
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
    guidance they are judged at. The default 100 keeps the stage near 5 minutes on two CPU cores
    with the default grid's 12 settings."""
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
        """The sizes for one GPU (an H100): editors at batch 128, the full one 4000 steps and the
        ablations 2250, all of :data:`ABLATIONS`."""
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
    """Where ``config``'s models run: its ``device``, else CUDA when available, else the CPU."""
    return config.device or ("cuda" if torch.cuda.is_available() else "cpu")
