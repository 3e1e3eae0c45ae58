"""Every example script is smoke-tested: a test under tests/ must run its ``main``."""

import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_every_example_is_run_by_a_test():
    scripts = sorted(p for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))
    assert scripts, "no example scripts found"
    tests = "\n".join(
        p.read_text()
        for p in (ROOT / "tests").rglob("test_*.py")
        if p.name != pathlib.Path(__file__).name
    )
    missing = [p.name for p in scripts if p.stem not in tests]
    assert not missing, f"examples without a smoke test: {missing}"


def test_examples_are_argparse_scripts_with_docstrings():
    for path in (ROOT / "examples").glob("*.py"):
        if path.name.startswith("_"):
            continue
        text = path.read_text()
        assert text.lstrip().startswith(('"""', 'r"""', "#!")), f"{path.name}: no docstring"
        # argparse directly, or through a shared parser helper (examples/_*_common.py)
        parses = "def parse_args(" in text or "argparse.ArgumentParser" in text
        assert parses and "def main(" in text, f"{path.name}: no argparse main"
