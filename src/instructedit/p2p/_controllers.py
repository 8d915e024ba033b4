"""Prompt-to-Prompt attention controllers (Hertz et al. 2022) and the InstructPix2Pix data recipe.

Every edit is computed with scaled-dot-product attention on substituted queries/keys or
transformed values; self-attention probabilities are never materialised:

* self-attention injection: ``softmax(Q_s K_sᵀ) V_t = SDPA(Q_s, K_s, V_t)``;
* cross-attention edits: the edited probabilities are ``P_s W_s + P_t W_t`` for key-space
  matrices ``W`` (a token mapper, a per-token weight), so the output is
  ``SDPA(Q_s, K_s, W_s V_t) + SDPA(Q_t, K_t, W_t V_t)``.

A branch of the UNet batch holds ``[sources…, targets…]`` (``num_pairs`` each); sources always
attend normally. Cross-attention maps are materialised only for an :class:`AttentionStore` or a
:class:`LocalBlend` (queries × 77 keys, cheap).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from instructedit.attention import AttentionContext, sdpa
from instructedit.p2p._alignment import (
    edited_words,
    refinement_mapper,
    swap_mapper,
    word_token_indices,
)
from instructedit.p2p._schedules import (
    CrossAttentionSchedule,
    StepWindow,
    as_window,
    check_fractions,
)

__all__ = [
    "AttentionStore",
    "CrossAttentionEdit",
    "CrossEdit",
    "LocalBlend",
    "Refine",
    "Reweight",
    "SelfAttentionInjection",
    "WordSwap",
    "injection_active",
]


def _prompt_lists(
    sources: Sequence[str], targets: Sequence[str], what: str
) -> tuple[list[str], list[str]]:
    """Checks the per-pair prompt lists of a controller's ``from_*`` constructor: lists of
    strings, one of each per pair, at least one pair."""
    for name, prompts in (("sources", sources), ("targets", targets)):
        if isinstance(prompts, str) or not isinstance(prompts, Sequence):
            raise TypeError(
                f"{what}: {name} must be a list of prompts, one per pair, got "
                f"{type(prompts).__name__} {prompts!r}"
            )
        for index, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise TypeError(
                    f"{what}: {name}[{index}] must be a str, got {type(prompt).__name__}"
                )
    if not sources:
        raise ValueError(f"{what}: sources is empty; pass one source and one target per pair")
    if len(sources) != len(targets):
        raise ValueError(
            f"{what} needs as many sources as targets, got {len(sources)} sources and "
            f"{len(targets)} targets"
        )
    return list(sources), list(targets)


def _rows(tensor: Tensor, context: AttentionContext) -> list[tuple[str, Tensor, Tensor]]:
    """Splits ``[B, …]`` into (branch, sources, targets) chunks."""
    chunks = tensor.chunk(len(context.branches))
    pairs = context.num_pairs
    return [
        (name, chunk[:pairs], chunk[pairs:])
        for name, chunk in zip(context.branches, chunks, strict=True)
    ]


class _Output:
    """The attention output, filled row block by row block (no concatenation copy at the end)."""

    def __init__(self, query: Tensor, value: Tensor) -> None:
        self.tensor = query.new_empty((*query.shape[:-1], value.shape[-1]))
        self._cursor = 0

    def put(self, *blocks: Tensor) -> None:
        for block in blocks:
            rows = block.shape[0]
            self.tensor[self._cursor : self._cursor + rows] = block
            self._cursor += rows


def _source_attention(q_s: Tensor, k_s: Tensor, v_s: Tensor, v_t: Tensor) -> tuple[Tensor, Tensor]:
    """Returns ``(SDPA(Q_s, K_s, V_s), SDPA(Q_s, K_s, V_t))`` in one fused call.

    Stacked along the batch rather than concatenating the values along features: torch's fused
    CPU and flash kernels need equal head dims for Q, K and V and otherwise fall back to the
    math kernel, which materialises the attention matrix.
    """
    both = sdpa(torch.cat([q_s, q_s]), torch.cat([k_s, k_s]), torch.cat([v_s, v_t]))
    source, injected = both.chunk(2)
    return source, injected


def attention_probabilities(query: Tensor, key: Tensor) -> Tensor:
    """``softmax(Q Kᵀ / √d)`` in at least float32 (a half-precision product can overflow), for
    the cross-attention maps controllers record: ``[..., N, S]``."""
    dtype = torch.promote_types(query.dtype, torch.float32)
    query, key = query.to(dtype), key.to(dtype)
    return torch.softmax((query * query.shape[-1] ** -0.5) @ key.transpose(-1, -2), dim=-1)


def injection_active(until: Tensor, step: int, num_steps: int) -> Tensor:
    """Pairs injected at ``step``: the official rule ``step / (num_steps − 1) < until``."""
    return until > step / max(num_steps - 1, 1)


class SelfAttentionInjection:
    """The control of the official InstructPix2Pix data generator.

    For the first fraction ``until`` of the steps the target attends with the source's
    self-attention, ``softmax(Q_src K_srcᵀ) V_tgt``, in every self-attention layer (optionally only
    layers with at most ``max_resolution²`` queries, as google/prompt-to-prompt). Cross-attention
    is untouched, so the text still changes what is drawn while the layout follows the source.

    Args:
        until: fraction p of the steps, one for all pairs or one per pair (the paper draws
            p ~ U[0.1, 0.9] per sample). Step i is injected while ``i / (n − 1) < p``.
        max_resolution: only layers whose query side is at most this (``None``: all layers).
        branches: guidance branches to control (``None``: all, as the official code does).
    """

    def __init__(
        self,
        until: float | Sequence[float] = 0.5,
        *,
        max_resolution: int | None = None,
        branches: Sequence[str] | None = None,
    ) -> None:
        items = until if isinstance(until, Sequence) and not isinstance(until, str) else [until]
        if any(isinstance(v, bool) or not isinstance(v, Real) for v in items):
            raise TypeError(f"until must be a fraction or a list of fractions, got {until!r}")
        values = [float(v) for v in items]
        if not values:
            raise ValueError("until is empty; pass a fraction or one per pair")
        check_fractions(values, "until")
        if max_resolution is not None and (
            isinstance(max_resolution, bool)
            or not isinstance(max_resolution, int)
            or max_resolution < 1
        ):
            raise ValueError(f"max_resolution must be >= 1 or None, got {max_resolution}")
        # float64, so the comparison with step / (n − 1) is exact for fractions like 0.1.
        self.until = torch.tensor(values, dtype=torch.float64)
        self.max_resolution = max_resolution
        self.branches = None if branches is None else tuple(branches)

    def _until(self, num_pairs: int) -> Tensor:
        if self.until.numel() == 1:
            return self.until.expand(num_pairs)
        if self.until.numel() != num_pairs:
            raise ValueError(f"until has {self.until.numel()} values for {num_pairs} prompt pairs")
        return self.until

    def controls(self, context: AttentionContext) -> bool:
        if context.is_cross:
            return False
        if self.max_resolution is not None and max(context.resolution) > self.max_resolution:
            return False
        if self.branches is not None and not set(self.branches) & set(context.branches):
            return False
        return bool(
            injection_active(self._until(context.num_pairs), context.step, context.num_steps).any()
        )

    def attend(
        self, query: Tensor, key: Tensor, value: Tensor, context: AttentionContext
    ) -> Tensor:
        active = injection_active(self._until(context.num_pairs), context.step, context.num_steps)
        active = active.to(query.device).view(-1, 1, 1, 1)
        output = _Output(query, value)
        for (name, q_s, q_t), (_, k_s, k_t), (_, v_s, v_t) in zip(
            _rows(query, context), _rows(key, context), _rows(value, context), strict=True
        ):
            if self.branches is not None and name not in self.branches:
                output.put(sdpa(q_s, k_s, v_s), sdpa(q_t, k_t, v_t))
                continue
            source, injected = _source_attention(q_s, k_s, v_s, v_t)
            if not bool(active.all()):
                injected = torch.where(active, injected, sdpa(q_t, k_t, v_t))
            output.put(source, injected)
        return output.tensor

    def step_end(self, latents: Tensor, step: int, num_steps: int) -> Tensor:
        return latents


class CrossEdit(Protocol):
    """A cross-attention edit: key-space matrices with ``P_new = P_src W_src + P_tgt W_tgt``."""

    def weights(self) -> tuple[Tensor, Tensor]:
        """Returns ``(W_src, W_tgt)``, each ``[pairs, S, S]``."""
        ...


@dataclass(frozen=True)
class WordSwap:
    """Replace: ``P_new = P_src M`` with a token mapper per pair (google's ``AttentionReplace``)."""

    mapper: Tensor
    """``[pairs, S, S]``: source token → target token weights."""

    @classmethod
    def from_prompts(
        cls, sources: Sequence[str], targets: Sequence[str], tokenizer: Any
    ) -> WordSwap:
        """Builds the mappers of prompt pairs with equal word counts."""
        sources, targets = _prompt_lists(sources, targets, "WordSwap.from_prompts")
        length = tokenizer.model_max_length
        return cls(
            torch.stack(
                [
                    swap_mapper(s, t, tokenizer, length)
                    for s, t in zip(sources, targets, strict=True)
                ]
            )
        )

    def weights(self) -> tuple[Tensor, Tensor]:
        return self.mapper, torch.zeros_like(self.mapper)


@dataclass(frozen=True)
class Refine:
    """Refinement: aligned tokens take the source's map, new tokens keep their own
    (google's ``AttentionRefine``): ``P_new[:, j] = a_j P_src[:, m(j)] + (1 − a_j) P_tgt[:, j]``."""

    mapper: Tensor
    """``[pairs, S]`` long: aligned source position of each target position."""
    alphas: Tensor
    """``[pairs, S]``: 1 where aligned, 0 for inserted tokens."""

    @classmethod
    def from_prompts(cls, sources: Sequence[str], targets: Sequence[str], tokenizer: Any) -> Refine:
        """Aligns each pair's tokens with Needleman–Wunsch."""
        sources, targets = _prompt_lists(sources, targets, "Refine.from_prompts")
        length = tokenizer.model_max_length
        pairs = [
            refinement_mapper(s, t, tokenizer, length)
            for s, t in zip(sources, targets, strict=True)
        ]
        return cls(torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs]))

    def weights(self) -> tuple[Tensor, Tensor]:
        pairs, length = self.mapper.shape
        selection = torch.zeros(pairs, length, length)
        selection.scatter_(1, self.mapper.unsqueeze(1), 1.0)  # selection[p, m(j), j] = 1
        w_src = selection * self.alphas.unsqueeze(1)
        w_tgt = torch.diag_embed(1.0 - self.alphas)
        return w_src, w_tgt


