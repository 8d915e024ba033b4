"""``instructedit edit-real``: a real image edited from its caption, in one command."""

from __future__ import annotations

from pathlib import Path

from instructedit.attention import AttentionController
from instructedit.p2p._pipeline import PromptToPrompt, RealEditMethod
from instructedit.p2p._unified import UnifiedAttentionControl, _fraction

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
    cross_replace_steps: float = 0.7,
    self_replace_steps: float = 0.3,
    blend: str = "",
    keep: str = "",
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
        cross_replace_steps: share of the steps whose edit refines its cross-attention from the
            source's.
        self_replace_steps: share of the steps whose edit takes the source's self-attention
            (virtual inversion: before mutual self-attention; the inversion methods: in layers
            of at most 16 × 16 queries, as google's notebooks).
        blend: words of the target caption the edit may change (InfEdit's target blend, virtual
            inversion): elsewhere the image is kept.
        keep: words of both captions whose region stays the source's (InfEdit's source blend,
            virtual inversion).
    """
    if not image.is_file():
        raise FileNotFoundError(f"image: no such file: {image}")
    if output.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise ValueError(f"output must end in .png, .jpg or .jpeg, got {output}")
    import torch

    from instructedit._launch import job_state

    if method != "virtual" and (blend or keep):
        raise ValueError(f"blend and keep need method='virtual', got method={method!r}")
    for name, share in (
        ("cross_replace_steps", cross_replace_steps),
        ("self_replace_steps", self_replace_steps),
    ):
        _fraction(name, share)  # before the model loads
    device = job_state().device  # a GPU when there is one
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    p2p = PromptToPrompt.from_pretrained(model, torch_dtype=dtype).to(device)
    controller: AttentionController
    if method == "virtual":
        # InfEdit's unified attention control, its settings as the command's.
        controller = UnifiedAttentionControl.from_prompts(
            [source],
            [target],
            p2p.tokenizer,
            encode_text=p2p.encode_text,
            local_words=[blend or None],
            mutual_words=[keep or None],
            cross_replace_steps=cross_replace_steps,
            self_replace_steps=self_replace_steps,
        )
    else:
        controller = p2p._cross_attention_control(
            source, target, [cross_replace_steps], steps, self_replace_steps, 16, None
        )
    result = p2p.edit_real(
        image,
        source,
        target,
        method=method,
        controller=controller,
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
