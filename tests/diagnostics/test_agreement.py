import numpy as np
import pytest
import torch
from scipy import stats

from pyro_contrast.diagnostics import ranking_agreement


def test_identical_and_reversed():
    s = torch.randn(30, 6)
    same = ranking_agreement(3 * s - 1, s, generator=0)
    assert same.kendall_tau == pytest.approx(1.0) and same.top1_agreement == 1.0
    assert same.top1_interval == (1.0, 1.0)
    reverse = ranking_agreement(-s, s, generator=0)
    assert reverse.kendall_tau == pytest.approx(-1.0) and reverse.top1_agreement == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_scipy_with_ties(dtype):
    reference = torch.randint(0, 4, (25, 7)).to(dtype)
    scores = reference + torch.randint(0, 3, (25, 7)).to(dtype)
    result = ranking_agreement(scores, reference, generator=0)
    taus = [stats.kendalltau(s, r).statistic for s, r in zip(scores, reference, strict=True)]
    assert np.allclose(result.kendall_tau_per_query.numpy(), taus, equal_nan=True)
    assert result.kendall_tau == pytest.approx(np.nanmean(taus), rel=1e-12)
    top1 = np.mean((scores.argmax(-1) == reference.argmax(-1)).numpy())
    assert result.top1_agreement == pytest.approx(top1)


def test_bootstrap_interval():
    s = torch.randn(400, 5)
    noisy = s + 0.8 * torch.randn(400, 5)
    result = ranking_agreement(noisy, s, num_bootstrap=2000, confidence=0.9, generator=1)
    low, high = result.top1_interval
    assert low <= result.top1_agreement <= high
    # percentile interval of a mean of 400 Bernoullis: width ~ 2 * 1.645 * sqrt(p(1-p)/400)
    p = result.top1_agreement
    expected = 2 * 1.645 * (p * (1 - p) / 400) ** 0.5
    assert high - low == pytest.approx(expected, rel=0.15)
    low, high = result.kendall_tau_interval
    assert low < result.kendall_tau < high
    assert "RankingAgreement" in repr(result)


def test_constant_rows_are_skipped():
    reference = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    result = ranking_agreement(reference.clone(), reference, generator=0)
    assert torch.isnan(result.kendall_tau_per_query[1])
    assert result.kendall_tau == pytest.approx(1.0)


@pytest.mark.parametrize(
    "scores,reference,match",
    [
        (torch.randn(3, 4), torch.randn(3, 5), "same shape"),
        (torch.randn(3, 1), torch.randn(3, 1), "K >= 2"),
        (torch.randn(3), torch.randn(3), "shape \\(N, K\\)"),
        (torch.full((2, 2), float("inf")), torch.randn(2, 2), "inf"),
    ],
)
def test_bad_input(scores, reference, match):
    with pytest.raises(ValueError, match=match):
        ranking_agreement(scores, reference)


def test_bad_options():
    s = torch.randn(3, 4)
    with pytest.raises(ValueError, match="confidence"):
        ranking_agreement(s, s, confidence=1.0)
    with pytest.raises(ValueError, match="num_bootstrap"):
        ranking_agreement(s, s, num_bootstrap=0)