@dataclass(frozen=True)
class Reweight:
    """Re-weighting: multiplies the attention of chosen tokens (google's ``AttentionReweight``).

    ``P_new = R(P_src, P_tgt) diag(e)`` where R is ``base``'s edit, or ``P_src`` without one. No
    renormalisation, as the paper. Chain it on a :class:`Refine` or :class:`WordSwap`.
    """

    equalizer: Tensor
    """``[pairs, S]``: multiplier per target token (1 elsewhere)."""
    base: CrossEdit | None = None
    """The edit re-weighted, or ``None`` for the source's attention."""

    @classmethod
    def from_words(
        cls,
        targets: Sequence[str],
        words: dict[str, float],
        tokenizer: Any,
        base: CrossEdit | None = None,
    ) -> Reweight:
        """Weights ``{word: factor}`` in each target prompt; a word absent from a prompt is an error."""
        _prompt_lists(targets, targets, "Reweight.from_words")
        if not isinstance(words, dict) or not words:
            raise ValueError(f"words must be a non-empty {{word: factor}} dict, got {words!r}")
        for word, factor in words.items():
            if isinstance(factor, bool) or not isinstance(factor, (int, float)):
                raise TypeError(f"words[{word!r}] must be a number, got {factor!r}")
            if not math.isfinite(factor):
                raise ValueError(f"words[{word!r}] must be a finite number, got {factor}")
        length = tokenizer.model_max_length
        equalizer = torch.ones(len(targets), length)
        for row, target in enumerate(targets):
            for word, factor in words.items():
                equalizer[row, word_token_indices(target, word, tokenizer)] = float(factor)
        return cls(equalizer, base)

    def weights(self) -> tuple[Tensor, Tensor]:
        if self.base is None:
            w_src = torch.diag_embed(torch.ones_like(self.equalizer))
            w_tgt = torch.zeros_like(w_src)
        else:
            w_src, w_tgt = self.base.weights()
        scale = self.equalizer.unsqueeze(1)  # right-multiplying by diag(e) scales columns
        return w_src * scale, w_tgt * scale


