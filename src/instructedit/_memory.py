"""diffusers' memory tools for instructedit's pipelines, with diffusers' names and semantics.

VAE tiling and slicing are the VAE's own switches (``AutoencoderKL.enable_tiling`` /
``enable_slicing``), so a pipeline's :meth:`to_diffusers` shares them. Offloading installs
accelerate's hooks on the modules themselves: model CPU offload moves each whole model to the
execution device when it runs and the previous one back (``text_encoder → unet → vae``, as
diffusers chains them); sequential CPU offload keeps every weight on the CPU and moves each
submodule's weights only for its forward. Attention slicing computes attention a few heads at
a time (for machines where PyTorch's scaled-dot-product attention is not available or not
memory-efficient).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import torch

__all__ = ["MemoryTools", "module_device"]

logger = logging.getLogger(__name__)


def module_device(module: Any) -> torch.device:
    """Where ``module`` computes: the execution device of its (or its first submodule's)
    offload hook, else its weights' device."""
    if any(hasattr(sub, "_hf_hook") for sub in (module, *module.children())):
        for sub in module.modules():  # sequential offload hooks the leaves, not the top
            device = getattr(getattr(sub, "_hf_hook", None), "execution_device", None)
            if device is not None:
                return (
                    torch.device("cuda", device)
                    if isinstance(device, int)
                    else torch.device(device)
                )
    return next(module.parameters()).device


class MemoryTools:
    """The memory switches of a pipeline holding ``unet``, ``vae`` and ``text_encoder``."""

    unet: Any
    vae: Any
    text_encoder: Any
    _offload: Literal["model", "sequential"] | None = None
    _offload_device: torch.device | None = None
    _offload_hooks: list[Any] | None = None

    # ---------------------------------------------------------------------------- devices

    @property
    def device(self) -> torch.device:
        """Where the pipeline computes: the UNet's device, or the execution device when offloaded."""
        if self._offload_device is not None:
            return self._offload_device
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The UNet's dtype."""
        return next(self.unet.parameters()).dtype

    def _check_not_offloaded(self, action: str) -> None:
        if self._offload is not None:
            raise RuntimeError(
                f"cannot {action}: the pipeline is offloaded ({self._offload} CPU offload to "
                f"{self._offload_device}); its hooks move the models. Call remove_offload() first"
            )

    # ------------------------------------------------------------------------------- VAE

    def enable_vae_tiling(self) -> None:
        """Encodes and decodes large images tile by tile (overlapping tiles blended), so the
        VAE's memory stays that of one tile; outputs differ slightly from untiled ones at the
        seams. Images no larger than one tile (the VAE's ``sample_size``) are unaffected."""
        self.vae.enable_tiling()

    def disable_vae_tiling(self) -> None:
        """Encodes and decodes whole images again."""
        self.vae.disable_tiling()

    def enable_vae_slicing(self) -> None:
        """Encodes and decodes a batch one image at a time (equal outputs, less memory)."""
        self.vae.enable_slicing()

    def disable_vae_slicing(self) -> None:
        """Encodes and decodes a batch at once again."""
        self.vae.disable_slicing()

    # ------------------------------------------------------------------------- attention

    def enable_attention_slicing(self, slice_size: str | int | None = "auto") -> None:
        """Computes the UNet's attention in slices of heads: ``"auto"`` (half the heads at a
        time), ``"max"`` (one at a time) or a number of slices. With PyTorch 2's
        scaled-dot-product attention on CUDA this saves little and costs speed; it helps where
        attention materialises the whole score matrix. Replaces the UNet's attention processors.
        """
        self.unet.set_attention_slice(slice_size)

    def disable_attention_slicing(self) -> None:
        """Computes attention whole again (PyTorch's scaled-dot-product attention)."""
        self.unet.set_attention_slice(None)

    # --------------------------------------------------------------------------- offload

    def _execution_device(self, gpu_id: int | None, device: str | torch.device) -> torch.device:
        resolved = torch.device(device)
        if gpu_id is not None:
            resolved = torch.device(resolved.type, gpu_id)
        if resolved.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                "CPU offload moves models to a CUDA device, and none is available; pass "
                "device='cpu' to install the hooks on the CPU (for testing)"
            )
        return resolved

    def _models(self) -> list[Any]:
        second = getattr(self, "text_encoder_2", None)  # SDXL's
        return [m for m in (self.text_encoder, second, self.unet, self.vae) if m is not None]

    def enable_model_cpu_offload(
        self, gpu_id: int | None = None, device: str | torch.device = "cuda"
    ) -> None:
        """Keeps the models on the CPU and moves each to ``device`` only while it runs (text
        encoder, then UNet, then VAE; each moves the previous one back). Saves most of the
        weights' memory at a small cost in speed. Installs accelerate's hooks; undo with
        :meth:`remove_offload`."""
        from accelerate import cpu_offload_with_hook

        execution = self._execution_device(gpu_id, device)
        self.remove_offload()
        hook = None
        hooks = []
        for model in self._models():
            model.to("cpu")
            _, hook = cpu_offload_with_hook(model, execution, prev_module_hook=hook)
            hooks.append(hook)
        self._offload, self._offload_device, self._offload_hooks = "model", execution, hooks

    def enable_sequential_cpu_offload(
        self, gpu_id: int | None = None, device: str | torch.device = "cuda"
    ) -> None:
        """Keeps every weight on the CPU and moves each submodule's weights to ``device`` only
        for its forward: the least memory, and much slower. Installs accelerate's hooks; undo
        with :meth:`remove_offload`."""
        from accelerate import cpu_offload

        execution = self._execution_device(gpu_id, device)
        self.remove_offload()
        for model in self._models():
            model.to("cpu")
            # Buffers stay where they are unless the model holds parameters itself (as
            # diffusers does): non-persistent buffers have no copy in the offloaded weights.
            cpu_offload(
                model, execution_device=execution, offload_buffers=len(model._parameters) > 0
            )
        self._offload, self._offload_device, self._offload_hooks = "sequential", execution, []

    def maybe_free_model_hooks(self) -> None:
        """With model CPU offload, moves the last model that ran back to the CPU (each call of
        the pipeline does this at its end)."""
        for hook in self._offload_hooks or []:
            hook.offload()

    def remove_offload(self) -> None:
        """Removes the offload hooks: the models stay on the CPU until moved with ``to``."""
        if self._offload is None:
            return
        from accelerate.hooks import remove_hook_from_module

        for model in self._models():
            remove_hook_from_module(model, recurse=True)  # puts offloaded weights back
        self._offload, self._offload_device, self._offload_hooks = None, None, None
