"""How a 3-turn edit session drifts from the ground truth, chained in pixels or in latents.

    python examples/shapes/session_drift.py                 # 50 sessions of 3 turns, seed 0
    python examples/shapes/session_drift.py --sessions 10 --turns 2

Each session starts from a held-out rendered scene and applies three edits drawn one after the
other (each the ground truth's next step), with the embedded default editor in an
:class:`~instructedit.pipeline.EditSession`. After every turn it prints, per chaining, the mean
absolute error of the whole image against the ground truth (pixels in [0, 1]) and the oracle's
success rate of that turn's edit (realised, unchanged-region error ≤ 0.08, the rest intact, as
:func:`~instructedit.worlds.evaluation.oracle_summary` counts it).
"""

from __future__ import annotations

import argparse
import random

import numpy as np

from instructedit import load_default
from instructedit.pipeline import EditSession
from instructedit.worlds.shapes import judge, random_edit, random_scene, render


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = random.Random(f"session-drift:{args.seed}")
    chains = []
    while len(chains) < args.sessions:
        scene, edits = random_scene(rng), []
        for _ in range(args.turns):
            edit = random_edit(scene, rng)
            if edit is None:
                break
            edits.append(edit)
            scene = edit.target
        if len(edits) == args.turns:
            chains.append(edits)

    pipe = load_default()
    for chain in ("pixels", "latents"):
        errors = np.zeros((len(chains), args.turns))
        successes = np.zeros((len(chains), args.turns))
        for number, edits in enumerate(chains):
            session = EditSession(
                pipe, render(edits[0].source), seed=args.seed + number, chain=chain
            )
            for turn, edit in enumerate(edits):
                output = session.edit(
                    edit.instruction, num_inference_steps=args.steps, progress=False
                ).image
                truth = np.asarray(render(edit.target), np.float32) / 255
                errors[number, turn] = np.abs(np.asarray(output, np.float32) / 255 - truth).mean()
                verdict = judge(edit, output)
                successes[number, turn] = (
                    verdict.realised
                    and verdict.unchanged_error <= 0.08
                    and verdict.rest == "intact"
                )
        for turn in range(args.turns):
            print(
                f"chained in {chain:<7} turn {turn + 1}: error against the ground truth "
                f"{errors[:, turn].mean():.3f}, oracle success {100 * successes[:, turn].mean():.0f} %"
            )


if __name__ == "__main__":
    main()