class AttentionStore:
    """Accumulates cross-attention maps (averaged over heads) for visualisation and blending.

    Maps are the prompts' own maps in the conditional branch (``branch``), summed over steps per
    (place, resolution); :meth:`aggregate` averages them.
    """

    def __init__(self, branch: str = "cond") -> None:
        self.branch = branch
        self.totals: dict[tuple[str, tuple[int, int]], Tensor] = {}
        self.counts: dict[tuple[str, tuple[int, int]], int] = {}
        self.current: dict[tuple[int, int], list[Tensor]] = {}
        self._step = -1

    def record(self, probabilities: Tensor, context: AttentionContext) -> None:
        """Adds one layer's maps ``[rows, N, S]`` (a branch's rows, heads averaged)."""
        if context.step != self._step:
            self.current = {}
            self._step = context.step
        key = (context.place, context.resolution)
        self.current.setdefault(context.resolution, []).append(probabilities)
        if key in self.totals:
            self.totals[key] = self.totals[key] + probabilities
        else:
            self.totals[key] = probabilities.clone()
        self.counts[key] = self.counts.get(key, 0) + 1

    def aggregate(
        self, resolution: tuple[int, int], places: Sequence[str] = ("down", "up")
    ) -> Tensor:
        """Mean map ``[rows, h, w, S]`` at ``resolution`` over the given places and all steps."""
        maps = [
            self.totals[(p, resolution)] / self.counts[(p, resolution)]
            for p in places
            if (p, resolution) in self.totals
        ]
        if not maps:
            available = sorted({r for _, r in self.totals})
            raise ValueError(
                f"no cross-attention maps at resolution {resolution}; stored: {available}"
            )
        mean = torch.stack(maps).mean(0)
        return mean.view(mean.shape[0], resolution[0], resolution[1], mean.shape[-1])

    def resolutions(self) -> list[tuple[int, int]]:
        """Resolutions with stored maps, largest first."""
        return sorted({r for _, r in self.totals}, key=lambda r: -r[0] * r[1])

    # As a controller on its own: records every row of its branch, changes nothing.

    def controls(self, context: AttentionContext) -> bool:
        return context.is_cross and self.branch in context.branches

    def attend(
        self, query: Tensor, key: Tensor, value: Tensor, context: AttentionContext
    ) -> Tensor:
        rows = query.shape[0] // len(context.branches)
        start = context.branches.index(self.branch) * rows
        q, k = query[start : start + rows], key[start : start + rows]
        self.record(attention_probabilities(q, k).mean(1), context)
        return sdpa(query, key, value)

    def step_end(self, latents: Tensor, step: int, num_steps: int) -> Tensor:
        return latents


