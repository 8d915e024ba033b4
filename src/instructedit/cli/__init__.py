"""The ``instructedit`` command: thin sub-commands over the typed Python API.

Each sub-command *is* a typed library function: its options are generated from the function's
signature and Google-style docstring, so the command line and the Python API cannot drift. Only
the chosen command's module is imported, so ``instructedit --help`` starts instantly.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from instructedit._version import __version__
from instructedit.cli._generate import add_command

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "instructedit.demo:run_demo",
        "Edits one bundled ShapesWorld scene per edit family with the embedded default editor "
        "(offline, CPU) and writes a grid of input, output and ground truth with the oracle's "
        "verdicts.",
    ),
    "app": (
        "instructedit.app:run_app",
        "Serves a web page to edit images with an editor (Gradio; ``pip install "
        "'instructedit[app]'``), until interrupted.",
    ),
    "edit": (
        "instructedit.pipeline:edit_files",
        "Edits image files by one instruction, or several in turns, and writes "
        "``OUTPUT/<name>.png`` for each.",
    ),
    "edit-real": (
        "instructedit.p2p:edit_real_file",
        "Edits a real image from its caption with a text-to-image model (no editor needed) and "
        'writes OUTPUT (the edit) and OUTPUT\'s stem + "-source" (the image as the model '
        "reconstructs it).",
    ),
    "generate": (
        "instructedit.datagen:generate_from_files",
        "Generates an InstructPix2Pix dataset from captions (stages 1–3) into OUTPUT.",
    ),
    "train": (
        "instructedit.training:train_from_config",
        "Trains an InstructPix2Pix editor as the config file describes; exports the pipeline.",
    ),
    "shapes": (
        "instructedit.worlds.recipe:shapes_command",
        "Runs the ShapesWorld reproduction of the paper (rerun to continue a stopped run), or "
        "scores an editor on held-out rendered scenes as the ShapesWorld guide reports them.",
    ),
    "evaluate": (
        "instructedit.evaluation:evaluate_model",
        "Runs the paper's s_I sweep on a dataset split (OUTPUT/sweep.csv, OUTPUT/sweep.png), or "
        "MagicBrush's protocol (OUTPUT/magicbrush.json, OUTPUT/magicbrush.csv, OUTPUT/images/).",
    ),
}
"""Command name → (``module:function``, the function's summary line, shown by ``--help``)."""


def resolve_command(name: str) -> Callable[..., Any]:
    """Imports and returns the function behind command ``name``."""
    module_name, function_name = COMMANDS[name][0].split(":")
    function: Callable[..., Any] = getattr(importlib.import_module(module_name), function_name)
    return function


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Returns the parser of the ``instructedit`` command.

    Args:
        command: the sub-command whose options to generate (importing its module); the others
            are listed by name and summary only.
    """
    parser = argparse.ArgumentParser(
        prog="instructedit", description="Edit images by instruction (InstructPix2Pix)."
    )
    parser.add_argument("--version", action="version", version=f"instructedit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, summary) in COMMANDS.items():
        if name == command:
            add_command(subparsers, name, resolve_command(name))
        else:
            subparsers.add_parser(name, help=summary.replace("``", ""))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    arguments_in = list(sys.argv[1:] if argv is None else argv)
    command = next((token for token in arguments_in if token in COMMANDS), None)
    parser = build_parser(command)
    arguments = vars(parser.parse_args(arguments_in))
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
    # The result (written paths) is the command's output, for scripts to read.
    paths = result if isinstance(result, (list, tuple)) else [] if result is None else [result]
    for path in paths:
        sys.stdout.write(f"{path}\n")
    return 0
