"""A caption editor over any transformers causal language model, and its fine-tuning."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from instructedit._checks import check_counts
from instructedit._inputs import check_positive_int
from instructedit.captions._format import (
    END,
    CaptionEdit,
    Rejection,
    check_captions,
    format_completion,
    format_prompt,
    judge_completion,
    read_caption_edits,
)
from instructedit.seeding import seeded

__all__ = ["LanguageModelCaptionEditor", "SamplingConfig", "finetune_caption_editor"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingConfig:
    """How :class:`LanguageModelCaptionEditor` samples (the paper's GPT-3 settings by default)."""

    temperature: float = 0.7
    """Sampling temperature (paper: 0.7)."""
    top_p: float = 1.0
    """Nucleus sampling mass (paper: 1.0)."""
    repetition_penalty: float = 1.1
    """transformers' multiplicative repetition penalty, standing in for GPT-3's additive
    frequency penalty of 0.1."""
    max_new_tokens: int = 256
    """Longest completion (paper: 256 tokens)."""
    retries: int = 3
    """Attempts per caption before it is rejected (paper: 3)."""

    def __post_init__(self) -> None:
        for name in ("temperature", "top_p", "repetition_penalty"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
        if not self.temperature > 0 or not math.isfinite(self.temperature):
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not self.repetition_penalty >= 1:
            raise ValueError(f"repetition_penalty must be >= 1, got {self.repetition_penalty}")
        check_counts(self, ("max_new_tokens", "retries"))


class LanguageModelCaptionEditor:
    """Generates caption edits with a fine-tuned causal language model (GPT-3's part in the paper).

    The model sees ``caption + "\\n##\\n"`` and completes ``instruction + "\\n%%\\n" + edited
    caption + "\\nEND"``. Outputs that do not parse, or whose edited caption equals the input
    (ignoring case and ``.!?``), are retried up to ``sampling.retries`` times, then rejected with
    the reason. Captions are processed ``batch_size`` at a time with left padding.

    Args:
        model: a transformers causal LM (e.g. fine-tuned with :func:`finetune_caption_editor`).
        tokenizer: its tokenizer; a pad token is required (the EOS token is used if absent).
        sampling: sampling settings.
        batch_size: captions per ``generate`` call.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        sampling: SamplingConfig | None = None,
        batch_size: int = 16,
    ) -> None:
        check_positive_int(batch_size, "batch_size")
        if sampling is not None and not isinstance(sampling, SamplingConfig):
            raise TypeError(f"sampling must be a SamplingConfig, got {type(sampling).__name__}")
        self.model = model
        self.tokenizer = tokenizer
        self.sampling = sampling or SamplingConfig()
        self.batch_size = batch_size

    def _generate(self, captions: Sequence[str]) -> list[str]:
        tokenizer = self.tokenizer
        previous_side = tokenizer.padding_side
        tokenizer.padding_side = "left"  # decoder-only models continue from the right edge
        try:
            batch = tokenizer(
                [format_prompt(c) for c in captions], return_tensors="pt", padding=True
            )
        finally:
            tokenizer.padding_side = previous_side
        device = next(self.model.parameters()).device
        batch = {name: tensor.to(device) for name, tensor in batch.items()}
        pad = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        with torch.no_grad():
            generated = self.model.generate(
                **batch,
                do_sample=True,
                temperature=self.sampling.temperature,
                top_p=self.sampling.top_p,
                repetition_penalty=self.sampling.repetition_penalty,
                max_new_tokens=self.sampling.max_new_tokens,
                stop_strings=[END],
                tokenizer=tokenizer,
                pad_token_id=pad,
            )
        new_tokens = generated[:, batch["input_ids"].shape[1] :]
        return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)

    def edit(self, captions: Sequence[str]) -> list[CaptionEdit | Rejection]:
        """Returns one edit or rejection per caption, in order."""
        captions = check_captions(captions)
        results: list[CaptionEdit | Rejection | None] = [None] * len(captions)
        last: dict[int, Rejection] = {}
        for index, caption in enumerate(captions):
            if not caption.strip():
                results[index] = Rejection(caption, "empty")
        for _ in range(self.sampling.retries):
            pending = [i for i, r in enumerate(results) if r is None]
            if not pending:
                break
            for start in range(0, len(pending), self.batch_size):
                chunk = pending[start : start + self.batch_size]
                for index, text in zip(
                    chunk, self._generate([captions[i] for i in chunk]), strict=True
                ):
                    judged = judge_completion(captions[index], text)
                    if isinstance(judged, Rejection):
                        last[index] = judged
                    else:
                        results[index] = judged
        return [r if r is not None else last[i] for i, r in enumerate(results)]


def finetune_caption_editor(
    model: Any,
    tokenizer: Any,
    examples: str | Path | Iterable[CaptionEdit],
    *,
    epochs: int = 1,
    learning_rate: float = 5e-5,
    batch_size: int = 8,
    max_length: int = 256,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Fine-tunes a causal LM on caption edits in the official format; returns the step losses.

    The loss covers the completion only (``instruction + "\\n%%\\n" + output + "\\nEND"`` and the
    end-of-text token), not the prompt, as OpenAI's prompt/completion fine-tuning does.

    Args:
        model: a transformers causal LM, trained in place.
        tokenizer: its tokenizer (needs an EOS token).
        examples: a JSONL file of ``{"input" (or "caption"), "edit", "output"}`` rows, or edits.
        epochs: passes over the data (the paper: 1 epoch of GPT-3 davinci).
        learning_rate: AdamW learning rate.
        batch_size: examples per step.
        max_length: longest tokenized example; longer ones raise an error naming them.
        seed: shuffling and dropout seed.
        progress: show a progress bar.
    """
    edits = (
        list(read_caption_edits(examples)) if isinstance(examples, (str, Path)) else list(examples)
    )
    if not edits:
        raise ValueError("examples must hold at least one caption edit")
    if tokenizer.eos_token is None:
        raise ValueError("the tokenizer needs an end-of-text token")
    sequences: list[tuple[list[int], int]] = []
    for number, edit in enumerate(edits):
        prompt = tokenizer(format_prompt(edit.input), add_special_tokens=False).input_ids
        completion = tokenizer(
            format_completion(edit.instruction, edit.output) + tokenizer.eos_token,
            add_special_tokens=False,
        ).input_ids
        if len(prompt) + len(completion) > max_length:
            raise ValueError(
                f"example {number} ({edit.input[:40]!r}…) is longer than max_length={max_length} tokens"
            )
        sequences.append((prompt + completion, len(prompt)))
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    order = random.Random(seed)
    losses: list[float] = []
    model.train()
    steps = epochs * math.ceil(len(sequences) / batch_size)
    with seeded(seed), tqdm(total=steps, disable=not progress, desc="fine-tuning") as bar:
        for _ in range(epochs):
            shuffled = sequences[:]
            order.shuffle(shuffled)
            for start in range(0, len(shuffled), batch_size):
                chunk = shuffled[start : start + batch_size]
                width = max(len(ids) for ids, _ in chunk)
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                labels = torch.full((len(chunk), width), -100, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, (tokens, prompt_length) in enumerate(chunk):
                    ids[row, : len(tokens)] = torch.tensor(tokens)
                    labels[row, prompt_length : len(tokens)] = torch.tensor(tokens[prompt_length:])
                    mask[row, : len(tokens)] = 1
                loss = model(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    labels=labels.to(device),
                ).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.item())
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return losses
