import warnings

import arviz as az
import numpy as np
import pytest
import torch

from pyro_contrast.studies.arviz import compare_elpd, to_inference_data
from tests.common import assert_close

# ArviZ 0.x calls DataFrame.sort_values(inplace=True) inside az.compare, deprecated by pandas 3
PANDAS_INPLACE = "ignore:.*inplace keyword in DataFrame.sort_values.*:DeprecationWarning"


def _toy(num_queries=60, num_candidates=6, seed=0):
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=(num_queries, num_candidates)) * 2
    p = np.exp(truth - truth.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    positives = (p.cumsum(1) > rng.random((num_queries, 1))).argmax(1)
    scores = {
        "exact": truth,
        "lse": truth + rng.normal(size=truth.shape),
        "direct": rng.normal(size=truth.shape),
    }
    return scores, positives


def _log_lik(scores, positives):
    scores = torch.as_tensor(scores, dtype=torch.float64)
    return scores.log_softmax(-1)[torch.arange(len(positives)), torch.as_tensor(positives)]


@pytest.mark.parametrize("shape", [(1, 2), (5, 3), (40, 7)])
def test_log_likelihood_is_log_softmax_at_positive(shape):
    rng = np.random.default_rng(0)
    scores = rng.normal(size=shape) * 100  # hundreds of nats
    positives = rng.integers(0, shape[1], size=shape[0])
    data = to_inference_data({"m": scores}, positives)["m"]
    log_lik = data.log_likelihood["match"]
    assert log_lik.dims == ("chain", "draw", "query")
    assert log_lik.shape == (1, 2, shape[0])
    assert_close(log_lik.values[0, 0], _log_lik(scores, positives), atol=1e-10)
    assert_close(log_lik.values[0, 1], log_lik.values[0, 0], atol=0)
    assert data.posterior["log_ratio"].dims == ("chain", "draw", "query", "candidate")
    assert (data.observed_data["match"].values == positives).all()
    assert data.attrs["deterministic"] == 1


def test_posterior_samples_are_the_draws():
    scores, positives = _toy()
    rng = np.random.default_rng(1)
    samples = scores["exact"][None] + 0.1 * rng.normal(size=(30,) + scores["exact"].shape)
    data = to_inference_data(scores, positives, posterior_samples={"bayes": samples})
    assert list(data) == ["exact", "lse", "direct", "bayes"]
    assert data["bayes"].log_likelihood["match"].shape == (1, 30, len(positives))
    assert data["bayes"].attrs["deterministic"] == 0
    assert_close(
        data["bayes"].log_likelihood["match"].values[0, 7],
        _log_lik(samples[7], positives),
        atol=1e-10,
    )
    # a method given both ways uses its samples
    data = to_inference_data(scores, positives, posterior_samples={"exact": samples})
    assert data["exact"].log_likelihood["match"].shape[1] == 30


def test_waic_and_exact_loo_of_deterministic_method():
    scores, positives = _toy()
    data = to_inference_data(scores, positives)
    pointwise = _log_lik(scores["lse"], positives).numpy()
    expected_se = np.sqrt(len(pointwise) * pointwise.var())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # WAIC of a point mass: no variance, no warning
        waic = az.waic(data["lse"])
    assert_close(waic["elpd_waic"], pointwise.sum(), atol=1e-9)
    assert_close(waic["p_waic"], 0.0, atol=1e-12)
    assert_close(waic["se"], expected_se, atol=1e-9)
    table = compare_elpd(data)
    assert list(table.index) == ["exact", "lse", "direct"]
    assert_close(table.loc["lse", "elpd_loo"], pointwise.sum(), atol=1e-9)
    assert_close(table.loc["lse", "p_loo"], 0.0, atol=1e-12)
    assert_close(table.loc["lse", "se"], expected_se, atol=1e-9)
    assert not table["warning"].any()
    diff = _log_lik(scores["exact"], positives).numpy() - pointwise
    assert_close(table.loc["lse", "elpd_diff"], diff.sum(), atol=1e-9)
    assert_close(table.loc["lse", "dse"], np.sqrt(len(diff) * diff.var()), atol=1e-9)
    waic_table = compare_elpd(data, ic="waic")
    assert_close(np.array(waic_table["elpd_waic"]), np.array(table["elpd_loo"]), atol=1e-9)


@pytest.mark.filterwarnings(PANDAS_INPLACE)
def test_plain_az_compare_works_and_flags_the_degenerate_psis_tail():
    scores, positives = _toy()
    data = to_inference_data(scores, positives)
    # PSIS cannot fit a tail to constant weights: ArviZ warns although the value is exact
    with pytest.warns(UserWarning, match="Pareto"):
        table = az.compare(data)
    assert list(table.index) == ["exact", "lse", "direct"]
    assert_close(
        table.loc["direct", "elpd_loo"], _log_lik(scores["direct"], positives).sum(), atol=1e-9
    )
    assert table["warning"].all()
    table = az.compare(data, ic="waic")
    assert not table["warning"].any()


def test_compare_elpd_runs_psis_on_posterior_samples():
    scores, positives = _toy(num_queries=40)
    rng = np.random.default_rng(2)
    samples = scores["exact"][None] + 0.02 * rng.normal(size=(200,) + scores["exact"].shape)
    data = to_inference_data(scores, positives, posterior_samples={"bayes": samples})
    table = compare_elpd(data)
    lppd = np.log(np.exp(np.stack([_log_lik(s, positives).numpy() for s in samples])).mean(0))
    # small posterior spread: PSIS-LOO stays within its effective-parameter count of the lppd
    assert 0 <= lppd.sum() - table.loc["bayes", "elpd_loo"] < 3 * table.loc["bayes", "p_loo"]
    assert 0 < table.loc["bayes", "p_loo"] < 1.0
    assert not table.loc["bayes", "warning"]
    assert table.loc["exact", "p_loo"] == 0.0


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        (({"a": np.zeros((2, 3))}, np.array([0, 3])), {}, ValueError, "out of range"),
        (({"a": np.zeros((2, 3))}, np.array([0.0, 1.0])), {}, TypeError, "integer"),
        (({"a": np.array([[0.0, np.nan]])}, np.array([0])), {}, ValueError, "'a'.*NaN"),
        (({}, np.array([0])), {}, ValueError, "empty"),
        (([np.zeros((2, 3))], np.array([0, 1])), {}, TypeError, "dict"),
        (
            ({"a": np.zeros((2, 3))}, np.array([0, 1])),
            {"posterior_samples": {"b": np.zeros((2, 3))}},
            ValueError,
            r"\(S, N, K\)",
        ),
        (
            ({"a": np.zeros((2, 3))}, np.array([0, 1])),
            {"posterior_samples": {"b": np.zeros((4, 2, 5))}},
            ValueError,
            "expected",
        ),
    ],
)
def test_validation(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        to_inference_data(*args, **kwargs)


def test_compare_elpd_rejects_unknown_ic():
    scores, positives = _toy(num_queries=5)
    with pytest.raises(ValueError, match="ic"):
        compare_elpd(to_inference_data(scores, positives), ic="aic")
