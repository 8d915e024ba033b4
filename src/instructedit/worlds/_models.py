"""ShapesWorld model architectures and the small training loops of the recipe's first stages.

The text-to-image model (autoencoder, text encoder, UNet) and the CLIP model are trained from
scratch on rendered scenes and their captions; the editor is then trained with the library's
:class:`~instructedit.training.Trainer`. Sizes follow a trial run on a 2-core CPU: 32² scenes,
a 4×-downsampling autoencoder (~1M parameters), a 2-layer text encoder and a 4.2M-parameter UNet
(0.46 s per training step at batch 64 on two CPU cores).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from instructedit.checkpoints import check_settings, save_torch_atomic
from instructedit.clip_tokenizer import CLIP_CONTEXT_LENGTH, CLIP_VOCAB_SIZE
from instructedit.components import clip_text_encoder
from instructedit.guidance import check_scale
from instructedit.seeding import seeded
from instructedit.worlds.shapes import Scene, caption, random_scene, region_masks, render

__all__ = [
    "SHAPES_CLIP_CONFIG",
    "check_text_to_image_training",
    "shapes_autoencoder",
    "shapes_clip",
    "shapes_text_encoder",
    "shapes_unet",
    "train_autoencoder",
    "train_clip",
    "train_text_to_image",
]

logger = logging.getLogger(__name__)

TEXT_WIDTH = 64


AUTOENCODER_BLOCKS: dict[int, tuple[int, ...]] = {2: (32, 64), 4: (32, 64, 64)}
"""The block widths of :func:`shapes_autoencoder` for each downsampling it offers."""


def shapes_autoencoder(seed: int = 0, downsampling: int = 4) -> Any:
    """An ``AutoencoderKL`` with 4 latent channels that downsamples ``downsampling``× (4: blocks
    32/64/64, a 32² scene is an 8² latent; 2: blocks 32/64, a 16² latent)."""
    from diffusers import AutoencoderKL

    if downsampling not in AUTOENCODER_BLOCKS:
        offered = " or ".join(map(str, AUTOENCODER_BLOCKS))
        raise ValueError(f"downsampling must be {offered}, got {downsampling!r}")
    blocks = AUTOENCODER_BLOCKS[downsampling]
    with seeded(seed):
        return AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            block_out_channels=blocks,
            down_block_types=("DownEncoderBlock2D",) * len(blocks),
            up_block_types=("UpDecoderBlock2D",) * len(blocks),
            layers_per_block=1,
            norm_num_groups=16,
            sample_size=32,
        )


def shapes_text_encoder(seed: int = 0) -> Any:
    """A 2-layer ``CLIPTextModel`` of width 64 over the real CLIP vocabulary."""
    return clip_text_encoder(width=TEXT_WIDTH, seed=seed)


def shapes_unet(
    seed: int = 0,
    in_channels: int = 4,
    block_out_channels: tuple[int, int] = (64, 128),
    sample_size: int = 8,
) -> Any:
    """A ~4M-parameter ``UNet2DConditionModel`` (blocks 64/128, cross-attention width 64);
    ``block_out_channels`` widens it (``(96, 192)``: 9.3M parameters); ``sample_size`` is the
    latent side it is configured for (8: a 32² scene under a 4× autoencoder; it runs on any
    even side)."""
    from diffusers import UNet2DConditionModel

    if len(block_out_channels) != 2 or any(
        not isinstance(width, int) or width < 32 or width % 32 for width in block_out_channels
    ):
        raise ValueError(
            "block_out_channels must be two multiples of 32 (the norm groups), got "
            f"{block_out_channels!r}"
        )
    if isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 2:
        raise ValueError(f"sample_size must be an int >= 2 (the latent side), got {sample_size!r}")
    with seeded(seed):
        return UNet2DConditionModel(
            sample_size=sample_size,
            in_channels=in_channels,
            out_channels=4,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=TEXT_WIDTH,
            attention_head_dim=16,
            norm_num_groups=32,
        )


SHAPES_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 3, "width": 64, "head_width": 32, "patch_size": 4},
    "text_cfg": {
        "context_length": CLIP_CONTEXT_LENGTH,
        "vocab_size": CLIP_VOCAB_SIZE,
        "width": 64,
        "heads": 2,
        "layers": 2,
    },
}
"""open_clip ``model_cfg`` of ShapesWorld's CLIP: a ViT with 4×4 patches and a 2-layer text tower."""


