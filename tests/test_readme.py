"""The README's example runs as written."""

import pathlib
import re

import torch

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


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
