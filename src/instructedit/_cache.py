"""Where instructedit keeps files it derives locally (never downloads)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["cache_dir", "materialize_dir"]


def cache_dir() -> Path:
    """Returns the cache root: ``$INSTRUCTEDIT_CACHE``, else ``$XDG_CACHE_HOME/instructedit``,
    else ``~/.cache/instructedit``."""
    explicit = os.environ.get("INSTRUCTEDIT_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "instructedit"


def materialize_dir(target: Path, build: Callable[[Path], None], *, marker: str) -> Path:
    """Builds a directory once, atomically.

    ``build`` fills a fresh temporary sibling of ``target``; the sibling is renamed into place
    only when ``build`` returns, so a crash or a concurrent builder never leaves a half-written
    ``target``. A directory is complete when it holds ``marker``.

    Args:
        target: the directory to create.
        build: fills the directory it is given.
        marker: name of a file ``build`` writes last; its presence marks a complete directory.

    Returns:
        ``target``.
    """
    if (target / marker).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(staging)
        if not (staging / marker).is_file():
            raise RuntimeError(f"builder for {target} did not write its marker file {marker!r}")
        if target.exists():
            # An incomplete leftover (no marker) from an older, interrupted layout.
            if (target / marker).is_file():
                return target
            shutil.rmtree(target)
        try:
            os.replace(staging, target)
        except OSError:
            # Another process won the race and installed a complete copy first.
            if not (target / marker).is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