def shapes_clip(seed: int = 0) -> Any:
    """A small open_clip ``CLIP`` for 32² scenes, built from :data:`SHAPES_CLIP_CONFIG`."""
    import open_clip

    with seeded(seed):
        return open_clip.CLIP(**copy.deepcopy(SHAPES_CLIP_CONFIG))


def _batch(
    rng: random.Random, count: int, size: int
) -> tuple[torch.Tensor, list[str], list[Scene]]:
    scenes = [random_scene(rng) for _ in range(count)]
    pixels = np.stack([np.asarray(render(s, size), np.float32) / 127.5 - 1.0 for s in scenes])
    return torch.from_numpy(pixels).permute(0, 3, 1, 2), [caption(s) for s in scenes], scenes


def shape_coverage(scenes: Sequence[Scene], size: int) -> torch.Tensor:
    """The share of each pixel the scenes' shapes cover, ``[N, size, size]`` in [0, 1] (0 for a
    scene without shapes): the sum of :func:`~instructedit.worlds.shapes.region_masks`."""
    return torch.from_numpy(
        np.stack([region_masks(scene, size).sum(axis=0).clip(0.0, 1.0) for scene in scenes])
        if scenes
        else np.zeros((0, size, size), np.float32)
    ).float()


class _LoopState:
    """Atomic periodic checkpoints of a training loop: a killed run continues where it stopped.

    Saves the modules, the optimizer, the random generators (Python's scene sampler, if the loop
    draws its scenes from one, and torch's global one), the step and the losses so far; a resumed
    run draws exactly the batches and noise of an uninterrupted one. It also records ``options``,
    the settings that define the loop's objective: a checkpoint written with others (another
    learning rate, which the restored optimiser would otherwise bring back silently, or another
    loss weight) is refused, not resumed. The number of steps may change, so a finished run can
    be continued further (unless a setting depends on it, as a cosine schedule does).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        every: int,
        modules: dict[str, torch.nn.Module],
        optimizer: torch.optim.Optimizer,
        rng: random.Random | None = None,
        *,
        options: dict[str, Any] | None = None,
    ) -> None:
        if every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {every}")
        self.path = None if path is None else Path(path)
        self.every = every
        self.modules = modules
        self.optimizer = optimizer
        self.rng = rng
        # As plain JSON values: what a checkpoint loaded with weights_only holds and compares.
        self.options = json.loads(json.dumps(options or {}))

    def restore(self) -> tuple[int, list[float]]:
        """Loads the checkpoint if there is one; returns (next step, losses so far)."""
        if self.path is None or not self.path.is_file():
            return 0, []
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        # A checkpoint from before options were recorded holds none, and resumes as it did; a
        # setting recorded on one side only (added to the loop since) is not compared.
        check_settings(state.get("options", {}), self.options, checkpoint=self.path)
        for name, module in self.modules.items():
            module.load_state_dict(state["modules"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        if self.rng is not None:
            version, internal, gauss = state["python_rng"]
            self.rng.setstate((version, tuple(internal), gauss))
        logger.info("resuming %s at step %d", self.path, state["step"])
        return int(state["step"]), list(state["losses"])

    def run(
        self,
        steps: int,
        loss_of_step: Callable[[int], torch.Tensor],
        *,
        desc: str,
        progress: bool,
        clip: Sequence[torch.Tensor] | None = None,
        after_step: Callable[[int], None] | None = None,
        lr_factor: Callable[[int], float] | None = None,
    ) -> list[float]:
        """The loop: restores, then for each step ``i`` (from 0) until ``steps`` computes
        ``loss_of_step(i)``, back-propagates, clips the gradient norm of ``clip`` at 1, steps and
        clears the optimiser, runs ``after_step(n)`` (``n``: steps finished) and checkpoints;
        returns all losses (restored ones included). With ``lr_factor``, step ``i`` runs at the
        optimiser's initial learning rate times ``lr_factor(i)``: a function of the step, so a
        resumed run keeps its schedule."""
        start, losses = self.restore()
        # The initial rate is kept in the optimiser's state (torch's schedulers' key), so a
        # restored optimiser, whose "lr" is the scheduled one, still knows it.
        initial = [
            group.setdefault("initial_lr", group["lr"]) for group in self.optimizer.param_groups
        ]
        for step in tqdm(
            range(start, steps), initial=start, total=steps, disable=not progress, desc=desc
        ):
            if lr_factor is not None:
                for group, base in zip(self.optimizer.param_groups, initial, strict=True):
                    group["lr"] = base * lr_factor(step)
            loss = loss_of_step(step)
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(clip, 1.0)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if after_step is not None:
                after_step(step + 1)
            losses.append(loss.item())
            self.step_done(step + 1, losses)
        return losses

    def step_done(self, step: int, losses: list[float]) -> None:
        """Checkpoints after every ``every`` finished steps (``step`` counts finished steps)."""
        if self.path is None or step % self.every:
            return
        state = {
            "modules": {name: module.state_dict() for name, module in self.modules.items()},
            "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "python_rng": None if self.rng is None else self.rng.getstate(),
            "step": step,
            "losses": losses,
            "options": self.options,
        }
        save_torch_atomic(state, self.path)


def train_autoencoder(
    vae: Any,
    *,
    steps: int,
    batch_size: int = 64,
    learning_rate: float = 5e-4,
    size: int = 32,
    seed: int = 0,
    kl_weight: float = 1e-6,
    progress: bool = True,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 100,
    device: str | torch.device = "cpu",
) -> list[float]:
    """Trains the autoencoder to reconstruct rendered scenes (L1 + a small KL term).

    With ``checkpoint``, the loop state is saved there every ``checkpoint_every`` steps and a
    call that finds it continues from it (same batches, same result). ``device`` is where the
    model trains (it is moved there).
    """
    vae.to(device)
    rng = random.Random(f"autoencoder:{seed}")
    optimizer = torch.optim.AdamW(vae.parameters(), lr=learning_rate, weight_decay=0.0)
    options = {"batch_size": batch_size, "learning_rate": learning_rate, "size": size}
    options |= {"seed": seed, "kl_weight": kl_weight}
    state = _LoopState(checkpoint, checkpoint_every, {"vae": vae}, optimizer, rng, options=options)
    vae.train()

    def loss_of_step(step: int) -> torch.Tensor:
        pixels = _batch(rng, batch_size, size)[0].to(device)
        posterior = vae.encode(pixels).latent_dist
        reconstruction = vae.decode(posterior.sample()).sample
        return F.l1_loss(reconstruction, pixels) + kl_weight * posterior.kl().mean()

    with seeded(seed):
        losses = state.run(
            steps, loss_of_step, desc="autoencoder", progress=progress, clip=list(vae.parameters())
        )
    vae.eval()
    return losses


def finetune_decoder(
    vae: Any,
    *,
    steps: int,
    batch_size: int = 64,
    learning_rate: float = 3e-4,
    size: int = 32,
    seed: int = 0,
    progress: bool = True,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 100,
    device: str | torch.device = "cpu",
    shape_weight: float = 0.0,
) -> list[float]:
    """Fine-tunes the autoencoder's decoder with its encoder frozen (L1 + MSE).

    As Stability's ``sd-vae-ft-mse`` did for Stable Diffusion: the latent space is unchanged, so
    every model trained on it (text-to-image UNet, editors) keeps working, and only the decoded
    images get closer to the scenes. Here it matters for the oracle: shapes are a small share of
    the pixels, and after the joint training the round trip of a ground-truth scene alone left
    an error of about 0.11 on its shapes (see the ShapesWorld research notes). The decoder learns from
    posterior *samples*, which makes it tolerant of the slightly-off latents a sampler produces.
    ``checkpoint``, ``checkpoint_every`` and ``device`` are as in :func:`train_autoencoder`.

    ``shape_weight`` weighs each pixel's loss by ``1 + shape_weight × c``, with ``c`` the share of
    the pixel the scene's shapes cover (:func:`~instructedit.worlds.shapes.region_masks`), and
    normalises by the mean weight: 0 is the plain L1 + MSE; larger values spend more of the
    decoder on the shapes, the few pixels a background change or an addition must keep (the
    embedded default's decoder was fine-tuned 1000 steps more at 4, which lowered the round-trip
    error on them from 0.047 and 0.049 to 0.029 and 0.030; see the ShapesWorld research notes).
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    check_scale("shape_weight", shape_weight)
    vae.to(device)
    rng = random.Random(f"decoder:{seed}")
    decoder = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    trainable = {id(p) for p in decoder}
    flags = [parameter.requires_grad for parameter in vae.parameters()]
    for parameter in vae.parameters():
        parameter.requires_grad_(id(parameter) in trainable)
    optimizer = torch.optim.AdamW(decoder, lr=learning_rate, weight_decay=0.0)
    options = {"batch_size": batch_size, "learning_rate": learning_rate, "size": size}
    options |= {"seed": seed, "shape_weight": shape_weight}
    state = _LoopState(checkpoint, checkpoint_every, {"vae": vae}, optimizer, rng, options=options)
    vae.eval()  # the encoder stays as it is; nothing in the decoder depends on the mode

    def loss_of_step(step: int) -> torch.Tensor:
        pixels, _, scenes = _batch(rng, batch_size, size)
        pixels = pixels.to(device)
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.sample()
        reconstruction = vae.decode(latents).sample
        if shape_weight == 0.0:
            return F.l1_loss(reconstruction, pixels) + F.mse_loss(reconstruction, pixels)
        weight = 1.0 + shape_weight * shape_coverage(scenes, size).to(device)[:, None]
        difference = reconstruction - pixels
        return ((difference.abs() + difference.square()) * weight).mean() / weight.mean()

    try:
        with seeded(seed):
            losses = state.run(steps, loss_of_step, desc="decoder", progress=progress, clip=decoder)
    finally:
        for parameter, flag in zip(vae.parameters(), flags, strict=True):
            parameter.requires_grad_(flag)
    return losses


