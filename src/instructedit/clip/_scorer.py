"""ClipScorer: batched CLIP image and text features from an open_clip model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from instructedit._inputs import check_positive_int, check_texts
from instructedit.images import ImageInput, load_image

__all__ = ["ClipScorer", "official_preprocess"]

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def official_preprocess(
    size: int | tuple[int, int],
    mean: Sequence[float] = OPENAI_MEAN,
    std: Sequence[float] = OPENAI_STD,
) -> Callable[[Image.Image], Tensor]:
    """The official filter's preprocessing: bicubic resize to ``size`` *without* cropping, then
    CLIP's mean/std. Returns ``image -> [3, H, W]``."""
    height, width = (size, size) if isinstance(size, int) else size
    mean_t = torch.tensor(mean).view(3, 1, 1)
    std_t = torch.tensor(std).view(3, 1, 1)

    def preprocess(image: Image.Image) -> Tensor:
        pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)
        pixels = pixels.permute(2, 0, 1).unsqueeze(0)
        resized = F.interpolate(pixels, size=(height, width), mode="bicubic", align_corners=False)
        return ((resized[0] - mean_t) / std_t).float()

    return preprocess


class ClipScorer:
    """Batched, gradient-free CLIP features from an open_clip model.

    Args:
        model: an open_clip ``CLIP`` model.
        tokenizer: its tokenizer (``open_clip.get_tokenizer(name)``).
        preprocess: an image transform ``PIL → [3, H, W]``; default
            :func:`official_preprocess` at the model's input size (no crop), as InstructPix2Pix.
        batch_size: images or texts per forward pass.
        device: where to run (default: the model's device).

    Features are L2-normalised. On CUDA the forward passes run under fp16 autocast.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Callable[..., Tensor],
        preprocess: Callable[[Image.Image], Tensor] | None = None,
        *,
        batch_size: int = 64,
        device: str | torch.device | None = None,
    ) -> None:
        check_positive_int(batch_size, "batch_size")
        self.model = model.eval()
        self.tokenizer = tokenizer
        if preprocess is None:
            size = getattr(model.visual, "image_size", 224)
            mean = getattr(model.visual, "image_mean", None) or OPENAI_MEAN
            std = getattr(model.visual, "image_std", None) or OPENAI_STD
            preprocess = official_preprocess(size, mean, std)
        self.preprocess = preprocess
        self.batch_size = batch_size
        self.device = (
            torch.device(device) if device is not None else next(model.parameters()).device
        )
        self.model.to(self.device)

    @classmethod
    def from_open_clip(
        cls,
        name: str,
        pretrained: str | None = None,
        *,
        transforms: Literal["official", "model"] = "official",
        device: str | torch.device | None = None,
        batch_size: int = 64,
    ) -> ClipScorer:
        """Builds a scorer from an open_clip model name (``"ViT-L-14"``, ``"local-dir:PATH"``,
        ``"hf-hub:ORG/REPO"``) and ``pretrained`` tag or checkpoint path.

        Args:
            transforms: ``"official"`` (resize without crop, as InstructPix2Pix) or ``"model"``
                (the model's own validation transform, with centre crop).
        """
        import open_clip

        model, _, model_preprocess = open_clip.create_model_and_transforms(
            name, pretrained=pretrained, device=device
        )
        tokenizer = open_clip.get_tokenizer(name)
        chosen = model_preprocess if transforms == "model" else None
        return cls(model, tokenizer, chosen, device=device, batch_size=batch_size)

    def _autocast(self) -> Any:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return torch.autocast("cpu", enabled=False)

    @property
    def feature_dim(self) -> int:
        """D, the size of one feature vector (the model's embedding size)."""
        projection = getattr(self.model, "text_projection", None)
        if isinstance(projection, Tensor):
            return int(projection.shape[-1])
        if isinstance(projection, torch.nn.Linear):
            return int(projection.out_features)
        # open_clip's CustomTextCLIP (hf-hub text towers) has no text_projection.
        return int(self.model.visual.output_dim)

    def encode_images(self, images: Sequence[ImageInput]) -> Tensor:
        """L2-normalised image features ``[N, D]`` (float32, on CPU); ``[0, D]`` for no images."""
        images = _as_batch(images, "images")
        if not images:
            return torch.empty(0, self.feature_dim)
        features = []
        with torch.no_grad(), self._autocast():
            for start in range(0, len(images), self.batch_size):
                chunk = [
                    self.preprocess(load_image(images[i], argument=f"images[{i}]"))
                    for i in range(start, min(start + self.batch_size, len(images)))
                ]
                batch = torch.stack(chunk).to(self.device)
                features.append(F.normalize(self.model.encode_image(batch).float(), dim=-1).cpu())
        return torch.cat(features)

    def encode_texts(self, texts: Sequence[str]) -> Tensor:
        """L2-normalised text features ``[N, D]`` (float32, on CPU); ``[0, D]`` for no texts."""
        texts = check_texts(_as_batch(texts, "texts"), "texts", allow_empty=True)
        if not texts:
            return torch.empty(0, self.feature_dim)
        features = []
        with torch.no_grad(), self._autocast():
            for start in range(0, len(texts), self.batch_size):
                tokens = self.tokenizer(texts[start : start + self.batch_size]).to(self.device)
                features.append(F.normalize(self.model.encode_text(tokens).float(), dim=-1).cpu())
        return torch.cat(features)


def _as_batch(items: Any, argument: str) -> list[Any]:
    """``items`` as a list: a sequence, or a ``[N, C, H, W]`` tensor or array. A single string
    or image is refused, so that it is not read as a batch of characters or rows."""
    if isinstance(items, (Tensor, np.ndarray)) and items.ndim == 4:
        return list(items)
    if isinstance(items, (str, bytes, Image.Image, Tensor, np.ndarray)) or not isinstance(
        items, Sequence
    ):
        raise TypeError(
            f"{argument} must be a list, got {type(items).__name__}; wrap a single one in [...]"
        )
    return list(items)
