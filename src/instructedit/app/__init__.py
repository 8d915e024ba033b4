"""``instructedit app``: a web page to edit images with any editor (Gradio, the ``app`` extra).

:class:`AppEditor` is what the page's buttons call, without the page (it needs no Gradio);
:func:`build_app` builds the page for one, and :func:`run_app` serves it.
"""

from instructedit._public import publish
from instructedit.app._editor import (
    MASK_CHOICES,
    SCHEDULER_CHOICES,
    AppEdit,
    AppEditor,
    AppTurn,
    MaskChoice,
)
from instructedit.app._page import build_app, run_app

__all__ = [
    "MASK_CHOICES",
    "SCHEDULER_CHOICES",
    "AppEdit",
    "AppEditor",
    "AppTurn",
    "MaskChoice",
    "build_app",
    "run_app",
]

publish(__name__, globals(), __all__)
