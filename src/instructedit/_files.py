"""Replacing a whole folder so that a kill at any instant loses neither the old nor the new one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["recover_dir", "replace_dir", "swap_dirs"]


def swap_dirs(target: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The hidden siblings a replacement of ``target`` uses: ``(staging, retired)``, the folder
    the new contents are written to and the one the old folder is set aside in."""
    target = Path(target)
    return target.with_name(f".{target.name}.partial"), target.with_name(f".{target.name}.old")


def replace_dir(target: str | os.PathLike[str]) -> Path:
    """Moves the finished staging folder (:func:`swap_dirs`) to ``target``, replacing it.

    Two renames: the old folder is set aside, then the new one takes its name, then the old one
    is deleted. At every instant one complete folder is at ``target`` or set aside beside it, and
    :func:`recover_dir` finishes a replacement that a kill interrupted. Returns ``target``. One
    writer per ``target`` at a time: two would share the staging folder.
    """
    target = Path(target)
    staging, retired = swap_dirs(target)
    if not staging.is_dir():
        raise FileNotFoundError(f"nothing to move to {target}: {staging} is not a folder")
    shutil.rmtree(retired, ignore_errors=True)
    if target.exists():
        target.rename(retired)
    staging.rename(target)
    shutil.rmtree(retired, ignore_errors=True)
    return target


def recover_dir(target: str | os.PathLike[str]) -> None:
    """Finishes or undoes a replacement of ``target`` (:func:`replace_dir`) cut short by a kill.

    With ``target`` missing and the old folder set aside, the kill fell between the two renames:
    the staging folder was complete (it is written in full before the first), so it takes the
    name; without one the old folder gets it back. Then both siblings are removed (a staging
    folder left beside an intact ``target`` is a write the kill cut short). Safe to call always.
    """
    target = Path(target)
    staging, retired = swap_dirs(target)
    if not target.exists() and retired.is_dir():
        (staging if staging.is_dir() else retired).rename(target)
    shutil.rmtree(retired, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
