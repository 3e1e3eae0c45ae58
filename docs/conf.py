"""Sphinx configuration of pyro-contrast.

The docs build with ``-W`` (a warning fails the build) and offline: MathJax is served from
``_static/mathjax`` (``sphinx-mathjax-offline``), the theme (furo) loads nothing from the
network, and the tutorials and guides are MyST-NB text notebooks executed at build time.
"""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))
# The notebooks' kernels inherit this: small tensor operations gain nothing from a second
# OpenMP thread and lose a great deal on a shared machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")

project = "pyro-contrast"
author = "pyro-contrast developers"
copyright = "2026, pyro-contrast developers"
release = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
    # Copies MathJax 3 into _static/mathjax and points mathjax_path at it: no CDN.
    "sphinx-mathjax-offline",
]
autodoc_member_order = "bysource"
# Inherited torch docstrings are not valid reST; document only what this package writes.
autodoc_inherit_docstrings = False
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_mock_imports = ["dask", "distributed", "safetensors", "sklearn"]
nitpicky = False
exclude_patterns = ["_build", "**/.ipynb_checkpoints", "guides/*.py"]
suppress_warnings = ["autodoc.import_object"]

# -- HTML ------------------------------------------------------------------------------------
# furo wraps nothing and clips nothing: long code lines scroll inside their block.
html_theme = "furo"
html_title = "pyro-contrast"
pygments_style = "friendly"
pygments_dark_style = "monokai"

# -- MyST and MyST-NB ------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
# Text notebooks (``file_format: mystnb``) run at build time; "cache" re-runs a notebook
# only when its code changed (jupyter-cache under docs/_build/.jupyter_cache).
nb_execution_mode = "cache"
nb_execution_timeout = 120
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_execution_cache_path = os.path.join(os.path.dirname(__file__), "_build", ".jupyter_cache")
# Progress bars and third-party notices (e.g. ArviZ's once-a-day message) go to stderr and
# would make the pages depend on the day; warnings are caught by the tests, which run every
# notebook's code with warnings as errors.
nb_output_stderr = "remove"
nb_merge_streams = True


# -- The examples gallery --------------------------------------------------------------------
def _example_gallery_directive():
    """``.. example-gallery::``: one section per ``examples/*.py`` script, from its docstring.

    Read at build time, so the gallery lists exactly the scripts in the repository, each with
    what it reproduces and how to run it, in the script author's words.
    """
    import ast
    import pathlib

    from docutils import nodes
    from docutils.statemachine import StringList
    from sphinx.util.docutils import SphinxDirective
    from sphinx.util.nodes import nested_parse_with_titles

    class ExampleGallery(SphinxDirective):
        has_content = False

        def run(self):
            folder = pathlib.Path(self.env.srcdir).parent / "examples"
            lines = []
            for path in sorted(folder.glob("[!_]*.py")):
                self.env.note_dependency(str(path))
                docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
                summary, _, body = docstring.partition("\n")
                title = f"``examples/{path.name}``"
                lines += [title, "-" * len(title), "", f"**{summary.strip()}**", ""]
                lines += body.strip("\n").splitlines() + ["", ""]
            container = nodes.section()
            container.document = self.state.document
            nested_parse_with_titles(self.state, StringList(lines, "examples"), container)
            return container.children

    return ExampleGallery


def setup(app):
    app.add_directive("example-gallery", _example_gallery_directive())
