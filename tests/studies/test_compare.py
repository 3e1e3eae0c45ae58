import json
import os
import shutil
import time

import numpy as np
import pandas as pd
import pytest
import torch

from pyro_contrast.studies.compare import ComparisonResult, compare
from tests.common import assert_close


def _study(num_queries=400, num_candidates=8, seed=0):
    """Truth, positives drawn from its candidate conditional, and noisy methods."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=(num_queries, num_candidates)) * 2
    p = np.exp(truth - truth.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    positives = (p.cumsum(1) > rng.random((num_queries, 1))).argmax(1)
    scores = {
        "exact": truth + 0.1 * rng.normal(size=truth.shape),
        "lse": truth + rng.normal(size=truth.shape),
        "direct": rng.normal(size=truth.shape),
    }
    return scores, truth, positives


def test_table_layout_and_default_reference():
    scores, truth, positives = _study()
    result = compare(scores, truth=truth, positives=positives, ks=(1, 3), num_bootstrap=50)
    assert list(result.table.columns) == ["method", "metric", "estimate", "lower", "upper"]
    assert result.methods == ["truth", "exact", "lse", "direct"]
    assert result.metrics[:3] == ["recall@1", "recall@3", "mrr"]
    assert {"spearman", "kendall", "kl", "js", "top1_agreement", "calibration_r2"} <= set(
        result.metrics
    )
    assert result.reference == "truth"
    assert compare(scores, positives=positives, num_bootstrap=0).reference == "exact"
    only_retrieval = compare({"a": truth}, positives=positives, num_bootstrap=0)
    assert only_retrieval.reference is None and only_retrieval.metrics == [
        "recall@1",
        "recall@5",
        "mrr",
    ]


def test_estimates_match_direct_computation():
    scores, truth, positives = _study()
    result = compare(scores, truth=truth, positives=positives, num_bootstrap=0)
    for method, value in [("truth", truth)] + list(scores.items()):
        hits = value.argmax(1) == positives  # continuous scores: no ties
        assert_close(result.estimate(method, "recall@1"), hits.mean())
        agree = value.argmax(1) == truth.argmax(1)
        assert_close(result.estimate(method, "top1_agreement"), agree.mean())
    # the truth's own recall@1 is the Bayes rate: the truth ranks best, the noise worst
    recall = result.wide()["recall@1"]
    assert recall["truth"] > recall["lse"] > recall["direct"]
    assert result.estimate("truth", "kl") == 0.0


def test_bootstrap_interval_has_binomial_width():
    scores, truth, positives = _study(num_queries=1000)
    result = compare(scores, truth=truth, positives=positives, num_bootstrap=2000, seed=1)
    row = result.table.query("method == 'lse' and metric == 'recall@1'").iloc[0]
    p = row.estimate
    expected = 2 * 1.959964 * np.sqrt(p * (1 - p) / 1000)
    # the percentile interval of a bootstrap mean of 0/1 values approaches the normal one;
    # with 2000 replicates its width has a Monte Carlo error of a few percent
    assert abs((row.upper - row.lower) / expected - 1) < 0.12
    assert row.lower <= p <= row.upper


def test_bootstrap_is_seeded_and_paired():
    scores, truth, positives = _study()
    a = compare(scores, truth=truth, positives=positives, num_bootstrap=100, seed=3)
    b = compare(scores, truth=truth, positives=positives, num_bootstrap=100, seed=3)
    c = compare(scores, truth=truth, positives=positives, num_bootstrap=100, seed=4)
    pd.testing.assert_frame_equal(a.table, b.table)
    assert not np.allclose(a.table["lower"], c.table["lower"], equal_nan=True)
    # a method identical to the reference agrees perfectly in every replicate
    same = compare({"exact": truth, "copy": truth}, positives=positives, num_bootstrap=100)
    rows = same.table.query("method == 'copy' and metric == 'top1_agreement'").iloc[0]
    assert rows.lower == rows.upper == 1.0


def test_bootstrap_speed():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(1000, 10))
    scores = {f"m{i}": truth + rng.normal(size=truth.shape) for i in range(5)}
    scores["exact"] = truth
    positives = rng.integers(0, 10, size=1000)
    start = time.perf_counter()
    compare(scores, positives=positives, num_bootstrap=1000)
    # about 0.3 s on one core; the bound leaves room for a loaded CI machine
    assert time.perf_counter() - start < 4.0


@pytest.mark.parametrize("center", [False, True])
def test_calibration_recovers_affine_map_despite_large_offsets(center):
    scores, truth, positives = _study()
    method = 2.0 * truth + 1e4  # over-confident by a factor two, offset by 1e4 nats
    result = compare(
        {"m": method},
        truth=truth,
        positives=positives,
        num_bootstrap=20,
        center_calibration=center,
    )
    assert_close(result.estimate("m", "calibration_slope"), 0.5, atol=1e-8)
    assert_close(result.estimate("m", "calibration_r2"), 1.0, atol=1e-8)
    if center:  # the intercept of a per-query centred fit is 0 by construction: not shown
        assert "calibration_intercept" not in result.metrics
    else:
        assert_close(result.estimate("m", "calibration_intercept"), -5e3, atol=1e-6)


def test_calibration_is_centred_per_query_by_default():
    # A critic is defined up to a term in the query: adding g(a) must not change the fit.
    scores, truth, positives = _study()
    shifted = 0.5 * truth + np.random.default_rng(1).normal(size=(len(truth), 1)) * 50
    centred = compare({"m": shifted}, truth=truth, positives=positives, num_bootstrap=0)
    assert centred.attrs["center_calibration"] is True
    assert_close(centred.estimate("m", "calibration_slope"), 2.0, atol=1e-8)
    raw = compare(
        {"m": shifted}, truth=truth, positives=positives, num_bootstrap=0, center_calibration=False
    )
    assert abs(raw.estimate("m", "calibration_slope")) < 0.1  # the query terms swamp it


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_accepts_tensors(dtype):
    scores, truth, positives = _study(num_queries=50)
    tensors = {k: torch.as_tensor(v).to(dtype) for k, v in scores.items()}
    result = compare(
        tensors,
        truth=torch.as_tensor(truth),
        positives=torch.as_tensor(positives),
        num_bootstrap=10,
    )
    assert np.isfinite(result.table["estimate"]).all()


def test_constant_rows_give_nan_correlation_not_error():
    truth = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    result = compare(
        {"flat": np.zeros((2, 3))}, truth=truth, positives=np.array([2, 0]), num_bootstrap=10
    )
    assert np.isnan(result.estimate("flat", "spearman"))
    assert_close(result.estimate("flat", "recall@1"), 1.0 / 3)  # ties: chance level
    assert "nan" in result.to_string()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"scores_by_method": {}}, TypeError, "non-empty"),
        (
            {"scores_by_method": {"a": np.zeros((3, 4)), "b": np.zeros((3, 5))}},
            ValueError,
            "'b'.*shape",
        ),
        ({"scores_by_method": {"a": np.array([[0.0, np.nan]])}}, ValueError, "'a'.*NaN"),
        ({"scores_by_method": {"a": np.zeros((2, 1))}}, ValueError, "at least 2 candidates"),
        ({"scores_by_method": {"a": np.zeros(4)}}, ValueError, r"shape \(N, K\)"),
        ({"positives": np.array([0, 4])}, ValueError, "out of range"),
        ({"positives": np.array([0.0, 1.0])}, TypeError, "integer"),
        ({"positives": np.array([0, 1, 2])}, ValueError, "positives must have shape"),
        ({"reference": "oracle"}, ValueError, "unknown reference 'oracle'"),
        ({"truth": np.zeros((2, 3))}, ValueError, "shape"),
        (
            {"scores_by_method": {"truth": np.zeros((2, 4))}, "truth": np.zeros((2, 4))},
            ValueError,
            "reserved",
        ),
        ({"ks": (0,)}, ValueError, "ks"),
        ({"ks": (5,)}, ValueError, "at most the number of candidates"),
        ({"ks": 10**20}, ValueError, "at most the number of candidates"),
        ({"ks": 1.5}, TypeError, "ks"),
        ({"num_bootstrap": -1}, ValueError, "num_bootstrap"),
        ({"num_bootstrap": 10**9}, ValueError, "num_bootstrap"),
        ({"num_bootstrap": 1e3}, TypeError, "num_bootstrap"),
        ({"confidence": 1.5}, ValueError, "confidence"),
        ({"metrics": ["bogus"]}, ValueError, "bogus"),
        ({"positives": None}, ValueError, "nothing to compare"),
    ],
)
def test_validation(kwargs, error, match):
    arguments = {
        "scores_by_method": {"a": np.zeros((2, 4)), "b": np.ones((2, 4))},
        "positives": np.array([0, 1]),
    }
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        compare(**arguments)


def test_metric_subset_and_printing():
    scores, truth, positives = _study(num_queries=60)
    result = compare(
        scores, truth=truth, positives=positives, metrics=["recall@1", "kl"], num_bootstrap=30
    )
    assert result.metrics == ["recall@1", "kl"]
    text = result.to_string(width=80)
    assert "reference: truth" in text and "±" in text
    # methods are columns, metrics are rows
    lines = text.splitlines()
    columns = next(line for line in lines if line.split() == result.methods)
    rows = lines[lines.index(columns) + 1 :]
    assert [row.split()[0] for row in rows] == ["recall@1", "kl"]
    first = rows[0].split()[1:]
    estimate = result.table.query("method == 'truth' and metric == 'recall@1'").iloc[0]
    assert float(first[0]) == pytest.approx(estimate.estimate, abs=5e-4)
    assert float(first[1][1:]) == pytest.approx((estimate.upper - estimate.lower) / 2, abs=5e-4)
    no_intervals = compare(scores, truth=truth, positives=positives, num_bootstrap=0)
    assert "±" not in no_intervals.to_string(header=False)


@pytest.mark.parametrize("num_methods", [1, 4, 9])
def test_table_fits_80_columns_and_wraps_methods_into_blocks(num_methods, monkeypatch):
    scores, truth, positives = _study(num_queries=60)
    many = {f"method_{i}": truth + (i + 1) * scores["lse"] for i in range(num_methods)}
    many["big"] = 1e3 * scores["direct"]  # wide cells: KL in the hundreds
    result = compare(many, truth=truth, positives=positives, num_bootstrap=30)
    monkeypatch.setattr(
        shutil, "get_terminal_size", lambda fallback=None: os.terminal_size((60, 24))
    )
    text = str(result)  # a terminal narrower than 80 still gets 80 columns
    assert max(len(line) for line in text.splitlines()) <= 80
    for method in result.methods:
        assert sum(line.split().count(method) for line in text.splitlines()) == 1
    blocks = text.count("\nrecall@1 ")
    assert (blocks > 1) == (num_methods > 3)
    monkeypatch.setattr(
        shutil, "get_terminal_size", lambda fallback=None: os.terminal_size((400, 24))
    )
    assert str(result).count("\nrecall@1 ") == 1
    with pytest.raises(ValueError, match="unknown"):
        result.to_string(metrics=["bogus"])


def test_compact_cells():
    result = ComparisonResult.from_rows(
        [
            ("a", "kl", 22.3876, 20.1, 24.6),
            ("a", "mrr", 0.40812, 0.387, 0.429),
            ("a", "js", 0.00312, 0.0029, 0.0033),
            ("a", "slope", -1e-5, -0.002, 0.002),
            ("a", "r2", 0.5, float("nan"), float("nan")),
        ]
    )
    cells = [line.split(maxsplit=1)[1] for line in result.to_string(header=False).splitlines()[1:]]
    assert cells == ["22.39 ±2.25", "0.408 ±0.021", "0.0031 ±0.0002", "0.0000 ±0.0020", "0.500"]


def test_html_table_for_notebooks():
    scores, truth, positives = _study(num_queries=60)
    scores["<b>odd</b>"] = scores.pop("direct")
    result = compare(scores, truth=truth, positives=positives, num_bootstrap=20)
    page = result._repr_html_()
    assert page.startswith("<table") and page.endswith("</table>")
    assert page.count("<tr>") == len(result.metrics) + 1
    assert "&lt;b&gt;odd&lt;/b&gt;" in page and "<b>odd</b>" not in page
    row = result.table.query("method == 'exact' and metric == 'mrr'").iloc[0]
    assert f"[{row.lower:.3f}, {row.upper:.3f}]" in page


def test_legacy_positional_truth_and_positives_warn_and_agree():
    scores, truth, positives = _study(num_queries=60)
    with pytest.warns(DeprecationWarning, match="by keyword"):
        legacy = compare(scores, truth, positives, num_bootstrap=10)
    keyword = compare(scores, truth=truth, positives=positives, num_bootstrap=10)
    pd.testing.assert_frame_equal(legacy.table, keyword.table)
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError, match="multiple values"):
        compare(scores, truth, truth=truth)
    with pytest.raises(TypeError, match="1 positional"):
        compare(scores, truth, positives, "exact")


def test_default_ks_stay_below_the_number_of_candidates():
    scores, truth, positives = _study(num_queries=30, num_candidates=4)
    assert compare(scores, positives=positives, num_bootstrap=0).attrs["ks"] == [1]
    scores, truth, positives = _study(num_queries=30, num_candidates=2)
    assert compare(scores, positives=positives, num_bootstrap=0).attrs["ks"] == [1]


def test_bootstrap_in_blocks_keeps_pairing(monkeypatch):
    from pyro_contrast.studies import compare as module

    scores, truth, positives = _study(num_queries=50)
    whole = compare(scores, truth=truth, positives=positives, num_bootstrap=200, seed=2)
    monkeypatch.setattr(module, "_BOOTSTRAP_ENTRIES", 7 * 50)  # blocks of 7 replicates
    blocks = compare(
        {**scores, "copy": truth}, truth=truth, positives=positives, num_bootstrap=200, seed=2
    )
    merged = blocks.table.query("method != 'copy'").reset_index(drop=True)
    pd.testing.assert_series_equal(merged["estimate"], whole.table["estimate"])
    copy = blocks.table.query("method == 'copy' and metric == 'kl'").iloc[0]
    assert copy.lower == copy.upper == 0.0  # every replicate sees the same queries
    # block boundaries move the random stream only slightly: same intervals to noise
    width = (whole.table["upper"] - whole.table["lower"]).to_numpy()
    other = (merged["upper"] - merged["lower"]).to_numpy()
    finite = np.isfinite(width) & (width > 0)
    assert np.all(np.abs(other[finite] / width[finite] - 1) < 0.5)


def test_to_xarray():
    scores, truth, positives = _study(num_queries=60)
    result = compare(scores, truth=truth, positives=positives, num_bootstrap=30)
    dataset = result.to_xarray()
    assert dataset["estimate"].dims == ("method", "metric")
    assert set(dataset.data_vars) == {"estimate", "lower", "upper"}
    assert list(dataset["method"].values) == result.methods
    assert_close(
        dataset["estimate"].sel({"method": "lse", "metric": "mrr"}).item(),
        result.estimate("lse", "mrr"),
    )


@pytest.mark.parametrize("extension", [".json", ".nc"])
def test_save_load_round_trip(tmp_path, extension):
    scores, truth, positives = _study(num_queries=60)
    scores["flat"] = np.zeros_like(truth)  # NaN correlations must survive the trip
    result = compare(scores, truth=truth, positives=positives, ks=(2,), num_bootstrap=30)
    path = tmp_path / f"result{extension}"
    result.save(path)
    loaded = ComparisonResult.load(path)
    pd.testing.assert_frame_equal(loaded.table, result.table)
    assert loaded.attrs == result.attrs
    with pytest.raises(FileExistsError, match="overwrite=True"):
        result.save(path)
    result.save(path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary left


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match=".json or .nc"):
        ComparisonResult.load(tmp_path / "x.csv")
    with pytest.raises(FileNotFoundError):
        ComparisonResult.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        ComparisonResult.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not a saved ComparisonResult"):
        ComparisonResult.load(tmp_path / "other.json")
