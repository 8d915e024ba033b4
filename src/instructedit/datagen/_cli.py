"""``instructedit generate``: the generation run from files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from instructedit.captions import CaptionEdit, CaptionEditor, Rejection, read_caption_edits
from instructedit.captions._format import check_captions
from instructedit.clip._filter import check_similarity_threshold, check_structure_threshold
from instructedit.data._folder import read_jsonl_file
from instructedit.datagen._images import ImageCaptioner, read_image_captions
from instructedit.datagen._run import (
    GenerationConfig,
    GenerationSummary,
    generate_dataset,
    parse_shard,
)
from instructedit.p2p import PairControl, RealEditMethod

__all__ = ["PrecomputedCaptionEditor", "generate_from_files", "read_captions"]


class PrecomputedCaptionEditor:
    """Looks caption edits up in a table (edits generated earlier, e.g. the released JSONL)."""

    def __init__(self, edits: dict[str, CaptionEdit]) -> None:
        self.edits = edits

    def edit(self, captions: Sequence[str]) -> list[CaptionEdit | Rejection]:
        """Returns the stored edit of each caption, or a ``"no_edit"`` rejection."""
        captions = check_captions(captions)
        return [self.edits.get(c, Rejection(c, "no_edit")) for c in captions]


def read_captions(path: Path) -> tuple[list[str], dict[str, CaptionEdit]]:
    """Reads captions from a text file (one per line) or a JSONL of edits / captions."""
    if not path.is_file():
        raise FileNotFoundError(f"captions: no such file: {path}")
    if path.suffix == ".jsonl":
        rows = list(read_jsonl_file(path))
        if not rows:
            raise ValueError(f"captions: {path} holds no captions")
        if "edit" in rows[0][1]:
            edits = list(read_caption_edits(path))
            return [e.input for e in edits], {e.input: e for e in edits}
        captions = []
        for number, row in rows:
            caption = row.get("caption", row.get("input"))
            if not isinstance(caption, str) or not caption.strip():
                raise ValueError(
                    f"{path}:{number}: field 'caption' (or 'input') is missing or empty"
                )
            captions.append(caption)
        return captions, {}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"captions: {path} is not a UTF-8 text file ({error.reason})") from error
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"captions: {path} holds no captions")
    return lines, {}


def generate_from_files(
    captions: Path,
    output: Path,
    *,
    text_to_image: str,
    clip_model: str = "ViT-L-14",
    clip_pretrained: str | None = "openai",
    language_model: str | None = None,
    chat_model: str | None = None,
    chat_base_url: str | None = None,
    chat_cache: Path | None = None,
    images: bool = False,
    captioner: str | None = None,
    real_method: RealEditMethod = "virtual",
    samples: int = 100,
    keep: int = 4,
    batch_size: int = 4,
    steps: int = 100,
    seed: int = 0,
    shard: str = "0/1",
    min_image_similarity: float = 0.75,
    min_direction_similarity: float = 0.2,
    min_text_similarity: float = 0.2,
    min_structure_similarity: float | None = None,
    scheduler: str | None = "euler_ancestral",
    control: PairControl = "self_attention",
    injection_range: Sequence[float] = (0.1, 0.9),
    guidance_range: Sequence[float] = (7.5, 15.0),
    local_blend: float | None = None,
) -> str:
    """Generates an InstructPix2Pix dataset from captions (stages 1–3) into OUTPUT.

    Args:
        captions: a text file (one caption per line), a JSONL of captions, or a JSONL of caption
            edits ({"input" or "caption", "edit", "output"}) used as they are.
        output: dataset root (official folder layout; rerun to resume).
        text_to_image: Stable Diffusion folder or hub id for Prompt-to-Prompt.
        clip_model: open_clip model name ("ViT-L-14", "local-dir:PATH", ...).
        clip_pretrained: open_clip pretrained tag or checkpoint path.
        language_model: a fine-tuned causal LM folder that writes the caption edits.
        chat_model: instead, a chat model behind an OpenAI-compatible endpoint that writes them
            (its key from OPENAI_API_KEY).
        chat_base_url: the endpoint's base URL up to /v1 (default: OPENAI_BASE_URL, else
            OpenAI's).
        chat_cache: the chat replies' cache, so a rerun requests nothing twice (default:
            OUTPUT/.chat-cache).
        images: read CAPTIONS as real images with captions: a folder (a .txt caption beside
            each image, or a metadata.jsonl of file_name and caption), a JSONL of image paths and
            captions, a parquet with image and caption columns, or a datasets split saved with
            save_to_disk. Each pair then starts from its real image (rows may hold the edit and
            output too).
        captioner: with --images, an image-to-text model (folder or hub id: BLIP, GIT, ...)
            that captions the images that have no caption.
        real_method: with --images, how each image enters the model: virtual inversion
            (InfEdit's, no inversion pass), null-text or DDIM inversion.
        samples: candidate pairs per caption edit.
        keep: pairs kept per caption edit.
        batch_size: candidates rendered at once.
        steps: sampler steps.
        seed: run seed.
        shard: "i/n": handle captions with index = i mod n (combine runs by writing to one OUTPUT).
        min_image_similarity: CLIP image-image threshold.
        min_direction_similarity: CLIP directional threshold.
        min_text_similarity: CLIP image-caption threshold.
        min_structure_similarity: also require the pair to keep the input's edges in place
            (:func:`~instructedit.clip.structure_similarity`, in [0, 1]; beyond the paper).
        scheduler: sampler of the text-to-image model.
        control: Prompt-to-Prompt control of the candidates: the official generator's
            self-attention injection or google's cross-attention edit (with --images and virtual
            inversion: InfEdit's unified attention control, self-attention or cross-attention
            first).
        injection_range: LOW HIGH: the control's strength p ~ U(LOW, HIGH) per candidate.
        guidance_range: LOW HIGH: the text guidance scale ~ U(LOW, HIGH) per candidate.
        local_blend: with the cross-attention control, the mask threshold of a local blend around
            the edited words (google's 0.3).
    """
    ranges = {"injection_range": injection_range, "guidance_range": guidance_range}
    for name, values in ranges.items():
        if len(values) != 2:
            raise ValueError(f"{name} takes two values, LOW HIGH; got {list(values)}")
    config = GenerationConfig(
        samples_per_pair=samples,
        keep_per_pair=keep,
        batch_size=batch_size,
        num_inference_steps=steps,
        seed=seed,
        shard=parse_shard(shard),
        control=control,
        injection_range=(float(injection_range[0]), float(injection_range[1])),
        guidance_range=(float(guidance_range[0]), float(guidance_range[1])),
        local_blend=local_blend,
        real_method=real_method,
    )
    for name, value in (
        ("min_image_similarity", min_image_similarity),
        ("min_direction_similarity", min_direction_similarity),
        ("min_text_similarity", min_text_similarity),
    ):
        check_similarity_threshold(name, value)
    check_structure_threshold(min_structure_similarity)
    if language_model is not None and chat_model is not None:
        raise ValueError("pass --language-model or --chat-model, not both")
    if captioner is not None and not images:
        raise ValueError("--captioner captions real images: pass --images too")
    real_images = None
    if images:
        texts, real_images, precomputed = read_image_captions(
            captions, captioner=ImageCaptioner(captioner) if captioner is not None else None
        )
    else:
        texts, precomputed = read_captions(captions)
    if language_model is None and chat_model is None and not precomputed:
        raise ValueError(
            "captions holds no edits: pass --language-model or --chat-model, or a JSONL with "
            "'edit' and 'output'"
        )
    import torch

    from instructedit._launch import job_state
    from instructedit.clip import ClipDirectionalFilter, ClipScorer
    from instructedit.p2p import PromptToPrompt

    device = job_state().device
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    editor: CaptionEditor
    if language_model is not None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from instructedit.captions import LanguageModelCaptionEditor

        model = AutoModelForCausalLM.from_pretrained(language_model).to(device)
        editor = LanguageModelCaptionEditor(model, AutoTokenizer.from_pretrained(language_model))
    elif chat_model is not None:
        from instructedit.captions import ChatCaptionEditor

        editor = ChatCaptionEditor(
            chat_model,
            base_url=chat_base_url,
            cache=chat_cache if chat_cache is not None else output / ".chat-cache",
        )
    else:
        editor = PrecomputedCaptionEditor(precomputed)
    p2p = PromptToPrompt.from_pretrained(text_to_image, torch_dtype=dtype, scheduler=scheduler).to(
        device
    )
    scorer = ClipScorer.from_open_clip(clip_model, clip_pretrained, device=device)
    clip_filter = ClipDirectionalFilter(
        scorer,
        min_image_similarity,
        min_direction_similarity,
        min_text_similarity,
        min_structure_similarity=min_structure_similarity,
    )
    summary: GenerationSummary = generate_dataset(
        texts,
        output,
        caption_editor=editor,
        p2p=p2p,
        clip_filter=clip_filter,
        config=config,
        images=real_images,
    )
    return str(summary)
