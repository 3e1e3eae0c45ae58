import itertools

import numpy as np
import pytest
import scipy.stats
import torch
from scipy.spatial.distance import jensenshannon

from pyro_contrast.studies import metrics
from tests.common import assert_close

SHAPES = [(1, 2), (7, 5), (30, 12)]


def _scores(shape, ties, seed=0):
    rng = np.random.default_rng(seed)
    if ties:  # small integers: many ties, including whole constant rows for K=2
        return rng.integers(0, 3, size=shape).astype(np.float64)
    return rng.normal(size=shape) * 5


def _enumerated_ranks(row, positive):
    """All ranks the positive can take when ties are ordered in every possible way."""
    others = [i for i in range(len(row)) if i != positive]
    ranks = []
    for order in itertools.permutations(range(len(row))):
        # a permutation is a tie-break order: sort by (score desc, position in order)
        key = {i: (-row[i], order.index(i)) for i in range(len(row))}
        ranks.append(1 + sum(key[i] < key[positive] for i in others))
    return np.array(ranks)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_recall_and_mrr_match_tie_break_enumeration(k):
    scores = _scores((12, 5), ties=True)
    positives = np.random.default_rng(1).integers(0, 5, size=12)
    recall = metrics.recall_at_k(scores, positives, k)
    mrr = metrics.reciprocal_rank(scores, positives)
    for n in range(12):
        ranks = _enumerated_ranks(scores[n], positives[n])
        assert_close(recall[n], (ranks <= k).mean(), atol=1e-12)
        assert_close(mrr[n], (1.0 / ranks).mean(), atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_recall_and_mrr_without_ties_match_argsort(shape):
    scores = _scores(shape, ties=False)
    positives = np.random.default_rng(1).integers(0, shape[1], size=shape[0])
    order = np.argsort(-scores, axis=1)
    rank = 1 + np.argmax(order == positives[:, None], axis=1)
    for k in (1, 2, shape[1]):
        assert_close(metrics.recall_at_k(scores, positives, k), (rank <= k).astype(float))
    assert_close(metrics.reciprocal_rank(scores, positives), 1.0 / rank)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("shape", SHAPES + [(9, 60)])  # K = 60 takes the O(K log K) path
def test_rank_correlations_match_scipy(shape, ties):
    x, y = _scores(shape, ties, seed=0), _scores(shape, ties, seed=1)
    expected_s, expected_k = [], []
    for a, b in zip(x, y, strict=True):
        if np.ptp(a) == 0 or np.ptp(b) == 0:
            expected_s.append(np.nan)
            expected_k.append(np.nan)
            continue
        expected_s.append(scipy.stats.spearmanr(a, b).statistic)
        expected_k.append(scipy.stats.kendalltau(a, b).statistic)  # tau-b
    assert_close(metrics.spearman(x, y), np.array(expected_s), atol=1e-12)
    assert_close(metrics.kendall(x, y), np.array(expected_k), atol=1e-12)
    assert_close(metrics.kendall(x, y, chunk_size=2), np.array(expected_k), atol=1e-12)
    # both algorithms agree whatever the size
    assert_close(metrics._kendall_knight(x, y), np.array(expected_k), atol=1e-12)


def test_kendall_is_fast_for_many_candidates():
    import time

    x, y = _scores((500, 1000), False, 0), _scores((500, 1000), True, 1)
    start = time.perf_counter()
    tau = metrics.kendall(x, y)
    # the O(K^2) path took ~60 s here; O(K log K) takes ~0.5 s, generous bound for CI load
    assert time.perf_counter() - start < 10.0
    expected = scipy.stats.kendalltau(x[0], y[0]).statistic
    assert_close(tau[0], expected, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_divergences_match_scipy(shape):
    x, y = _scores(shape, False, 0), _scores(shape, False, 1)
    p = scipy.special.softmax(x, axis=1)
    q = scipy.special.softmax(y, axis=1)
    kl = [scipy.stats.entropy(a, b) for a, b in zip(p, q, strict=True)]
    js = [jensenshannon(a, b) ** 2 for a, b in zip(p, q, strict=True)]
    assert_close(metrics.kl_divergence(x, y), np.array(kl), atol=1e-10)
    assert_close(metrics.jensen_shannon(x, y), np.array(js), atol=1e-10)


def test_divergences_are_finite_for_scores_of_hundreds_of_nats():
    x = np.array([[0.0, -900.0, 5.0], [800.0, 0.0, -800.0]])
    y = np.array([[-900.0, 0.0, 5.0], [0.0, 800.0, 0.0]])
    kl = metrics.kl_divergence(x, y)
    js = metrics.jensen_shannon(x, y)
    assert np.isfinite(kl).all() and np.isfinite(js).all()
    # row 1: p puts all mass on candidate 0, q all on candidate 1: disjoint supports
    assert_close(js[1], np.log(2.0), atol=1e-12)
    assert_close(kl[1], 800.0, atol=1e-9)  # log p0 - log q0 = 0 - (-800)
    assert_close(metrics.kl_divergence(x, x), np.zeros(2))


def test_top1_agreement():
    x = np.array([[0.0, 1.0, 2.0], [5.0, 1.0, 0.0]])
    y = np.array([[0.0, 3.0, 9.0], [0.0, 1.0, 2.0]])
    assert_close(metrics.top1_agreement(x, y), np.array([1.0, 0.0]))


@pytest.mark.parametrize("center", [False, True])
def test_calibration_matches_linregress(center):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 6)) + rng.normal(size=(20, 1)) * 3
    y = 0.7 * x + 2.0 + rng.normal(size=(20, 6))
    moments = metrics.calibration_moments(y, x, center=center)
    slope, intercept, r2 = metrics.calibration_from_moments(moments.sum(0), x.size)
    if center:
        x = x - x.mean(1, keepdims=True)
        y = y - y.mean(1, keepdims=True)
    fit = scipy.stats.linregress(x.ravel(), y.ravel())
    assert_close(slope, fit.slope, atol=1e-10)
    assert_close(intercept, fit.intercept, atol=1e-10)
    assert_close(r2, fit.rvalue**2, atol=1e-10)


def test_calibration_of_constant_scores_is_nan():
    moments = metrics.calibration_moments(np.eye(3), np.ones((3, 3)))
    slope, intercept, r2 = metrics.calibration_from_moments(moments.sum(0), 9)
    assert np.isnan(slope) and np.isnan(intercept) and np.isnan(r2)


@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_grouped_candidates_keeps_each_groups_block(library):
    from pyro_contrast.studies.metrics import grouped_candidates

    full = np.arange(36.0).reshape(6, 6)
    matrix = full if library == "numpy" else torch.as_tensor(full)
    out = np.asarray(grouped_candidates(matrix, 3))
    expected = np.concatenate([full[:3, :3], full[3:, 3:]])
    np.testing.assert_array_equal(out, expected)
    assert np.asarray(grouped_candidates(matrix[:5, :5], 2)).shape == (4, 2)
