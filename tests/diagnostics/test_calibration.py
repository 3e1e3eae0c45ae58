import numpy as np
import pytest
import torch

from pyro_contrast.diagnostics import calibration


def _outcomes(logits):
    return torch.distributions.Categorical(logits=logits).sample()


def _ece_by_loops(scores, positives, edges):
    probs = torch.softmax(torch.as_tensor(scores, dtype=torch.float64), -1).numpy()
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        rows = [
            i for i, p in enumerate(probs) if (lo < p.max() <= hi) or (lo == 0 and p.max() == 0)
        ]
        if rows:
            confidence = np.mean([probs[i].max() for i in rows])
            accuracy = np.mean([probs[i].argmax() == positives[i] for i in rows])
            total += len(rows) * abs(accuracy - confidence)
    return total / len(probs)


@pytest.mark.parametrize("binning", ["uniform", "quantile"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_ece_matches_direct_computation(binning, dtype):
    logits = (2 * torch.randn(300, 6)).to(dtype)
    positives = _outcomes(logits.float())
    result = calibration(logits, positives, binning=binning, num_bins=8, generator=0)
    edges = result.bins.edges.numpy()
    expected = _ece_by_loops(logits.float(), positives.numpy(), edges)
    assert result.statistic == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert int(result.bins.count.sum()) == 300
    filled = result.bins.count > 0
    assert bool(((result.bins.accuracy[filled] >= 0) & (result.bins.accuracy[filled] <= 1)).all())
    assert bool(torch.isnan(result.bins.confidence[~filled]).all())
    if binning == "quantile":
        # equal-mass bins: 300 / 8 = 37.5 per bin, up to ties at the quantiles
        assert int(result.bins.count.max()) <= 39


def test_perfect_and_p_value_form():
    logits = torch.randn(200, 3)
    result = calibration(logits, _outcomes(logits), num_bootstrap=99, generator=3)
    assert 0 < result.p_value <= 1
    assert result.p_value * 100 == pytest.approx(round(result.p_value * 100))
    again = calibration(logits, _outcomes(logits), num_bootstrap=99, generator=3)
    assert again.bins.edges.equal(result.bins.edges)
    assert "calibration" in repr(result) and "bins" in repr(result)


@pytest.mark.slow
def test_calibrated_model_rejection_rate():
    # the consistency bootstrap is an exact Monte Carlo test under the model: rate <= 0.05
    # up to binomial noise; 400 data sets give standard error 0.011 (2.75 sigma band)
    rejections = []
    for i in range(400):
        logits = 1.5 * torch.randn(300, 5)
        result = calibration(logits, _outcomes(logits), num_bootstrap=199, generator=i)
        rejections.append(result.rejects(0.05))
    assert abs(np.mean(rejections) - 0.05) <= 0.03, np.mean(rejections)


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_mis_tempered_model_is_rejected(temperature):
    # outcomes come from softmax(logits / T) but the critic reports softmax(logits): over-
    # confident for T = 2, under-confident for T = 0.5
    rejections = []
    for i in range(40):
        logits = 2.0 * torch.randn(500, 5)
        positives = _outcomes(logits / temperature)
        rejections.append(calibration(logits, positives, num_bootstrap=199, generator=i).rejects())
    assert np.mean(rejections) >= 0.95


@pytest.mark.parametrize(
    "scores,positives,error,match",
    [
        (torch.randn(5, 1), torch.zeros(5, dtype=torch.long), ValueError, "K >= 2"),
        (torch.randn(5, 3), torch.zeros(4, dtype=torch.long), ValueError, "shape \\(5,\\)"),
        (torch.randn(5, 3), torch.full((5,), 3), ValueError, "\\[0, 3\\)"),
        (torch.randn(5, 3), torch.zeros(5), TypeError, "integer"),
        (torch.full((5, 3), float("nan")), torch.zeros(5, dtype=torch.long), ValueError, "NaN"),
    ],
)
def test_bad_input(scores, positives, error, match):
    with pytest.raises(error, match=match):
        calibration(scores, positives)


def test_bad_options():
    scores, positives = torch.randn(5, 3), torch.zeros(5, dtype=torch.long)
    with pytest.raises(ValueError, match="binning"):
        calibration(scores, positives, binning="log")
    with pytest.raises(ValueError, match="num_bins"):
        calibration(scores, positives, num_bins=0)
    with pytest.raises(ValueError, match="num_bootstrap"):
        calibration(scores, positives, num_bootstrap=-1)
