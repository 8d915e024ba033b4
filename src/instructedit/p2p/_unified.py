"""InfEdit's unified attention control (Xu et al., *Inversion-Free Image Editing with Natural
Language*, CVPR 2024, §4) over virtual inversion's three streams: cross-attention refinement,
mutual self-attention and a local blend of three masks.

The UNet batch of :class:`~instructedit.p2p.VirtualInversion` holds, per guidance branch, the
rows ``[sources…, targets…, mutuals…]`` (``num_pairs`` each). Over the fraction ``t`` of the
whole schedule reached after the current step (``(step + 1) / steps``):

* self-attention, every layer and branch: while ``t < self_replace_steps`` the target attends
  with the source's map, ``softmax(Q_s K_sᵀ) V_t``, and the mutual row repeats the source; after
  it, the mutual row attends to the source with the target's queries,
  ``softmax(Q_t K_sᵀ) V_s`` (mutual self-attention);
* cross-attention, conditional branch: while ``t ≤ cross_replace_steps`` the target's map is
  refined from the source's (:class:`~instructedit.p2p.Refine`:
  ``α_j P_s[:, m(j)] + (1 − α_j) P_t[:, j]``);
* local blend, after every step but the first: the refined maps of the source and of the mutual
  row, summed over the steps so far and averaged over the heads of the down and up layers at a
  quarter of the latents' side, give three masks: the target blend (``local`` words, from the
  mutual maps, threshold ``max(temperature / √ᾱ_t, local_threshold)``), where the target keeps
  its own latents and elsewhere takes the mutual row's; the source blend (``mutual`` words, from
  the source maps, ``mutual_threshold``), where it takes the source's; and at the step before
  the last, the words in both, where it takes the mutual row's.

Every output is computed with scaled-dot-product attention. Only cross-attention maps are
materialised (queries × 77 keys, in at least float32), and only with blend words: in the first
step those of every down and up layer of at most 32² queries, then only those of the layers the
blend reads.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from instructedit.attention import AttentionContext, sdpa
from instructedit.p2p._alignment import edited_words, refinement_mapper, word_token_indices
from instructedit.p2p._controllers import Refine, _prompt_lists, attention_probabilities

__all__ = ["UnifiedAttentionControl", "fill_alignment_gaps"]

STREAMS = 3
"""Row blocks per guidance branch: source, target, mutual."""

MAX_BLEND_QUERIES = 32**2
"""Cross-attention layers with more queries are not recorded for the blend (InfEdit's bound)."""


def _fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a fraction in [0, 1], got {value!r}")  # NaN too
    return float(value)


def _token_lists(
    name: str, tokens: Sequence[Sequence[int]] | None, pairs: int, length: int
) -> list[list[int]]:
    if tokens is None:
        return [[] for _ in range(pairs)]
    if len(tokens) != pairs:
        raise ValueError(f"{name} must hold one token list per pair ({pairs}), got {len(tokens)}")
    lists = [sorted({int(t) for t in pair}) for pair in tokens]
    for pair in lists:
        if pair and not (pair[0] > 0 and pair[-1] < length - 1):
            raise ValueError(
                f"{name} holds token positions of the prompt's words, between the start token "
                f"and the last of {length} positions; got {pair}"
            )
    return lists


def _words(value: str | Sequence[str | int] | None, what: str, prompt: str) -> list[str | int]:
    """Words of ``prompt`` (every occurrence) or word indices (that occurrence): a
    space-separated str, or a list of words and indices."""
    if value is None:
        return []
    if isinstance(value, str):
        return list(value.split())
    count = len(prompt.split(" "))
    chosen: list[str | int] = []
    for word in value:
        if isinstance(word, str):
            chosen += word.split()
        elif isinstance(word, int) and not isinstance(word, bool) and 0 <= word < count:
            chosen.append(word)
        else:
            raise ValueError(
                f"{what} holds words or indices of the {count} words of {prompt!r}, got {word!r}"
            )
    return chosen


def _per_pair(name: str, value: Any, pairs: int) -> list[Any]:
    if value is None:
        return [None] * pairs
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != pairs:
        raise ValueError(
            f"{name} must be a list with one entry per pair ({pairs}): the pair's words, a list "
            f"of words and word indices, or None; got {value!r}"
        )
    return list(value)


def fill_alignment_gaps(
    mapper: Tensor,
    alphas: Tensor,
    source_features: Tensor,
    target_features: Tensor,
    target_length: int,
) -> list[tuple[int, int]]:
    """InfEdit's completion of a token alignment (in place): in each run of target tokens with
    no aligned source token, the target token and the source token between the run's aligned
    neighbours whose text-encoder features are most alike (cosine) are aligned, so a swapped
    word ("cat" → "dog") takes its counterpart's map. Returns the (target, source) positions
    aligned. ``*_features``: ``[S, D]`` encodings; ``target_length``: the target's tokens with
    its start and end tokens."""
    added: list[tuple[int, int]] = []
    position = 0
    while position < target_length:
        if alphas[position] != 0:
            position += 1
            continue
        start = position
        while position < target_length and alphas[position] == 0:
            position += 1
        low, high = int(mapper[start - 1]) + 1, int(mapper[min(position, target_length - 1)])
        best: tuple[float, int, int] | None = None
        for target in range(start, position):
            for source in range(low, high):
                similarity = float(
                    F.cosine_similarity(target_features[target], source_features[source], dim=0)
                )
                if best is None or similarity > best[0]:
                    best = (similarity, target, source)
        if best is not None:
            mapper[best[1]], alphas[best[1]] = best[2], 1.0
            added.append((best[1], best[2]))
    return added


class UnifiedAttentionControl:
    """InfEdit's unified attention control for :meth:`~instructedit.p2p.PromptToPrompt.edit_real`
    with ``method="virtual"`` (see the module's docstring); an
    :class:`~instructedit.attention.AttentionController` of the three-stream batch.

    Args:
        refine: the token alignment of each pair (:meth:`Refine.from_prompts`).
        local_tokens: per pair, target token positions of the target blend (the edited region);
            ``None`` or empty: the target is not blended with the mutual row.
        mutual_tokens: per pair, target token positions of the source blend (a region kept from
            the source); ``None`` or empty: none.
        cross_replace_steps: share of the schedule with the refined cross-attention (0.7).
        self_replace_steps: share of the schedule with the source's self-attention in the
            target, before mutual self-attention (0.3).
        local_threshold: floor of the target blend's threshold (0.3).
        mutual_threshold: the source blend's threshold (0.3).
        temperature: the target blend's threshold is ``temperature / √ᾱ_t`` above the floor.
    """

    def __init__(
        self,
        refine: Refine,
        *,
        local_tokens: Sequence[Sequence[int]] | None = None,
        mutual_tokens: Sequence[Sequence[int]] | None = None,
        cross_replace_steps: float = 0.7,
        self_replace_steps: float = 0.3,
        local_threshold: float = 0.3,
        mutual_threshold: float = 0.3,
        temperature: float = 0.15,
    ) -> None:
        if not isinstance(refine, Refine):
            raise TypeError(f"refine must be a Refine, got {type(refine).__name__}")
        self.refine = refine
        pairs, length = refine.mapper.shape
        self.local_tokens = _token_lists("local_tokens", local_tokens, pairs, length)
        self.mutual_tokens = _token_lists("mutual_tokens", mutual_tokens, pairs, length)
        self.cross_replace_steps = _fraction("cross_replace_steps", cross_replace_steps)
        self.self_replace_steps = _fraction("self_replace_steps", self_replace_steps)
        self.local_threshold = _fraction("local_threshold", local_threshold)
        self.mutual_threshold = _fraction("mutual_threshold", mutual_threshold)
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, (int, float))
            or not (temperature >= 0 and math.isfinite(temperature))
        ):
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
        self.temperature = float(temperature)
        # Per pair: the words of both blends, and the source blend's other words.
        self._shared = [
            [t for t in here if t in kept]
            for here, kept in zip(self.local_tokens, self.mutual_tokens, strict=True)
        ]
        self._mutual_only = [
            [t for t in kept if t not in shared]
            for kept, shared in zip(self.mutual_tokens, self._shared, strict=True)
        ]
        self._weights = refine.weights()
        self._placed: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}
        self._skipped = 0
        self._alphas: list[float] = []
        # layer → [2, pairs, N, S] refined maps (source, mutual) summed over heads and steps.
        self._maps: dict[str, Tensor] = {}
        self._heads: dict[str, int] = {}
        self._resolutions: dict[str, tuple[int, int]] = {}
        self._blend_resolution: tuple[int, int] | None = None  # chosen after the first step

    @classmethod
    def from_prompts(
        cls,
        sources: Sequence[str],
        targets: Sequence[str],
        tokenizer: Any,
        *,
        encode_text: Callable[[list[str]], Tensor] | None = None,
        local_words: Sequence[str | Sequence[str | int] | None] | str | None = None,
        mutual_words: Sequence[str | Sequence[str | int] | None] | None = None,
        **kwargs: Any,
    ) -> UnifiedAttentionControl:
        """Aligns each pair's tokens and finds the blends' words.

        The alignment is google/prompt-to-prompt's (:func:`~instructedit.p2p.refinement_mapper`);
        with ``encode_text`` (e.g. :meth:`PromptToPrompt.encode_text
        <instructedit.p2p.PromptToPrompt.encode_text>`, prompts → ``[n, 77, D]``) InfEdit's
        completion aligns a swapped word with its counterpart (:func:`fill_alignment_gaps`),
        and a target token aligned to a ``local_words`` token of the source joins the target
        blend, as InfEdit does.

        ``local_words`` / ``mutual_words``: per pair, the words (a space-separated str, or a list
        of words and of indices among the target's space-separated words) of the target blend,
        which must be in the target prompt, and of the source blend, which must be in both
        prompts (InfEdit's "target blend" and "source blend"). A word counts at each
        occurrence, an index at its own. ``local_words`` may also be ``"edits"``: each pair's
        edited words in the target (:func:`~instructedit.p2p.edited_words`). Other keyword
        arguments go to the constructor.
        """
        sources, targets = _prompt_lists(sources, targets, "UnifiedAttentionControl.from_prompts")
        pairs = len(sources)
        if local_words == "edits":
            local: list[Any] = [
                edited_words(s, t)[1] for s, t in zip(sources, targets, strict=True)
            ]
        else:
            local = _per_pair("local_words", local_words, pairs)
        mutual = _per_pair("mutual_words", mutual_words, pairs)
        length = tokenizer.model_max_length
        mappers, alphas, local_tokens, mutual_tokens = [], [], [], []
        for source, target, here, kept in zip(sources, targets, local, mutual, strict=True):
            words = _words(here, "local_words", target)
            positions = {t for w in words for t in word_token_indices(target, w, tokenizer)}
            mapper, alpha = refinement_mapper(source, target, tokenizer, length)
            if encode_text is not None:
                features = encode_text([source, target]).float()
                source_ids = tokenizer(source).input_ids
                target_ids = tokenizer(target).input_ids
                words_ids = {
                    token
                    for w in words
                    for token in tokenizer(
                        w if isinstance(w, str) else target.split(" ")[w]
                    ).input_ids[1:-1]
                }
                for t, s in fill_alignment_gaps(
                    mapper, alpha, features[0], features[1], len(target_ids)
                ):
                    if source_ids[s] in words_ids:
                        positions.add(t)
            mappers.append(mapper)
            alphas.append(alpha)
            local_tokens.append(sorted(positions))
            kept_positions: list[int] = []
            for word in _words(kept, "mutual_words", target):
                text = word if isinstance(word, str) else target.split(" ")[word]
                if text not in source.split(" "):
                    raise ValueError(
                        f"mutual word {text!r} must be in the source prompt too, got {source!r}"
                    )
                kept_positions += word_token_indices(target, word, tokenizer)
            mutual_tokens.append(kept_positions)
        return cls(
            Refine(torch.stack(mappers), torch.stack(alphas)),
            local_tokens=local_tokens,
            mutual_tokens=mutual_tokens,
            **kwargs,
        )

    def replace(self, **changes: Any) -> UnifiedAttentionControl:
        """A controller of the same alignment and blend words whose other settings
        (``cross_replace_steps``, ``self_replace_steps``, the thresholds, ``temperature``) are
        this one's but for ``changes``."""
        settings = {
            name: getattr(self, name)
            for name in (
                "cross_replace_steps",
                "self_replace_steps",
                "local_threshold",
                "mutual_threshold",
                "temperature",
            )
        }
        unknown = sorted(set(changes) - set(settings))
        if unknown:
            raise TypeError(f"replace() takes {sorted(settings)}, got {unknown}")
        return UnifiedAttentionControl(
            self.refine,
            local_tokens=self.local_tokens,
            mutual_tokens=self.mutual_tokens,
            **{**settings, **changes},
        )

    @property
    def num_pairs(self) -> int:
        return int(self.refine.mapper.shape[0])

    @property
    def blends(self) -> bool:
        """Whether any pair has blend words (the maps are then recorded)."""
        return any(self.local_tokens) or any(self.mutual_tokens)

    def prepare(self, alphas: Sequence[float], skipped_steps: int = 0) -> None:
        """Starts a run: ``alphas`` holds ᾱ at each step's timestep and ``skipped_steps`` the
        steps of the schedule a strength below 1 leaves out (the windows count the whole
        schedule). :meth:`~instructedit.p2p.PromptToPrompt.edit_real` calls it."""
        self._alphas = [float(a) for a in alphas]
        self._skipped = int(skipped_steps)
        self._maps, self._heads, self._resolutions = {}, {}, {}
        self._blend_resolution = None

    def _progress(self, context: AttentionContext) -> float:
        return (context.step + self._skipped + 1) / (context.num_steps + self._skipped)

    # ------------------------------------------------------------------ the controller's face

    def controls(self, context: AttentionContext) -> bool:
        return True

    def attend(
        self, query: Tensor, key: Tensor, value: Tensor, context: AttentionContext
    ) -> Tensor:
        pairs = context.num_pairs
        if pairs != self.num_pairs:
            raise ValueError(
                f"the controller was made for {self.num_pairs} pairs, the batch holds {pairs}"
            )
        rows = query.shape[0] // len(context.branches)
        if rows != STREAMS * pairs:
            raise ValueError(
                "UnifiedAttentionControl runs with virtual inversion's batch (source, target and "
                f"mutual rows per branch), got {rows} rows for {pairs} pairs"
            )
        progress = self._progress(context)
        blocks: list[Tensor] = []
        for index, name in enumerate(context.branches):
            start = index * rows
            q_s, q_t, q_m = query[start : start + rows].chunk(STREAMS)
            k_s, k_t, k_m = key[start : start + rows].chunk(STREAMS)
            v_s, v_t, v_m = value[start : start + rows].chunk(STREAMS)
            if not context.is_cross:
                if progress < self.self_replace_steps:
                    both = sdpa(torch.cat([q_s, q_s]), torch.cat([k_s, k_s]), torch.cat([v_s, v_t]))
                    out_s, out_t = both.chunk(2)
                    blocks += [out_s, out_t, out_s]
                else:
                    blocks.append(
                        sdpa(
                            torch.cat([q_s, q_t, q_t]),
                            torch.cat([k_s, k_t, k_s]),
                            torch.cat([v_s, v_t, v_s]),
                        )
                    )
                continue
            if name != "cond":
                blocks.append(
                    sdpa(
                        query[start : start + rows],
                        key[start : start + rows],
                        value[start : start + rows],
                    )
                )
                continue
            if self._records(context):
                self._record(q_s, k_s, q_t, k_t, q_m, k_m, context)
            w_src, w_tgt = self._matrices(v_t)
            if progress <= self.cross_replace_steps:
                # (P_s W_s + P_t W_t) V_t = P_s (W_s V_t) + P_t (W_t V_t)
                v_src = torch.einsum("psw,phwd->phsd", w_src, v_t)
                v_own = torch.einsum("psw,phwd->phsd", w_tgt, v_t)
                out_t = sdpa(q_s, k_s, v_src) + sdpa(q_t, k_t, v_own)
            else:
                out_t = sdpa(q_t, k_t, v_t)
            blocks += [sdpa(q_s, k_s, v_s), out_t, sdpa(q_m, k_m, v_m)]
        return torch.cat(blocks)

    def _records(self, context: AttentionContext) -> bool:
        """Whether this cross-attention call's maps are kept for the blend: down and up layers
        of at most :data:`MAX_BLEND_QUERIES` queries in the first step, then only those at the
        blend's resolution."""
        if not self.blends or context.place == "mid" or context.num_queries > MAX_BLEND_QUERIES:
            return False
        return self._blend_resolution in (None, context.resolution)

    def _matrices(self, like: Tensor) -> tuple[Tensor, Tensor]:
        key = (like.device, like.dtype)
        if key not in self._placed:
            self._placed[key] = (self._weights[0].to(like), self._weights[1].to(like))
        return self._placed[key]

    def _record(
        self,
        q_s: Tensor,
        k_s: Tensor,
        q_t: Tensor,
        k_t: Tensor,
        q_m: Tensor,
        k_m: Tensor,
        context: AttentionContext,
    ) -> None:
        """Adds this layer's refined maps of the source and the mutual row (summed over heads)."""
        # [P, H, N, S] each, in at least float32
        p_s, p_t, p_m = (
            attention_probabilities(q, k) for q, k in ((q_s, k_s), (q_t, k_t), (q_m, k_m))
        )
        w_src, w_tgt = self._matrices(p_s)
        own = p_t @ w_tgt.unsqueeze(1)
        refined = torch.stack([p_s @ w_src.unsqueeze(1) + own, p_m @ w_src.unsqueeze(1) + own]).sum(
            2
        )  # [2, P, N, S]
        layer = context.layer
        if layer in self._maps:
            self._maps[layer] = self._maps[layer] + refined
        else:
            self._maps[layer] = refined
            self._heads[layer] = q_s.shape[1]
            self._resolutions[layer] = context.resolution

    def _choose_resolution(self, latent_size: tuple[int, int]) -> tuple[int, int]:
        """The recorded resolution nearest a quarter of the latents' side; the other layers'
        maps are dropped and no longer recorded."""
        if self._blend_resolution is None:
            if not self._maps:
                raise ValueError(
                    f"the blend reads the down and up cross-attention layers of at most "
                    f"{MAX_BLEND_QUERIES} queries; the latents {latent_size} have none: edit a "
                    "smaller image, or blend no words"
                )
            height = ((latent_size[0] + 1) // 2 + 1) // 2
            chosen = min(sorted(set(self._resolutions.values())), key=lambda r: abs(r[0] - height))
            for name in [n for n, r in self._resolutions.items() if r != chosen]:
                del self._maps[name], self._heads[name], self._resolutions[name]
            self._blend_resolution = chosen
        return self._blend_resolution

    def _blend_maps(self, latent_size: tuple[int, int]) -> Tensor:
        """The heads' mean of the recorded maps at the blend's resolution:
        ``[2, P, h, w, S]``."""
        resolution = self._choose_resolution(latent_size)
        mean = torch.stack(list(self._maps.values())).sum(0) / sum(self._heads.values())
        return mean.view(*mean.shape[:2], *resolution, mean.shape[-1])

    @staticmethod
    def _mask(
        maps: Tensor, tokens: list[int], threshold: float, latent_size: tuple[int, int]
    ) -> Tensor:
        """``[1, 1, h, w]`` bool: the tokens' largest map, resized, over ``threshold`` × its max."""
        if not tokens:
            return torch.zeros((1, 1, *latent_size), dtype=torch.bool, device=maps.device)
        selected = maps[..., tokens].amax(-1)[None, None]
        resized = F.interpolate(selected, size=latent_size)
        peak = resized.amax(dim=(2, 3), keepdim=True)
        return (resized / peak > threshold) & (peak > 0)

    def step_end(self, latents: Tensor, step: int, num_steps: int) -> Tensor:
        if not self.blends:
            return latents
        latent_size = (latents.shape[2], latents.shape[3])
        if step == 0:  # no blend yet; the layers to record from now on are known
            self._choose_resolution(latent_size)
            return latents
        if step >= len(self._alphas):
            raise RuntimeError(
                "UnifiedAttentionControl.prepare() sets the run's timesteps before a blend; "
                "PromptToPrompt.edit_real calls it"
            )
        maps = self._blend_maps(latent_size)
        maps_s, maps_m = maps[0], maps[1]
        x_s, x_t, x_m = latents.chunk(STREAMS)
        local_threshold = max(self.temperature / self._alphas[step] ** 0.5, self.local_threshold)
        blended = []
        for pair in range(self.num_pairs):
            local = self.local_tokens[pair]
            s, t, m = x_s[pair : pair + 1], x_t[pair : pair + 1], x_m[pair : pair + 1]
            out = t
            if local:
                mask_e = self._mask(maps_m[pair], local, local_threshold, latent_size)
                out = torch.where(mask_e, t, m)
            mask_m = self._mask(
                maps_s[pair], self._mutual_only[pair], self.mutual_threshold, latent_size
            )
            out = torch.where(mask_m, s, out)
            if step == num_steps - 2:
                mask_me = self._mask(
                    maps_m[pair], self._shared[pair], self.local_threshold, latent_size
                )
                out = torch.where(mask_me, m, out)
            blended.append(out)
        return torch.cat([x_s, torch.cat(blended), x_m])
