"""The documentation builds without warnings, and every tutorial's code runs as written."""

import pathlib
import re
import textwrap

import pytest

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"
TUTORIALS = sorted((DOCS / "tutorials").glob("*.rst"))


def tutorial_code(path):
    """The page's ``.. code-block:: python`` blocks, concatenated in order."""
    blocks = re.findall(r"\.\. code-block:: python\n\n((?:[ ]{4}.*\n|\n)+)", path.read_text())
    return "\n".join(textwrap.dedent(block) for block in blocks)


@pytest.mark.slow
def test_sphinx_build_has_no_warnings(tmp_path):
    sphinx_build = pytest.importorskip("sphinx.cmd.build")
    status = sphinx_build.build_main(
        ["-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(tmp_path / "html")]
    )
    assert status == 0


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_code_runs(path, capsys):
    code = tutorial_code(path)
    assert code.strip(), f"{path.name} has no python code blocks"
    exec(compile(code, str(path), "exec"), {"__name__": f"tutorial_{path.stem}"})