def _latent_scale(vae: Any, size: int, seed: int) -> float:
    """1 / std of the latents of rendered scenes (Stable Diffusion's 0.18215, measured)."""
    pixels = _batch(random.Random(f"scale:{seed}"), 256, size)[0].to(vae.device)
    with torch.no_grad():
        latents = vae.encode(pixels).latent_dist.mode()
    return float(1.0 / latents.std())


def check_text_to_image_training(
    schedule: str, ema_decay: float | None, *, prefix: str = "", ema_name: str = "ema_decay"
) -> None:
    """Raises ``ValueError`` unless ``schedule`` is ``"constant"`` or ``"cosine"`` and
    ``ema_decay`` is ``None`` or in [0, 1) (:func:`train_text_to_image`'s arguments); the
    messages name them ``prefix + "schedule"`` and ``ema_name``."""
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"{prefix}schedule must be 'constant' or 'cosine', got {schedule!r}")
    if ema_decay is not None and not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"{ema_name} must be in [0, 1) or None, got {ema_decay!r}")


class _TextToImageBatches:
    """One training step's batch, from the run seed and the step alone: the scenes rendered
    (``[N, 3, H, W]`` float32 in [-1, 1]) and their captions' token ids (dropped captions are
    ``""``), as numpy arrays."""

    def __init__(
        self, tokenizer: Any, seed: int, batch_size: int, size: int, caption_dropout: float
    ) -> None:
        self.tokenizer = tokenizer
        self.seed = seed
        self.batch_size = batch_size
        self.size = size
        self.caption_dropout = caption_dropout

    def __call__(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        rng = random.Random(f"text-to-image:{self.seed}:{step}")
        pixels, captions, _ = _batch(rng, self.batch_size, self.size)
        captions = ["" if rng.random() < self.caption_dropout else c for c in captions]
        ids = self.tokenizer(
            captions,
            padding="max_length",
            max_length=CLIP_CONTEXT_LENGTH,
            truncation=True,
            return_tensors="np",
        ).input_ids
        # Contiguous, as a pickled array arrives from a worker: the convolutions then take the
        # same path (and give the same floats) whichever process rendered the batch.
        return np.ascontiguousarray(pixels.numpy()), ids


_WORKER_MAKE: Callable[[int], Any] | None = None


def _start_worker(make: Callable[[int], Any]) -> None:
    import signal

    global _WORKER_MAKE
    _WORKER_MAKE = make
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the loop, which ends the pool


def _worker_make(step: int) -> Any:
    if _WORKER_MAKE is None:
        raise RuntimeError("a data worker ran before its initializer")
    return _WORKER_MAKE(step)


class _Prefetcher:
    """``make(step)`` for the steps a loop asks for, computed by ``workers`` processes up to
    ``2 · workers`` steps ahead of it (``workers=0``: in this process, when asked). ``make`` is
    sent to each worker once; it must be picklable and depend on the step alone. The processes
    start at the first request; a worker that dies raises ``BrokenProcessPool`` there, and
    :meth:`close` ends them all."""

    def __init__(self, make: Callable[[int], Any], workers: int, last: int) -> None:
        self.make = make
        self.workers = workers
        self.last = last
        self.ahead = 2 * workers
        self.pending: dict[int, Any] = {}
        self.pool: Any = None

    def get(self, step: int) -> Any:
        if self.workers == 0:
            return self.make(step)
        if self.pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # Spawned, not forked: the parent may hold CUDA and thread pools.
            self.pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(self.make,),
            )
        for stale in [s for s in self.pending if s < step]:
            self.pending.pop(stale).cancel()
        for coming in range(step, min(step + self.ahead + 1, self.last)):
            if coming not in self.pending:
                self.pending[coming] = self.pool.submit(_worker_make, coming)
        return self.pending.pop(step).result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
            self.pending.clear()


