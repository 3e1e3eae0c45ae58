"""The documentation builds offline without warnings, and every notebook's code runs as written.

Tutorials and guides are MyST-NB text notebooks (``file_format: mystnb``). Sphinx executes
them in a Jupyter kernel when the docs are built (``make docs``); here each notebook's code
cells run in order in one fresh namespace in this process, so a broken notebook fails the
suite with its own traceback, under the suite's warnings-as-errors filter, without paying a
kernel start per notebook. The build test renders the pages without executing them again.
"""

import pathlib
import re
import warnings

import pytest

from pyro_contrast.marginals.bridge import SmallNormalizerWarning

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"
NOTEBOOKS = sorted(
    path
    for folder in (".", "tutorials", "guides")
    for path in (DOCS / folder).glob("*.md")
    if "file_format: mystnb" in path.read_text()
)


def notebook_code_cells(path):
    """The ``{code-cell}`` sources of a MyST-NB text notebook, in order."""
    from myst_nb.core.read import read_myst_markdown_notebook

    notebook = read_myst_markdown_notebook(path.read_text(), path=path)
    return [cell.source for cell in notebook.cells if cell.cell_type == "code"]


def test_every_tutorial_and_guide_is_an_executable_notebook():
    pages = [p for folder in ("tutorials", "guides") for p in (DOCS / folder).iterdir()]
    sources = [p for p in pages if p.suffix in (".md", ".rst", ".ipynb")]
    assert sources, "no tutorial pages found"
    not_notebooks = [p.name for p in sources if p not in NOTEBOOKS]
    assert not not_notebooks, f"pages that are not executed notebooks: {not_notebooks}"


@pytest.mark.parametrize(
    "path", NOTEBOOKS, ids=[str(p.relative_to(DOCS).with_suffix("")) for p in NOTEBOOKS]
)
def test_notebook_runs(path, monkeypatch, tmp_path):
    cells = notebook_code_cells(path)
    assert cells, f"{path.name} has no code cells"
    magics = [line for cell in cells for line in cell.splitlines() if re.match(r"\s*[%!]", line)]
    assert not magics, f"{path.name}: IPython magics do not run outside Jupyter: {magics}"
    monkeypatch.chdir(tmp_path)  # a notebook that writes files writes them here
    namespace = {"__name__": f"notebook_{path.stem}"}
    with warnings.catch_warnings():
        # The suite ignores this warning; a page must not: it teaches passing target_bank,
        # and silences the warning explicitly where a small normalizer is the point.
        warnings.filterwarnings("error", category=SmallNormalizerWarning)
        for number, source in enumerate(cells):
            exec(compile(source, f"{path}[cell {number}]", "exec"), namespace)


@pytest.mark.slow
def test_sphinx_build_has_no_warnings_and_is_offline(tmp_path):
    sphinx_build = pytest.importorskip("sphinx.cmd.build")
    html = tmp_path / "html"
    args = ["-W", "--keep-going", "-q", "-b", "html", "-D", "nb_execution_mode=off"]
    status = sphinx_build.build_main(args + [str(DOCS), str(html)])
    assert status == 0
    # MathJax is served from the build itself, and no page loads a script from the network.
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file()
    math_page = (html / "math.html").read_text()
    assert 'src="_static/mathjax/tex-chtml.js' in math_page
    for page in html.rglob("*.html"):
        remote = re.findall(
            r'<(?:script|link)[^>]+(?:src|href)="(?:https?:)?//[^"]+"', page.read_text()
        )
        assert not remote, f"{page.relative_to(html)} loads {remote}"


def test_math_page_cites_tests_that_exist():
    """Every ``tests/...py::name`` on the mathematics page names a test that is there."""
    root = DOCS.parent
    cited = re.findall(r"``(tests/[\w/]+\.py)::(\w+)``", (DOCS / "math.rst").read_text())
    assert len(cited) >= 30, "the mathematics page should cite the tests of its formulas"
    missing = []
    for path, name in cited:
        source = root / path
        if not source.is_file() or not re.search(
            rf"^\s*(def|class) {name}\b", source.read_text(), re.M
        ):
            missing.append(f"{path}::{name}")
    assert not missing, f"the mathematics page cites tests that do not exist: {missing}"


def test_docs_cite_the_mathematics_page_not_an_internal_note():
    pages = [DOCS / "index.rst", DOCS / "math.rst"]
    pages += [p for folder in ("tutorials", "guides") for p in (DOCS / folder).glob("*.*")]
    offenders = [p.name for p in pages if "MATH.md" in p.read_text()]
    assert not offenders, f"pages citing MATH.md instead of docs/math: {offenders}"


def test_cli_page_documents_options_the_commands_have(capsys):
    """Every ``--option`` on the CLI page is an option of some ``pyro-contrast`` command."""
    from pyro_contrast.cli import main

    helps = []
    for command in ("demo", "bridge", "compare", "diagnose"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        helps.append(capsys.readouterr().out)
    documented = set(re.findall(r"(--[a-z][a-z0-9-]*)", (DOCS / "cli.rst").read_text()))
    assert len(documented) >= 10
    unknown = sorted(o for o in documented if not any(re.search(rf"{o}\b", h) for h in helps))
    assert not unknown, f"the CLI page documents options no command has: {unknown}"


def test_every_public_module_has_an_api_page():
    # a module users import (no leading underscore anywhere in its path) is documented,
    # itself or through its package's page (a package that re-exports its modules' API)
    import pkgutil

    import pyro_contrast

    documented = set()
    for page in (DOCS / "api").glob("*.rst"):
        documented.update(re.findall(r"\.\. automodule:: (\S+)", page.read_text()))
    public = {
        info.name
        for info in pkgutil.walk_packages(pyro_contrast.__path__, "pyro_contrast.")
        if not info.ispkg and not any(part.startswith("_") for part in info.name.split("."))
    }

    def covered(name):
        parts = name.split(".")
        return any(".".join(parts[:i]) in documented for i in range(2, len(parts) + 1))

    assert sorted(name for name in public if not covered(name)) == []
