"""Runs (or continues) the ShapesWorld reproduction of the paper from Python, stage by stage.

    python examples/shapes/reproduce.py --output outputs/shapes            # full run (CPU, ~2 h 55 min)
    python examples/shapes/reproduce.py --output outputs/shapes --smoke    # every stage, ~1 min
    python examples/shapes/reproduce.py --output outputs/shapes --until pairs

The same run as ``instructedit shapes reproduce``: each stage writes ``DONE.json`` when finished
and is skipped afterwards, and the long stages checkpoint inside, so a killed run restarts where
it stopped. The last stage writes ``report/report.rst``, the tables of the ShapesWorld research notes.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace

from instructedit.worlds.recipe import ABLATIONS, DEFAULT_ABLATIONS, STAGES, RecipeConfig, reproduce


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="outputs/shapes")
    parser.add_argument("--smoke", action="store_true", help="toy sizes (numbers meaningless)")
    parser.add_argument("--until", choices=STAGES, help="last stage to run")
    parser.add_argument("--editor-steps", type=int, help="override the editor's training steps")
    parser.add_argument(
        "--ablations",
        nargs="*",
        choices=ABLATIONS,
        help=f"the ablation editors to train (default: {' '.join(DEFAULT_ABLATIONS)}; "
        "with --smoke, all)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    config = RecipeConfig.smoke(args.output) if args.smoke else RecipeConfig(output_dir=args.output)
    if args.editor_steps is not None:
        config = replace(config, editor_steps=args.editor_steps)
    if args.ablations is not None:
        config = replace(config, ablations=tuple(args.ablations))
    records = reproduce(config, until=args.until)
    for stage, record in records.items():
        print(f"{stage:>14}: {record['seconds']:7.0f} s")
    if "evaluate" in records:
        oracle = records["evaluate"]["methods"]["editor"]["oracle"]
        print(json.dumps(oracle, indent=2))


if __name__ == "__main__":
    main()
