"""Prompt-to-Prompt attention edits: the attention matrix materialised vs instructedit's SDPA path.

    python benchmarks/p2p_attention.py [--side 64] [--heads 8] [--dim 40]

One attention layer of Stable Diffusion at 512² (64² = 4096 queries, 8 heads of 40 dims in the
first block) over the batch the official generator uses: {uncond, cond} × {source, target}.

* self-attention injection — official: ``softmax(Q Kᵀ)`` materialised, target rows replaced by
  the source's, ``P V``; ours: ``SDPA(Q_src, K_src, [V_src | V_tgt])``.
* word swap (cross-attention, 77 keys) — google: ``einsum('hpw,bwn->bhpn', P_src, M)`` on
  materialised maps; ours: ``SDPA(Q_src, K_src, M V_tgt)`` (+ the target's own term).

Each variant runs in a fresh process; peak memory is that process's peak resident set minus its
resident set just before the attention call (CUDA: ``max_memory_allocated``). Prints time, peak
memory, their ratios, and the largest output difference.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path

import torch

from instructedit.attention import AttentionContext
from instructedit.p2p import CrossAttentionEdit, SelfAttentionInjection, WordSwap

TOKENS = 77


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _inputs(kind: str, side: int, heads: int, dim: int, device: str) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    keys = side * side if kind == "injection" else TOKENS
    q = torch.randn(4, heads, side * side, dim, generator=g).to(device)
    k = torch.randn(4, heads, keys, dim, generator=g).to(device)
    v = torch.randn(4, heads, keys, dim, generator=g).to(device)
    mapper = torch.eye(TOKENS)[torch.randperm(TOKENS, generator=g)].unsqueeze(0).to(device)
    return q, k, v, mapper


def _context(kind: str, side: int) -> AttentionContext:
    return AttentionContext(
        layer="down_blocks.0.attentions.0.transformer_blocks.0."
        + ("attn1" if kind == "injection" else "attn2"),
        place="down",
        is_cross=kind != "injection",
        step=0,
        num_steps=50,
        resolution=(side, side),
        branches=("uncond", "cond") if kind == "injection" else ("cond", "uncond"),
        num_pairs=1,
    )


def _materialised(
    kind: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mapper: torch.Tensor
) -> torch.Tensor:
    probabilities = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)
    if kind == "injection":
        # Official: sim = cat(s0, s0, s2, s2) — each branch's target takes its source's attention.
        probabilities = torch.cat(
            [probabilities[0:1], probabilities[0:1], probabilities[2:3], probabilities[2:3]]
        )
    else:
        # google: the conditional target's maps become P_src M (α = 1); rows are [cond src, cond tgt, …].
        replaced = torch.einsum("hpw,bwn->bhpn", probabilities[0], mapper)
        probabilities = torch.cat([probabilities[0:1], replaced, probabilities[2:]])
    return probabilities @ v


def _ours(
    kind: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mapper: torch.Tensor, side: int
) -> torch.Tensor:
    context = _context(kind, side)
    if kind == "injection":
        return SelfAttentionInjection(1.0).attend(q, k, v, context)
    alphas = torch.ones(1, 50, TOKENS, device=q.device)
    return CrossAttentionEdit(WordSwap(mapper), alphas, self_window=0.0).attend(q, k, v, context)


def _run(kind: str, path: str, side: int, heads: int, dim: int, device: str, out: str) -> None:
    q, k, v, mapper = _inputs(kind, side, heads, dim, device)
    with torch.no_grad():
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        else:
            before = _status("VmRSS:")
        start = time.perf_counter()
        result = (
            _materialised(kind, q, k, v, mapper)
            if path == "materialised"
            else _ours(kind, q, k, v, mapper, side)
        )
        if device == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        peak = (
            torch.cuda.max_memory_allocated() if device == "cuda" else _status("VmHWM:")
        ) - before
    torch.save({"time": elapsed, "peak": peak, "result": result.cpu()}, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=64, help="query side (64 = SD at 512²)")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--dim", type=int, default=40)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    context = multiprocessing.get_context("spawn")
    print(
        f"device {device}, queries {args.side}², heads {args.heads}, head dim {args.dim}, batch 4"
    )
    with tempfile.TemporaryDirectory() as folder:
        for kind in ("injection", "word_swap"):
            results = {}
            for path in ("materialised", "sdpa"):
                out = str(Path(folder) / f"{kind}-{path}.pt")
                process = context.Process(
                    target=_run, args=(kind, path, args.side, args.heads, args.dim, device, out)
                )
                process.start()
                process.join()
                if process.exitcode != 0:
                    raise SystemExit(f"{kind}/{path} failed with exit code {process.exitcode}")
                results[path] = torch.load(out)
            m, s = results["materialised"], results["sdpa"]
            difference = (m["result"] - s["result"]).abs().max().item()
            print(
                f"{kind:10} materialised {m['time'] * 1e3:9.1f} ms {m['peak'] / 2**20:9.1f} MiB | "
                f"SDPA {s['time'] * 1e3:9.1f} ms {s['peak'] / 2**20:9.1f} MiB | "
                f"time ratio {s['time'] / m['time']:.3f}, memory ratio {s['peak'] / max(m['peak'], 1):.3f}, "
                f"max |diff| {difference:.2e}"
            )


if __name__ == "__main__":
    main()
