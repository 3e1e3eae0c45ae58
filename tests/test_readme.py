"""The README's example runs as written, and its demo output is the demo's."""

import pathlib
import re

import pytest
import torch

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
# Lines whose numbers are wall-clock times or folder names: not compared.
_VOLATILE = re.compile(r"trained in \d+ s|Done in \d+ s|pyro-contrast-demo[-\d]*")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?")


def test_readme_example_runs_and_matches_enumeration():
    text = README.read_text()
    code = re.findall(r"```python\n(.*?)```", text, flags=re.S)[0]
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert namespace["exact"].shape == (8, 32)
    assert namespace["shortcut"].shape == (8, 32)
    import pyro

    trace = pyro.poutine.trace(namespace["model"]).get_trace(
        namespace["a"], torch.zeros(8, dtype=torch.long)
    )
    assert trace.nodes["c"]["fn"].batch_shape == (8,)


def test_readme_gives_the_two_commands():
    text = README.read_text()
    assert 'pip install -e ".[test]" && pyro-contrast demo' in text
    assert "\npytest\n" in text


def readme_demo_output():
    """The demo's printed output as the README shows it."""
    blocks = re.findall(r"```text\n(.*?)```", README.read_text(), flags=re.S)
    (block,) = [b for b in blocks if "Scene 1/2: shared" in b]
    return block.rstrip("\n")


def test_readme_shows_both_scenes_in_80_columns():
    block = readme_demo_output()
    for scene in ("Scene 1/2: shared", "Scene 2/2: separate", "Verdict (shared):"):
        assert scene in block
    assert "Verdict (separate):" in block
    assert max(len(line) for line in block.splitlines()) <= 80


def assert_matches_readme(printed):
    """The README's demo output equals ``printed``: the same text, the same numbers (to the
    last printed digit's rounding), except wall-clock times and folder names."""
    expected = readme_demo_output().splitlines()
    actual = printed.rstrip("\n").splitlines()
    assert len(actual) == len(expected), "README.md's demo output is stale: paste the new one"
    for want, got in zip(expected, actual, strict=True):
        want, got = _VOLATILE.sub("<volatile>", want), _VOLATILE.sub("<volatile>", got)
        assert _NUMBER.sub("#", want) == _NUMBER.sub("#", got), (want, got)
        for a, b in zip(_NUMBER.findall(want), _NUMBER.findall(got), strict=True):
            assert float(a) == pytest.approx(float(b), rel=0.05, abs=2e-3), (want, got)
