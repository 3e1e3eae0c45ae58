import json
import multiprocessing
import os
import random
import shutil
import signal
import time
import tracemalloc

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyro_contrast._files import FolderExistsError
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
    assert (folder / "table.txt").read_text().strip() == result.to_string(width=100).strip()


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
    assert not (folder / "notes.txt").exists()  # the folder is replaced as a whole
    study.save(folder, overwrite=True)
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


def _two_studies():
    first = _study()
    second = Study(
        {name: value + 1.0 for name, value in first.scores_by_method.items()},
        positives=first.positives,
        metadata={"which": "second"},
    )
    return first, second


def _assert_same(loaded, study):
    assert list(loaded.scores_by_method) == list(study.scores_by_method)
    for name, value in study.scores_by_method.items():
        np.testing.assert_array_equal(loaded.scores_by_method[name], value)
    assert loaded.metadata == study.metadata


def test_load_refuses_files_from_two_studies(tmp_path):
    """What version 0.1.0's file-by-file --force left when killed: compare read it silently."""
    first, second = _two_studies()
    first.save(tmp_path / "a", result=first.compare(num_bootstrap=0), plots=False)
    second.save(tmp_path / "b")
    shutil.copy(tmp_path / "b" / "scores.npz", tmp_path / "a" / "scores.npz")
    with pytest.raises(ValueError, match="scores.npz does not match .* mixes two studies"):
        Study.load(tmp_path / "a")
    # a stale result beside a study saved without one
    shutil.copy(tmp_path / "a" / "result.json", tmp_path / "b" / "result.json")
    with pytest.raises(ValueError, match="mixes two studies .result.json is not part of the study"):
        Study.load(tmp_path / "b")
    (tmp_path / "b" / "result.json").unlink()
    _assert_same(Study.load(tmp_path / "b"), second)
    (tmp_path / "b" / "scores.npz").unlink()
    with pytest.raises(ValueError, match="no scores.npz"):
        Study.load(tmp_path / "b")


def test_load_refuses_a_missing_file(tmp_path):
    study = _study()
    study.save(tmp_path / "s", result=study.compare(num_bootstrap=0), plots=False)
    (tmp_path / "s" / "table.csv").unlink()
    with pytest.raises(ValueError, match=r"incomplete study \(table.csv is missing"):
        Study.load(tmp_path / "s")


def _as_version_1(folder):
    """Rewrite study.json as version 1 wrote it (no digests): the content checks still hold."""
    path = folder / "study.json"
    description = json.loads(path.read_text())
    description.update(version=1)
    description.pop("files")
    path.write_text(json.dumps(description))


@pytest.mark.parametrize("version_1", [False, True])
@pytest.mark.parametrize("keep", [0, 30, 200, -1])
def test_truncated_scores(tmp_path, version_1, keep):
    _study().save(tmp_path / "s")
    if version_1:
        _as_version_1(tmp_path / "s")
    path = tmp_path / "s" / "scores.npz"
    data = path.read_bytes()
    path.write_bytes(data[: keep if keep >= 0 else len(data) - 7])
    with pytest.raises(ValueError, match="scores.npz") as info:
        Study.load(tmp_path / "s")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"methods": "exact"}, "'methods' must be"),
        ({"methods": []}, "'methods' must be"),
        ({"methods": [1, 2]}, "'methods' must be"),
        ({"methods": ["exact", "exact"]}, "'methods' must be"),
        ({"metadata": [1, 2]}, "'metadata' must be an object"),
        ({"metadata": "text"}, "'metadata' must be an object"),
        ({"version": "1"}, "unsupported study version"),
        ({"version": True}, "unsupported study version"),
        ({"version": 99}, "unsupported study version"),
        ({"files": ["scores.npz"]}, "'files' must map"),
        ({"files": {"scores.npz": 1}}, "'files' must map"),
        ({"format": 3}, "does not describe"),
    ],
)
def test_study_json_with_wrong_types(tmp_path, change, match):
    _study().save(tmp_path / "s")
    path = tmp_path / "s" / "study.json"
    description = json.loads(path.read_text())
    if "files" not in change and change.get("version") is None:
        description.pop("files")  # a hand-edited file: version 1 has no digests to check
        description["version"] = 1
    description.update(change)
    path.write_text(json.dumps(description))
    with pytest.raises(ValueError, match=match):
        Study.load(tmp_path / "s")


