"""Sphinx configuration of the instructedit documentation."""

import os

from instructedit import __version__

os.environ.setdefault("HF_HUB_OFFLINE", "1")

project = "instructedit"
author = "instructedit developers"
copyright = "2026, instructedit developers"
release = __version__
version = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"show-inheritance": False}
autodoc_typehints = "description"
autodoc_member_order = "bysource"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

templates_path = ["_templates"]
exclude_patterns = ["_build"]
html_theme = "furo"
html_title = f"instructedit {__version__}"
html_static_path = ["_static"]
