"""instructedit: InstructPix2Pix (Brooks, Holynski and Efros, CVPR 2023) as composable software.

Edit an image by telling it what to change, and build, filter, train and evaluate such editors
yourself. ``import instructedit`` is cheap: heavy dependencies (torch, diffusers, open_clip,
Triton, datasets) load only when a component that needs them is used.
"""

from instructedit._version import __version__

__all__ = ["__version__"]