def test_scores_with_wrong_types_or_shapes(tmp_path):
    _study().save(tmp_path / "s")
    _as_version_1(tmp_path / "s")
    path = tmp_path / "s" / "scores.npz"
    cases = [
        ({"method/exact": np.array(["a", "b"]), "method/direct": np.zeros((2, 2))}, TypeError),
        ({"method/exact": np.zeros((3, 2)), "method/direct": np.zeros((4, 2))}, ValueError),
        ({"method/exact": np.zeros((3, 2)), "method/direct": np.full((3, 2), np.nan)}, ValueError),
        (
            {
                "method/exact": np.zeros((3, 2)),
                "method/direct": np.zeros((3, 2)),
                "positives": np.zeros(3),
            },
            TypeError,
        ),
    ]
    for arrays, error in cases:
        np.savez(path, **arrays)
        with pytest.raises(error):
            Study.load(tmp_path / "s")
    np.savez(path, **{"method/exact": np.array([{"a": 1}], dtype=object)}, allow_pickle=True)
    with pytest.raises(ValueError, match="Python objects"):
        Study.load(tmp_path / "s")


def test_compressed_scores_bomb_refused_before_reading(tmp_path):
    _study().save(tmp_path / "s")
    _as_version_1(tmp_path / "s")
    path = tmp_path / "s" / "scores.npz"
    zeros = np.zeros((5_000, 1_000))  # 40 MB of float64 that deflate to 40 kB
    np.savez_compressed(path, **{"method/exact": zeros, "method/direct": zeros})
    del zeros
    assert path.stat().st_size < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="inflate to more than 50000000 bytes"):
            Study.load(tmp_path / "s", max_bytes=50_000_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000  # the archive itself, not its 80 MB of arrays


def _save_in_child(study, folder, barrier, results, tag):
    write = Study._write

    def write_then_wait(self, *args):
        write(self, *args)
        barrier.wait(timeout=30)  # both have passed the entry check and staged their files

    Study._write = write_then_wait
    try:
        study.save(folder)
        results.put((tag, "won"))
    except FolderExistsError as error:
        results.put((tag, str(error)))


def test_two_concurrent_saves_exactly_one_wins(tmp_path):
    fork = multiprocessing.get_context("fork")
    studies = dict(zip(("first", "second"), _two_studies(), strict=True))
    barrier, results = fork.Barrier(2), fork.Queue()
    processes = [
        fork.Process(target=_save_in_child, args=(study, tmp_path / "s", barrier, results, tag))
        for tag, study in studies.items()
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    outcomes = dict(results.get(timeout=5) for _ in processes)
    winners = [tag for tag, outcome in outcomes.items() if outcome == "won"]
    assert len(winners) == 1, outcomes
    (loser,) = set(studies) - set(winners)
    assert "not empty" in outcomes[loser] and "\n" not in outcomes[loser]
    _assert_same(Study.load(tmp_path / "s"), studies[winners[0]])


def _replace_forever(study_pair, folder):
    for index in range(10_000):
        study_pair[index % 2].save(folder, overwrite=True)


def test_load_while_another_process_replaces(tmp_path):
    fork = multiprocessing.get_context("fork")
    first, second = _two_studies()
    first.save(tmp_path / "s")
    process = fork.Process(target=_replace_forever, args=((first, second), tmp_path / "s"))
    process.start()
    try:
        seen = set()
        for _ in range(60):
            loaded = Study.load(tmp_path / "s")
            seen.add(loaded.metadata.get("which", "first"))
            _assert_same(loaded, second if loaded.metadata.get("which") else first)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.join()
    assert seen


def test_replacement_killed_at_random_times_is_old_or_new(tmp_path):
    fork = multiprocessing.get_context("fork")
    rng = random.Random(0)
    first, second = _two_studies()
    first.save(tmp_path / "timing")
    start = time.perf_counter()
    second.save(tmp_path / "timing", overwrite=True)
    duration = time.perf_counter() - start
    outcomes = []
    for trial in range(20):
        folder = tmp_path / f"s{trial}"
        first.save(folder)
        process = fork.Process(target=second.save, args=(folder,), kwargs={"overwrite": True})
        process.start()
        time.sleep(rng.uniform(0, 1.5 * duration))
        os.kill(process.pid, signal.SIGKILL)
        process.join()
        loaded = Study.load(folder)
        which = loaded.metadata.get("which", "first")
        _assert_same(loaded, second if which == "second" else first)
        outcomes.append((process.exitcode, which))
    print(f"one save took {duration * 1e3:.1f} ms; (exit code, study) per trial: {outcomes}")
    assert any(code == -signal.SIGKILL for code, _ in outcomes)


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_files_follow_the_umask(tmp_path, mask):
    """Study folders were 0700 and their files 0600 whatever the umask."""
    study = _study()
    previous = os.umask(mask)
    try:
        study.save(tmp_path / "new", result=study.compare(num_bootstrap=0))
        (tmp_path / "old").mkdir(mode=0o777)
        study.save(tmp_path / "old", overwrite=True)
    finally:
        os.umask(previous)
    for folder in (tmp_path / "new", tmp_path / "old"):
        assert os.stat(folder).st_mode & 0o777 == 0o777 & ~mask
        for path in folder.iterdir():
            assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask, path.name


_JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-3, 3),
        st.floats(allow_nan=False),
        st.sampled_from(["exact", "direct", "scores.npz", "pyro_contrast.Study"]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=2)
    ),
    max_leaves=5,
)


