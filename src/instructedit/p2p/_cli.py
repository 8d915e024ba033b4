"""``instructedit edit-real``: a real image edited from its caption, in one command."""

from __future__ import annotations

from pathlib import Path

from instructedit.p2p._pipeline import PromptToPrompt, RealEditMethod

__all__ = ["edit_real_file"]


def edit_real_file(
    image: Path,
    output: Path,
    *,
    source: str,
    target: str,
    model: str,
    method: RealEditMethod = "virtual",
    steps: int = 50,
    guidance_scale: float = 7.5,
    source_guidance_scale: float = 1.0,
    eta: float = 1.0,
    strength: float = 1.0,
    seed: int = 0,
    height: int | None = None,
    width: int | None = None,
) -> str:
    """Edits a real image from its caption with a text-to-image model (no editor needed) and
    writes OUTPUT (the edit) and OUTPUT's stem + "-source" (the image as the model reconstructs
    it).

    Args:
        image: the image file.
        output: the edited image's file (PNG or JPEG by its suffix).
        source: the image's caption.
        target: the caption of the edited image.
        model: a Stable Diffusion 1.x/2.x folder or hub id (text-to-image).
        method: virtual inversion (InfEdit's, no inversion pass), null-text inversion or DDIM
            inversion (which take neither eta, strength, seed nor source_guidance_scale).
        steps: sampler steps.
        guidance_scale: text guidance of the edit.
        source_guidance_scale: text guidance of the source branches (virtual inversion).
        eta: share of fresh noise a step (virtual inversion), in [0, 1].
        strength: share of the schedule run (virtual inversion): lower keeps more of the image.
        seed: seed of the virtual inversion's noise.
        height: resize the image to this height first (a multiple of 8), with width.
        width: resize the image to this width first.
    """
    if not image.is_file():
        raise FileNotFoundError(f"image: no such file: {image}")
    if output.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise ValueError(f"output must end in .png, .jpg or .jpeg, got {output}")
    import torch

    from instructedit._launch import job_state

    device = job_state().device  # a GPU when there is one
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    p2p = PromptToPrompt.from_pretrained(model, torch_dtype=dtype).to(device)
    result = p2p.edit_real(
        image,
        source,
        target,
        method=method,
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        source_guidance_scale=source_guidance_scale,
        eta=eta,
        strength=strength,
        seed=seed,
        height=height,
        width=width,
    )
    assert isinstance(result.source, list)  # PIL images
    assert isinstance(result.target, list)
    output.parent.mkdir(parents=True, exist_ok=True)
    reconstruction = output.with_name(f"{output.stem}-source{output.suffix}")
    result.target[0].save(output)
    result.source[0].save(reconstruction)
    return f"{output}\n{reconstruction}"
