"""How many Prompt-to-Prompt candidates are the edit their captions describe, per control.

    python examples/shapes/pair_controls.py outputs/shapes                   # 100 caption edits
    python examples/shapes/pair_controls.py outputs/shapes --captions 400 --samples 8
    python examples/shapes/pair_controls.py outputs/shapes --family add --only "guidance 3"

Renders candidates for the run's first caption edits with the run's text-to-image model, through
:meth:`PromptToPrompt.sample_pairs` with each control (the recipe's sampler steps; the paper's
random text guidance, or a fixed 7.5 or 3; with and without a local blend), and reads every pair back
with :func:`~instructedit.worlds.reading.check_pair` (colours, not kinds: the small model's soft
squares read as circles). Prints, per control and
edit family, the share of pairs whose input shows its caption, whose edited image shows the
edited caption, whose untouched shapes stay put, and that are all three (correct), and the
median of :func:`~instructedit.worlds.reading.pair_unchanged_error` (how much the pair changes
where its edit should change nothing). ``--only TEXT`` runs the controls whose name has TEXT;
``--family`` takes the first caption edits of one family.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter, defaultdict
from pathlib import Path

from instructedit.p2p import PromptToPrompt
from instructedit.worlds.reading import check_pair, pair_family, pair_unchanged_error

PAPER_GUIDANCE = (7.5, 15.0)
FIXED_GUIDANCE = (7.5, 7.5)
LOW_GUIDANCE = (3.0, 3.0)
# name: (control, p range, text guidance range, local blend threshold)
CONTROLS = {
    "self_attention p~U(0.1,0.9) (official)": ("self_attention", (0.1, 0.9), PAPER_GUIDANCE, None),
    "cross_attention p~U(0.1,0.9)": ("cross_attention", (0.1, 0.9), PAPER_GUIDANCE, None),
    "cross_attention p=0.8 (google's default)": (
        "cross_attention",
        (0.8, 0.8),
        PAPER_GUIDANCE,
        None,
    ),
    "cross_attention p=0.8, guidance 7.5": ("cross_attention", (0.8, 0.8), FIXED_GUIDANCE, None),
    "cross_attention p=0.8, guidance 7.5, local blend 0.3": (
        "cross_attention",
        (0.8, 0.8),
        FIXED_GUIDANCE,
        0.3,
    ),
    "cross_attention p=0.8, guidance 3": ("cross_attention", (0.8, 0.8), LOW_GUIDANCE, None),
    # Weaker controls at the recipe's guidance: on a 2x latent additions need them.
    "cross_attention p=0.4, guidance 3": ("cross_attention", (0.4, 0.4), LOW_GUIDANCE, None),
    "cross_attention p=0.1, guidance 3": ("cross_attention", (0.1, 0.1), LOW_GUIDANCE, None),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="folder of `instructedit shapes reproduce`")
    parser.add_argument("--captions", type=int, default=100)
    parser.add_argument("--samples", type=int, default=4, help="candidates per caption edit")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--only", default="", help="run only the controls whose name contains this text"
    )
    parser.add_argument(
        "--family",
        choices=("recolour", "background", "add", "remove"),
        help="only caption edits of this family",
    )
    args = parser.parse_args()

    p2p = PromptToPrompt.from_pretrained(args.run / "text_to_image" / "model")
    folders = sorted(p for p in (args.run / "pairs" / "candidates").iterdir() if p.is_dir())
    prompts = [json.loads((f / "prompt.json").read_text()) for f in folders]
    if args.family:
        prompts = [p for p in prompts if pair_family(p["input"], p["output"]) == args.family]
    prompts = prompts[: args.captions]
    print(
        "control | family | n | input shown | edited shown | layout kept | correct"
        " | unchanged error (median)"
    )
    for name, (control, strengths, guidance, blend) in CONTROLS.items():
        if args.only not in name:
            continue
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        errors: dict[str, list[float]] = defaultdict(list)
        for index, prompt in enumerate(prompts):
            candidates = p2p.sample_pairs(
                prompt["input"],
                prompt["output"],
                args.samples,
                seed=index,
                batch_size=args.samples,
                num_inference_steps=args.steps,
                injection_range=strengths,
                guidance_range=guidance,
                control=control,  # type: ignore[arg-type]
                local_blend=blend,
                progress=False,
            )
            for candidate in candidates:
                verdict = check_pair(
                    candidate.source,
                    candidate.target,
                    prompt["input"],
                    prompt["output"],
                    kinds=False,
                )
                error = pair_unchanged_error(
                    candidate.source, candidate.target, prompt["input"], prompt["output"]
                )
                for key in (verdict.family, "all"):
                    if error is not None:  # None: no region the edit leaves alone
                        errors[key].append(error)
                    counts[key].update(
                        n=1,
                        input=verdict.input_shown,
                        edited=verdict.edited_shown,
                        layout=verdict.layout_kept,
                        correct=verdict.correct,
                    )
        for family in ("recolour", "background", "add", "remove", "all"):
            c = counts[family]
            shares = " | ".join(
                f"{c[k] / max(1, c['n']):.0%}" for k in ("input", "edited", "layout", "correct")
            )
            median = statistics.median(errors[family]) if errors[family] else float("nan")
            print(f"{name} | {family} | {c['n']} | {shares} | {median:.3f}", flush=True)


if __name__ == "__main__":
    main()