def train_text_to_image(
    unet: Any,
    text_encoder: Any,
    tokenizer: Any,
    vae: Any,
    scheduler: Any,
    *,
    steps: int,
    batch_size: int = 64,
    learning_rate: float = 3e-4,
    size: int = 32,
    seed: int = 0,
    caption_dropout: float = 0.1,
    schedule: Literal["constant", "cosine"] = "constant",
    ema_decay: float | None = None,
    ema_warmup: bool = True,
    data_workers: int = 0,
    progress: bool = True,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 200,
    device: str | torch.device = "cpu",
) -> list[float]:
    """Trains UNet and text encoder together on (render, caption); sets the VAE's scaling factor.

    Captions are dropped (replaced by ``""``) with probability ``caption_dropout`` so the model
    supports classifier-free guidance. ``schedule="cosine"`` decays the learning rate from
    ``learning_rate`` to 0 over ``steps`` (half a cosine). With ``ema_decay``, an exponential
    moving average of both models' weights is kept (``ema ← d·ema + (1 − d)·weights`` after every
    step) and ``unet`` and ``text_encoder`` end with the averaged weights, as Stable Diffusion's
    were released. With ``ema_warmup`` the average warms up as diffusers' ``EMAModel`` (and so
    the editor's :class:`~instructedit.training.Trainer`) does: the first update copies the
    weights and the k-th uses ``d = min(ema_decay, k / (9 + k))``, so the starting weights are
    gone at once (at 0.999, ``d`` reaches ``ema_decay`` only after 8991 updates: a shorter run
    averages over a shorter window). Without it ``d = ema_decay`` from the first step, and after
    k steps the average still holds ``ema_decay**k`` of the starting weights (0.37 after 1000
    steps at 0.999: a model trained from scratch briefly averages its random start and draws
    nothing). Each step's scenes and caption dropout come from a generator seeded by ``seed``
    and the step, so ``data_workers`` processes can render and tokenize the coming steps while
    this one trains (on a GPU the renderer, not the card, bounds a step) and any number of them
    gives the same batches (on the CPU, the same run to the last bit: tested). ``checkpoint``,
    ``checkpoint_every`` and ``device`` are as in :func:`train_autoencoder` (the average is
    checkpointed too); the diffusion noise and timesteps are drawn on the CPU, the autoencoder's
    latent sample on ``device``. (A checkpoint
    written before the batches were drawn per step resumes with the per-step batches.)
    """
    check_text_to_image_training(schedule, ema_decay)
    if isinstance(data_workers, bool) or not isinstance(data_workers, int) or data_workers < 0:
        raise ValueError(f"data_workers must be an int >= 0, got {data_workers!r}")
    for module in (unet, text_encoder, vae):
        module.to(device)
    vae.register_to_config(scaling_factor=_latent_scale(vae, size, seed))
    parameters = [*unet.parameters(), *text_encoder.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=1e-2)
    modules = {"unet": unet, "text_encoder": text_encoder}
    averaged: list[tuple[torch.nn.Module, torch.nn.Module]] = []
    if ema_decay is not None:
        averaged = [(copy.deepcopy(m).requires_grad_(False), m) for m in (unet, text_encoder)]
        modules |= {"ema_unet": averaged[0][0], "ema_text_encoder": averaged[1][0]}
    # Batches come from per-step seeds (_TextToImageBatches): no sampler state to checkpoint.
    options: dict[str, Any] = {"batch_size": batch_size, "learning_rate": learning_rate}
    options |= {"size": size, "seed": seed, "caption_dropout": caption_dropout}
    options |= {"ema_decay": ema_decay, "ema_warmup": ema_warmup}
    # A cosine schedule's rate at a step depends on the number of steps.
    options |= {"schedule": schedule, "cosine_steps": steps if schedule == "cosine" else None}
    state = _LoopState(checkpoint, checkpoint_every, modules, optimizer, options=options)
    unet.train()
    text_encoder.train()

    batches = _Prefetcher(
        _TextToImageBatches(tokenizer, seed, batch_size, size, caption_dropout), data_workers, steps
    )

    def loss_of_step(step: int) -> torch.Tensor:
        pixels, ids = (torch.from_numpy(array).to(device) for array in batches.get(step))
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
        noise = torch.randn(latents.shape).to(device)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,))
        timesteps = timesteps.to(device)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        prediction = unet(noisy, timesteps, text_encoder(ids)[0]).sample
        return F.mse_loss(prediction, noise)

    keep = 0.0 if ema_decay is None else ema_decay

    def update_average(step: int) -> None:
        # diffusers' EMAModel: the first update copies the weights, the k-th uses k / (9 + k).
        decay = (0.0 if step <= 1 else min(keep, step / (9 + step))) if ema_warmup else keep
        with torch.no_grad():
            for average, model in averaged:
                kept: list[torch.Tensor] = list(average.parameters())
                weights: list[torch.Tensor] = list(model.parameters())
                torch._foreach_lerp_(kept, weights, 1.0 - decay)

    def cosine(step: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * step / steps))

    try:
        with seeded(seed):
            losses = state.run(
                steps,
                loss_of_step,
                desc="text-to-image",
                progress=progress,
                clip=parameters,
                after_step=update_average if averaged else None,
                lr_factor=cosine if schedule == "cosine" else None,
            )
    finally:
        batches.close()
    for average, model in averaged:
        model.load_state_dict(average.state_dict())
    unet.eval()
    text_encoder.eval()
    return losses


