"""Checkpoints: the one way every long job in instructedit survives being killed.

A long job divides its work into units and, as each unit finishes, writes a **checkpoint**: a
file or folder that appears whole (written beside its place, then renamed onto it, so a kill at
any instant leaves either the old checkpoint or the new one, never half of one) and that records
the settings that made it. Run the same job again and it finds its checkpoints, refuses one made
with other settings (naming each setting, its value there and here), and continues after the last
one; a kill loses at most the unit in progress, and the resumed run computes what the
uninterrupted one would have.

================================  ======================  =========================================
job                               unit                    checkpoint
================================  ======================  =========================================
:class:`~instructedit.Trainer`    optimiser steps         ``checkpoints/step-N/`` (accelerate's
                                                          state, EMA, ``trainer_state.json``)
ShapesWorld training loops        optimiser steps         one ``.pt`` file (modules, optimiser,
                                                          random states, losses, settings)
ShapesWorld recipe stages         a stage                 ``<stage>/DONE.json`` (the stage's
                                                          record and the settings it answers)
dataset generation                a caption               ``{index:07d}/`` (official layout) or a
                                                          skip marker ``skipped/{index:07d}.json``
================================  ======================  =========================================

The helpers below are the primitives the four share: :func:`write_json_atomic`,
:func:`save_torch_atomic` and :func:`publish_dir` make a checkpoint appear whole, and
:func:`check_settings` refuses one made with other settings.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "check_settings",
    "differing_settings",
    "publish_dir",
    "save_torch_atomic",
    "write_json_atomic",
]


def write_json_atomic(path: str | os.PathLike[str], value: Any) -> None:
    """Writes ``value`` as JSON to ``path`` through a temporary file, flushed to disk, and an
    atomic rename; creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump(value, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_torch_atomic(state: Any, path: str | os.PathLike[str]) -> None:
    """Saves ``state`` with ``torch.save`` to ``path`` through ``<path>.tmp`` and an atomic
    rename; creates the parent folder."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".tmp")
    torch.save(state, staging)
    os.replace(staging, path)


def publish_dir(staging: str | os.PathLike[str], final: str | os.PathLike[str]) -> Path:
    """Makes the finished folder ``staging`` the checkpoint ``final`` (replacing an older one of
    that name) by a rename, and returns ``final``. ``staging`` must sit beside ``final`` (same
    file system) under a name a reader of checkpoints skips, e.g. ``.step-0000100.partial``."""
    staging, final = Path(staging), Path(final)
    if not staging.is_dir():
        raise FileNotFoundError(f"nothing to publish as {final}: {staging} is not a folder")
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    return final


def differing_settings(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The settings both sides hold with different values, as ``"name <there> there, <here>
    here"`` (sorted by name). A setting one side lacks is not compared: a checkpoint made before
    the job recorded it still resumes."""
    return [
        f"{key} {recorded[key]!r} there, {current[key]!r} here"
        for key in sorted(set(recorded) & set(current))
        if recorded[key] != current[key]
    ]


def check_settings(
    recorded: Mapping[str, Any],
    current: Mapping[str, Any],
    *,
    checkpoint: str | os.PathLike[str],
    remedy: str = "delete it to start afresh, or pass the settings it was written with",
) -> None:
    """Raises ``ValueError`` naming ``checkpoint`` and each setting whose recorded value differs
    from this run's (see :func:`differing_settings`), and how to go on (``remedy``)."""
    differ = differing_settings(recorded, current)
    if differ:
        raise ValueError(
            f"checkpoint {checkpoint} was written by a run with other settings "
            f"({', '.join(differ)}): {remedy}"
        )