@dataclass
class LocalBlend:
    """Keeps the target's latents equal to the source's outside the edited region.

    Hertz et al. §3.3: the mask is the union of the chosen words' cross-attention maps in the
    source and the target (mean over layers at ``resolution``, 3×3 max-pool, normalised to max 1,
    ``> threshold``), and ``x_tgt ← x_src + mask ⊙ (x_tgt − x_src)`` after each step from
    ``start`` on.

    Attributes:
        source_tokens: per pair, positions of the chosen words in the source prompt.
        target_tokens: per pair, positions of the chosen words in the target prompt.
        threshold: mask threshold (0.3 in the paper's notebooks).
        start: fraction of the steps before blending starts.
        resolution: side of the maps used (16 for Stable Diffusion at 512²).
    """

    source_tokens: list[list[int]]
    target_tokens: list[list[int]]
    threshold: float = 0.3
    start: float = 0.2
    resolution: int = 16

    def __post_init__(self) -> None:
        if len(self.source_tokens) != len(self.target_tokens) or not self.source_tokens:
            raise ValueError(
                "source_tokens and target_tokens must hold one token list per pair each, got "
                f"{len(self.source_tokens)} and {len(self.target_tokens)}"
            )
        for name, value in (("threshold", self.threshold), ("start", self.start)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number, got {value!r}")
        # NaN fails both; a threshold of 1 leaves an empty mask.
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {self.threshold}")
        if not 0.0 <= self.start <= 1.0:
            raise ValueError(f"start must be a fraction in [0, 1], got {self.start}")
        if (
            isinstance(self.resolution, bool)
            or not isinstance(self.resolution, int)
            or self.resolution < 1
        ):
            raise ValueError(f"resolution must be an int >= 1, got {self.resolution!r}")

    @classmethod
    def from_words(
        cls,
        sources: Sequence[str],
        targets: Sequence[str],
        words: Sequence[tuple[str, str]],
        tokenizer: Any,
        **kwargs: Any,
    ) -> LocalBlend:
        """``words``: per pair, (word in the source, word in the target) to blend around."""
        sources, targets = _prompt_lists(sources, targets, "LocalBlend.from_words")
        if len(words) != len(sources):
            raise ValueError(
                f"local blend needs one (source word, target word) per pair, got {len(words)} "
                f"for {len(sources)} pairs"
            )
        return cls(
            [word_token_indices(s, w[0], tokenizer) for s, w in zip(sources, words, strict=True)],
            [word_token_indices(t, w[1], tokenizer) for t, w in zip(targets, words, strict=True)],
            **kwargs,
        )

    @classmethod
    def from_edits(
        cls,
        sources: Sequence[str],
        targets: Sequence[str],
        tokenizer: Any,
        **kwargs: Any,
    ) -> LocalBlend:
        """Blends around the words each edit changes (:func:`~instructedit.p2p.edited_words`):
        the replaced words and the noun after them, the removed words in the source, the added
        words in the target."""
        sources, targets = _prompt_lists(sources, targets, "LocalBlend.from_edits")
        source_tokens: list[list[int]] = []
        target_tokens: list[list[int]] = []
        for source, target in zip(sources, targets, strict=True):
            in_source, in_target = edited_words(source, target)
            source_tokens.append(
                [t for w in in_source for t in word_token_indices(source, w, tokenizer)]
            )
            target_tokens.append(
                [t for w in in_target for t in word_token_indices(target, w, tokenizer)]
            )
        return cls(source_tokens, target_tokens, **kwargs)

    def mask(self, store: AttentionStore, latent_size: tuple[int, int]) -> Tensor:
        """Returns the blend mask ``[pairs, 1, h, w]`` from the current step's maps."""
        maps_by_resolution = store.current
        if not maps_by_resolution:
            raise ValueError("local blending needs cross-attention maps of the current step")
        resolution = min(maps_by_resolution, key=lambda r: abs(r[0] - self.resolution))
        maps = torch.stack(maps_by_resolution[resolution]).mean(0)  # [rows, N, S]
        pairs = len(self.source_tokens)
        maps = maps.view(2 * pairs, resolution[0], resolution[1], -1)
        selected = []
        for pair in range(pairs):
            src = maps[pair][..., self.source_tokens[pair]].sum(-1)
            tgt = maps[pairs + pair][..., self.target_tokens[pair]].sum(-1)
            selected.append(torch.stack([src, tgt]))
        stacked = torch.stack(selected).flatten(0, 1).unsqueeze(1)  # [2·pairs, 1, h, w]
        pooled = F.max_pool2d(stacked, 3, stride=1, padding=1)
        resized = F.interpolate(pooled, size=latent_size)
        normalised = resized / resized.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
        binary = normalised.gt(self.threshold).float().view(pairs, 2, 1, *latent_size)
        return binary.amax(dim=1)

    def apply(self, latents: Tensor, store: AttentionStore, step: int, num_steps: int) -> Tensor:
        """Blends ``latents`` ``[2·pairs, C, h, w]`` (sources then targets)."""
        if step < int(self.start * num_steps):
            return latents
        pairs = len(self.source_tokens)
        mask = self.mask(store, tuple(latents.shape[2:])).to(latents.dtype)  # type: ignore[arg-type]
        source, target = latents[:pairs], latents[pairs:]
        return torch.cat([source, source + mask * (target - source)])


class CrossAttentionEdit:
    """google/prompt-to-prompt's ``AttentionControlEdit``: a cross-attention edit blended per step
    and token, source self-attention in a step window, optional local blending and store.

    Args:
        edit: :class:`WordSwap`, :class:`Refine`, :class:`Reweight` (possibly chained), or
            ``None`` for self-attention replacement only.
        cross_alphas: α ``[pairs, steps, S]`` from :class:`CrossAttentionSchedule` (see
            :meth:`for_prompts`).
        self_window: fraction or (start, end) window of steps where targets use the source's
            self-attention (0.4 in the paper's notebooks).
        self_max_resolution: only self-attention layers with side ≤ this (16, as google).
        local_blend: optional :class:`LocalBlend`.
        store: optional :class:`AttentionStore` (created when ``local_blend`` needs one).
        branches: guidance branches edited (``("cond",)``: google edits only the conditional half).
    """

    def __init__(
        self,
        edit: CrossEdit | None,
        cross_alphas: Tensor,
        *,
        self_window: float | tuple[float, float] = 0.4,
        self_max_resolution: int | None = 16,
        local_blend: LocalBlend | None = None,
        store: AttentionStore | None = None,
        branches: Sequence[str] = ("cond",),
    ) -> None:
        start, end = as_window(self_window, "self_replace_steps")
        self.edit = edit
        self.cross_alphas = cross_alphas
        self.self_window = StepWindow(start, end)
        self.self_max_resolution = self_max_resolution
        self.local_blend = local_blend
        self.store = (
            store if store is not None or local_blend is None else AttentionStore(branches[0])
        )
        self.branches = tuple(branches)
        self._weights = edit.weights() if edit is not None else None
        # The edit's matrices on the attention's device and dtype, converted once per run rather
        # than at every cross-attention call.
        self._placed: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}

    @classmethod
    def for_prompts(
        cls,
        edit: CrossEdit | None,
        targets: Sequence[str],
        tokenizer: Any,
        num_steps: int,
        *,
        cross_replace_steps: float
        | tuple[float, float]
        | dict[str, float | tuple[float, float]] = 0.8,
        **kwargs: Any,
    ) -> CrossAttentionEdit:
        """Builds the per-token schedule from google-style ``cross_replace_steps`` (a fraction, a
        window, or ``{"default_": ..., word: ...}``)."""
        if isinstance(cross_replace_steps, dict):
            words = {w: v for w, v in cross_replace_steps.items() if w != "default_"}
            schedule = CrossAttentionSchedule(cross_replace_steps.get("default_", 1.0), words)
        else:
            schedule = CrossAttentionSchedule(cross_replace_steps)
        length = tokenizer.model_max_length
        alphas = torch.stack([schedule.alphas(t, tokenizer, num_steps, length) for t in targets])
        return cls(edit, alphas, **kwargs)

    def _controls_self(self, context: AttentionContext) -> bool:
        if (
            self.self_max_resolution is not None
            and max(context.resolution) > self.self_max_resolution
        ):
            return False
        return self.self_window.contains(context.step, context.num_steps)

    def controls(self, context: AttentionContext) -> bool:
        if not set(self.branches) & set(context.branches):
            return False
        if context.is_cross:
            return self.edit is not None or self.store is not None
        return self._controls_self(context)

    def attend(
        self, query: Tensor, key: Tensor, value: Tensor, context: AttentionContext
    ) -> Tensor:
        output = _Output(query, value)
        for (name, q_s, q_t), (_, k_s, k_t), (_, v_s, v_t) in zip(
            _rows(query, context), _rows(key, context), _rows(value, context), strict=True
        ):
            edited = name in self.branches
            if not context.is_cross:
                if edited:
                    output.put(*_source_attention(q_s, k_s, v_s, v_t))
                else:
                    output.put(sdpa(q_s, k_s, v_s), sdpa(q_t, k_t, v_t))
                continue
            if edited and self.store is not None and name == self.store.branch:
                self._record(torch.cat([q_s, q_t]), torch.cat([k_s, k_t]), context)
            output.put(sdpa(q_s, k_s, v_s))
            if not edited or self._weights is None:
                output.put(sdpa(q_t, k_t, v_t))
                continue
            output.put(self._edited_cross(q_s, k_s, q_t, k_t, v_t, context))
        return output.tensor

    def _edited_cross(
        self,
        q_s: Tensor,
        k_s: Tensor,
        q_t: Tensor,
        k_t: Tensor,
        v_t: Tensor,
        context: AttentionContext,
    ) -> Tensor:
        assert self._weights is not None
        key = (v_t.device, v_t.dtype)
        if key not in self._placed:
            self._placed[key] = (self._weights[0].to(v_t), self._weights[1].to(v_t))
        w_src, w_tgt = self._placed[key]
        alpha = self.cross_alphas[:, min(context.step, self.cross_alphas.shape[1] - 1)].to(
            v_t
        )  # [P, S]
        # Blend per target key token: W' = W diag(α) (+ diag(1 − α) for the target's own map).
        w_src = w_src * alpha.unsqueeze(1)
        w_tgt = w_tgt * alpha.unsqueeze(1) + torch.diag_embed(1.0 - alpha)
        # (P W) V = P (W V): transform the values along the key axis.
        v_src = torch.einsum("psw,phwd->phsd", w_src, v_t)
        v_own = torch.einsum("psw,phwd->phsd", w_tgt, v_t)
        return sdpa(q_s, k_s, v_src) + sdpa(q_t, k_t, v_own)

    def _record(self, query: Tensor, key: Tensor, context: AttentionContext) -> None:
        assert self.store is not None
        self.store.record(attention_probabilities(query, key).mean(1), context)

    def step_end(self, latents: Tensor, step: int, num_steps: int) -> Tensor:
        if self.local_blend is None or self.store is None:
            return latents
        return self.local_blend.apply(latents, self.store, step, num_steps)
