"""Builds argparse sub-commands from typed functions, so the CLI cannot drift from the API."""

from __future__ import annotations

import argparse
import collections.abc
import inspect
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from instructedit._inputs import REPEATED

__all__ = ["add_command", "docstring_arguments"]

_SCALARS: tuple[type, ...] = (int, float, str, Path)


def docstring_arguments(function: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """Returns a function's summary line and its Google-style ``Args:`` descriptions."""
    doc = inspect.getdoc(function) or ""
    summary = doc.split("\n\n", 1)[0].replace("\n", " ").strip()
    descriptions: dict[str, str] = {}
    match = re.search(r"^Args:\n((?:[ \t]+.*\n?|\n)+)", doc, flags=re.MULTILINE)
    if match:
        current = None
        for line in match.group(1).splitlines():
            entry = re.match(r"^\s{4}(\w+)(?: \(.*?\))?:\s*(.*)$", line)
            if entry:
                current = entry.group(1)
                descriptions[current] = entry.group(2)
            elif current and line.strip():
                descriptions[current] += " " + line.strip()
    return summary, descriptions


def _unwrap_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (typing.Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def add_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    function: Callable[..., Any],
) -> argparse.ArgumentParser:
    """Adds ``name`` as a sub-command whose options are ``function``'s parameters.

    Positional-or-keyword parameters without a default become positional arguments; the others
    become ``--options`` (``snake_case`` → ``--kebab-case``). Supported types: ``int``, ``float``,
    ``str``, ``Path``, ``bool`` (``--flag/--no-flag``), ``Literal[...]`` (choices), ``list[T]`` / ``Sequence[T]``
    (one or more values) and ``T | None``.
    """
    summary, descriptions = docstring_arguments(function)
    parser = subparsers.add_parser(name, help=summary, description=summary)
    hints = typing.get_type_hints(function, include_extras=True)
    for parameter in inspect.signature(function).parameters.values():
        annotation = hints.get(parameter.name, str)
        repeated = False
        if get_origin(annotation) is Annotated:
            annotation, *marks = get_args(annotation)
            repeated = REPEATED in marks
        annotation = _unwrap_optional(annotation)
        help_text = descriptions.get(parameter.name, "")
        kwargs: dict[str, Any] = {"help": help_text}
        origin = get_origin(annotation)
        if origin is Literal:
            choices = get_args(annotation)
            kwargs["choices"] = choices
            kwargs["type"] = type(choices[0])
        elif origin in (list, collections.abc.Sequence):
            (item,) = get_args(annotation)
            if get_origin(item) is Literal:  # one or more of fixed choices
                kwargs["choices"] = get_args(item)
                kwargs["type"] = type(get_args(item)[0])
            else:
                kwargs["type"] = item
            if repeated:
                kwargs["action"] = "append"
            else:
                kwargs["nargs"] = "+"
        elif annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif annotation in _SCALARS:
            kwargs["type"] = annotation
        else:
            raise TypeError(
                f"{function.__name__}: unsupported CLI type {annotation!r} for {parameter.name}"
            )
        required = parameter.default is inspect.Parameter.empty
        if required and parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
            parser.add_argument(parameter.name, **kwargs)
            continue
        if not required:
            kwargs["default"] = parameter.default
            if parameter.default is not None and "action" not in kwargs:
                kwargs["help"] = f"{help_text} (default: {parameter.default})".strip()
        else:
            kwargs["required"] = True
        parser.add_argument("--" + parameter.name.replace("_", "-"), dest=parameter.name, **kwargs)
    parser.set_defaults(_function=function)
    return parser
