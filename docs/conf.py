"""Sphinx configuration of pyro-contrast (built with -W: any warning fails the build)."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "pyro-contrast"
author = "pyro-contrast developers"
copyright = "2026, pyro-contrast developers"
release = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
autodoc_member_order = "bysource"
# Inherited torch docstrings are not valid reST; document only what this package writes.
autodoc_inherit_docstrings = False
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_mock_imports = ["dask", "distributed", "safetensors", "sklearn"]
nitpicky = False
html_theme = "alabaster"
exclude_patterns = ["_build"]
suppress_warnings = ["autodoc.import_object"]