@given(
    changes=st.dictionaries(
        st.sampled_from(["format", "version", "methods", "metadata", "files"]),
        _JSON_VALUES,
        max_size=2,
    ),
    version_1=st.booleans(),
    keep=st.one_of(st.just(1.0), st.floats(0, 1)),
    flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=2),
)
def test_fuzzed_study_folders_load_or_raise(tmp_path_factory, changes, version_1, keep, flips):
    folder = tmp_path_factory.mktemp("fuzz") / "s"
    Study({"exact": np.eye(3), "direct": np.ones((3, 3))}, positives=np.arange(3)).save(folder)
    if version_1:
        _as_version_1(folder)
    path = folder / "study.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    scores = bytearray((folder / "scores.npz").read_bytes())
    scores = scores[: round(keep * len(scores))]
    for where, value in flips:
        if scores:
            scores[min(int(where * len(scores)), len(scores) - 1)] = value
    (folder / "scores.npz").write_bytes(bytes(scores))
    try:
        study = Study.load(folder)
    except (ValueError, TypeError):
        return
    for value in study.scores_by_method.values():
        assert np.isfinite(value).all()


def test_saved_table_does_not_depend_on_the_terminal(tmp_path, monkeypatch):
    # eight methods: a narrow terminal would wrap them, a wide one would not
    rng = np.random.default_rng(1)
    truth = rng.normal(size=(30, 5))
    scores = {f"method_{i}": truth + i * rng.normal(size=truth.shape) for i in range(8)}
    study = Study(scores, positives=rng.integers(0, 5, size=30), truth=truth)
    result = study.compare(num_bootstrap=20)
    texts = []
    for columns in ("80", "400"):
        monkeypatch.setenv("COLUMNS", columns)
        assert result.to_string().count("\n") > 0
        folder = tmp_path / columns
        study.save(folder, result=result, plots=False)
        texts.append((folder / "table.txt").read_bytes())
    assert texts[0] == texts[1]