def train_clip(
    model: Any,
    tokenizer: Any,
    *,
    steps: int,
    batch_size: int = 128,
    learning_rate: float = 5e-4,
    size: int = 32,
    seed: int = 0,
    progress: bool = True,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 200,
    device: str | torch.device = "cpu",
) -> list[float]:
    """Trains CLIP contrastively on rendered scenes and their captions (symmetric InfoNCE).

    ``checkpoint``, ``checkpoint_every`` and ``device`` are as in :func:`train_autoencoder`.
    """
    model.to(device)
    rng = random.Random(f"clip:{seed}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.1)
    options = {"batch_size": batch_size, "learning_rate": learning_rate, "size": size, "seed": seed}
    state = _LoopState(
        checkpoint, checkpoint_every, {"clip": model}, optimizer, rng, options=options
    )
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711], device=device).view(1, 3, 1, 1)
    model.train()

    def loss_of_step(step: int) -> torch.Tensor:
        pixels, captions, _ = _batch(rng, batch_size, size)
        images = ((pixels.to(device) + 1) / 2 - mean) / std
        image_features = F.normalize(model.encode_image(images), dim=-1)
        text_features = F.normalize(model.encode_text(tokenizer(captions).to(device)), dim=-1)
        logits = model.logit_scale.exp() * image_features @ text_features.T
        # Identical captions in one batch are positives of each other.
        same = torch.tensor(
            [[a == b for b in captions] for a in captions], dtype=torch.float32, device=device
        )
        targets = same / same.sum(dim=1, keepdim=True)
        return (
            -(targets * logits.log_softmax(dim=1)).sum(1).mean()
            - (targets * logits.log_softmax(dim=0)).sum(0).mean()
        ) / 2

    def clamp_temperature(step: int) -> None:
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)

    with seeded(seed):
        losses = state.run(
            steps, loss_of_step, desc="clip", progress=progress, after_step=clamp_temperature
        )
    model.eval()
    return losses
