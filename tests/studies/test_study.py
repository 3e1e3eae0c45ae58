import json

import numpy as np
import pandas as pd
import pytest

from pyro_contrast.studies.compare import compare
from pyro_contrast.studies.study import Study


def _study(with_truth=True):
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(40, 6))
    scores = {
        "exact": truth + 0.1 * rng.normal(size=truth.shape),
        "direct": rng.normal(size=truth.shape),
    }
    positives = rng.integers(0, 6, size=40)
    return Study(
        scores,
        positives=positives,
        truth=truth if with_truth else None,
        metadata={"similarity": "cosine", "bank_size": 100},
    )


def test_compare_matches_function():
    study = _study()
    result = study.compare(num_bootstrap=50, ks=(1, 3))
    expected = compare(
        study.scores_by_method,
        truth=study.truth,
        positives=study.positives,
        num_bootstrap=50,
        ks=(1, 3),
    )
    pd.testing.assert_frame_equal(result.table, expected.table)


@pytest.mark.parametrize("with_truth", [True, False])
def test_save_load_round_trip(tmp_path, with_truth):
    study = _study(with_truth)
    result = study.compare(num_bootstrap=30)
    folder = tmp_path / "study"
    study.save(folder, result=result)
    assert sorted(p.name for p in folder.iterdir()) == [
        "calibration.png",
        "result.json",
        "scores.npz",
        "scores_vs_reference.png",
        "study.json",
        "table.csv",
        "table.txt",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["study"]  # no staging folder left
    loaded = Study.load(folder)
    assert list(loaded.scores_by_method) == ["exact", "direct"]
    for name, value in study.scores_by_method.items():
        np.testing.assert_array_equal(loaded.scores_by_method[name], value)
    np.testing.assert_array_equal(loaded.positives, study.positives)
    if with_truth:
        np.testing.assert_array_equal(loaded.truth, study.truth)
    else:
        assert loaded.truth is None
    assert loaded.metadata == study.metadata
    pd.testing.assert_frame_equal(loaded.result.table, result.table)
    csv = pd.read_csv(folder / "table.csv")
    np.testing.assert_allclose(csv["estimate"], result.table["estimate"])
    assert (folder / "table.txt").read_text().strip() == result.to_string().strip()


def test_method_names_that_look_like_other_keys(tmp_path):
    values = np.eye(3)
    study = Study({"truth like": values, "positives": values + 1, "a/b.c": values + 2})
    study.save(tmp_path / "s")
    loaded = Study.load(tmp_path / "s")
    assert list(loaded.scores_by_method) == ["truth like", "positives", "a/b.c"]
    assert loaded.positives is None and loaded.result is None
    np.testing.assert_array_equal(loaded.scores_by_method["a/b.c"], values + 2)


def test_never_overwrites_unasked(tmp_path):
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    study = _study()
    with pytest.raises(FileExistsError, match="not empty"):
        study.save(folder)
    study.save(folder, overwrite=True, result=study.compare(num_bootstrap=0), plots=False)
    assert (folder / "result.json").exists()
    study.save(folder, overwrite=True)
    assert (folder / "notes.txt").read_text() == "mine"  # foreign files are kept
    assert (folder / "scores.npz").exists()
    assert not (folder / "result.json").exists()  # no stale table from the earlier study
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        study.save(tmp_path / "file", overwrite=True)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        study.save(tmp_path / "missing" / "study")
    # an existing empty folder is fine
    (tmp_path / "empty").mkdir()
    study.save(tmp_path / "empty")
    assert (tmp_path / "empty" / "study.json").exists()


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such study folder"):
        Study.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a study folder"):
        Study.load(tmp_path / "empty")
    _study().save(tmp_path / "s")
    (tmp_path / "s" / "study.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="does not describe"):
        Study.load(tmp_path / "s")
    (tmp_path / "s" / "study.json").write_text("{")
    with pytest.raises(ValueError, match="cannot read"):
        Study.load(tmp_path / "s")


def test_validation():
    with pytest.raises(ValueError, match="at least one"):
        Study({})
    with pytest.raises(ValueError, match="'b'.*shape"):
        Study({"a": np.zeros((2, 3)), "b": np.zeros((3, 3))})
    with pytest.raises(ValueError, match="out of range"):
        Study({"a": np.zeros((2, 3))}, positives=np.array([0, 3]))
