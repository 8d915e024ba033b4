"""The latent cache: every training example encoded once, before the first step."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from instructedit.training._config import TrainConfig
from instructedit.training._data import EditSource, augment_pair, augmentation_draw

__all__ = ["LatentCache", "build_latent_cache"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LatentCache:
    """Per example ``[N, flips, C, h, w]`` posteriors and its original size ``[N, 2]`` (height,
    width); per distinct instruction its embedding (and, for SDXL, its pooled embedding), or its
    token ids when the text encoder trains."""

    edited_mean: torch.Tensor
    edited_std: torch.Tensor
    image_latents: torch.Tensor
    prompt_index: torch.Tensor
    text: torch.Tensor
    original_sizes: torch.Tensor
    pooled: torch.Tensor | None = None

    def batch(
        self, keys: list[tuple[int, int]], config: TrainConfig, device: torch.device
    ) -> dict[str, Any]:
        """The cached batch of ``keys``: the flip of each is drawn as :func:`augment_pair` draws
        it, so the run sees exactly the examples of an uncached one."""
        rows, flips = [], []
        for index, seed in keys:
            _, _, mirrored = augmentation_draw(
                config.resolution,
                config.resolution,
                config.random_flip,
                torch.Generator().manual_seed(seed),
            )
            rows.append(index)
            flips.append(int(mirrored))
        row = torch.tensor(rows, device=device)
        flip = torch.tensor(flips, device=device)
        prompts = self.prompt_index[row]
        batch = {
            "edited_mean": self.edited_mean[row, flip],
            "edited_std": self.edited_std[row, flip],
            "image_latents": self.image_latents[row, flip],
            "text": self.text[prompts],
            "original_size": self.original_sizes[row],
            # The crop is the whole resized image, flipped or not.
            "crop": torch.zeros(len(rows), 2, dtype=torch.long, device=device),
        }
        if self.pooled is not None:
            batch["pooled"] = self.pooled[prompts]
        return batch


def build_latent_cache(
    source: EditSource,
    vae: Any,
    config: TrainConfig,
    encode: Callable[[list[str], torch.device], torch.Tensor | tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    *,
    progress: bool = True,
    chunk: int = 64,
) -> LatentCache:
    """Encodes every example (each flip the run can draw) and every distinct instruction (its
    tokens only when the text encoder trains; ``encode`` returns the embeddings, or the
    embeddings and the pooled ones for SDXL)."""
    flips = (False, True) if config.random_flip else (False,)
    means: list[torch.Tensor] = []
    stds: list[torch.Tensor] = []
    images: list[torch.Tensor] = []
    prompts: dict[str, int] = {}
    prompt_index: list[int] = []
    sizes: list[tuple[int, int]] = []
    unused = torch.Generator()  # a fixed crop and no flip: augment_pair draws nothing used
    total = len(source)
    with tqdm(total=total, desc="caching latents", unit="example", disable=not progress) as bar:
        for start in range(0, total, chunk):
            inputs, edited = [], []
            for index in range(start, min(start + chunk, total)):
                record = source.record(index)
                sizes.append((record.input_image.size[1], record.input_image.size[0]))
                prompt_index.append(prompts.setdefault(record.edit_prompt, len(prompts)))
                before, after = augment_pair(
                    record, config.resolution, config.resolution, False, unused
                )
                for mirrored in flips:
                    inputs.append(before.flip(-1) if mirrored else before)
                    edited.append(after.flip(-1) if mirrored else after)
            with torch.no_grad():
                dtype = vae.dtype
                posterior = vae.encode(torch.stack(edited).to(device, dtype)).latent_dist
                mode = vae.encode(torch.stack(inputs).to(device, dtype)).latent_dist.mode()
            shape = (-1, len(flips), *mode.shape[1:])
            means.append(posterior.mean.reshape(shape))
            stds.append(posterior.std.reshape(shape))
            images.append(mode.reshape(shape))
            bar.update(len(edited) // len(flips))
    texts = list(prompts)
    hidden: list[torch.Tensor] = []
    pooled_parts: list[torch.Tensor] = []
    for start in range(0, len(texts), chunk):
        encoded = encode(texts[start : start + chunk], device)
        if isinstance(encoded, tuple):  # SDXL: embeddings and pooled embeddings
            hidden.append(encoded[0])
            pooled_parts.append(encoded[1])
        else:
            hidden.append(encoded)
    text = torch.cat(hidden)
    pooled = torch.cat(pooled_parts) if pooled_parts else None
    logger.info("cached %d examples and %d distinct instructions", total, len(texts))
    return LatentCache(
        edited_mean=torch.cat(means),
        edited_std=torch.cat(stds),
        image_latents=torch.cat(images),
        prompt_index=torch.tensor(prompt_index, device=device),
        text=text,
        original_sizes=torch.tensor(sizes, device=device),
        pooled=pooled,
    )
