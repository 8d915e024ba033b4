"""The ``instructedit`` command: thin sub-commands over the typed Python API.

Each sub-command is generated from a typed library function (its signature and Google-style
docstring), so the command line and the Python API take the same arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from instructedit._version import __version__
from instructedit.cli._generate import add_command

__all__ = ["build_parser", "main"]


def _demo(
    output: Path = Path("outputs/demo.png"),
    *,
    instruction: str = "make it snowy",
    steps: int = 20,
    seed: int = 0,
) -> Path:
    """Edit the bundled example image and write the input and the edit side by side.

    Args:
        output: where to write the PNG (input left, edit right).
        instruction: the edit instruction.
        steps: denoising steps.
        seed: seed of the sampling noise.
    """
    from instructedit.demo import run_demo

    return run_demo(output, instruction=instruction, steps=steps, seed=seed)


def build_parser() -> argparse.ArgumentParser:
    """Returns the parser of the ``instructedit`` command."""
    parser = argparse.ArgumentParser(
        prog="instructedit", description="Edit images by instruction (InstructPix2Pix)."
    )
    parser.add_argument("--version", action="version", version=f"instructedit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_command(subparsers, "demo", _demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    parser = build_parser()
    arguments = vars(parser.parse_args(argv))
    logging.basicConfig(
        level=logging.DEBUG if arguments.pop("verbose") else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    function = arguments.pop("_function")
    arguments.pop("command")
    try:
        result = function(**arguments)
    except (ValueError, TypeError, FileNotFoundError) as error:
        parser.exit(2, f"instructedit: error: {error}\n")
    if result is not None:
        # The result (a written path) is the command's output, for scripts to read.
        sys.stdout.write(f"{result}\n")
    return 0
