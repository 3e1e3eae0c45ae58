import math

import numpy as np
import pytest
import torch
from scipy import stats

from pyro_contrast.diagnostics import sphere_uniformity

# 400 data sets: the rejection rate of a level-0.05 test has standard error
# sqrt(0.05 * 0.95 / 400) = 0.011, so 0.05 +- 0.03 is a 2.75-sigma band.
NUM_DATASETS = 400


def _uniform(shape, dtype=torch.float64):
    return torch.nn.functional.normalize(torch.randn(shape, dtype=dtype), dim=-1)


def _vmf(mu, kappa, size, seed):
    return torch.from_numpy(
        stats.vonmises_fisher(mu, kappa).rvs(size, random_state=np.random.default_rng(seed))
    )


@pytest.mark.parametrize("n,d", [(10, 64), (200, 8), (37, 3)])
def test_statistics_match_direct_formulas(n, d):
    z = _uniform((n, d))
    result = sphere_uniformity(z)
    x = z.numpy()
    s = n * d * np.sum(x.mean(0) ** 2)
    modified = (1 - 1 / (2 * n)) * s + s**2 / (2 * n * (d + 2))
    t = sum(np.outer(row, row) for row in x) / n
    dof = (d - 1) * (d + 2) / 2
    raw = n * d * (d + 2) / 2 * (np.trace(t @ t) - 1 / d)
    bingham = dof + (raw - dof) * math.sqrt(n / (n - 1))
    assert result.tests["rayleigh"].statistic == pytest.approx(modified, rel=1e-9)
    assert result.tests["bingham"].statistic == pytest.approx(bingham, rel=1e-9)
    assert result.tests["rayleigh"].dof == d
    assert result.tests["bingham"].dof == dof
    assert result.tests["rayleigh"].p_value == pytest.approx(stats.chi2.sf(modified, d), rel=1e-9)
    p_min = min(t.p_value for t in result.tests.values())
    assert result.p_value == pytest.approx(min(1.0, 2 * p_min), rel=1e-12)


def test_fisher_combination():
    result = sphere_uniformity(_uniform((50, 5)), combine="fisher")
    ps = [t.p_value for t in result.tests.values()]
    statistic = -2 * sum(math.log(p) for p in ps)
    assert result.statistic == pytest.approx(statistic, rel=1e-12)
    assert result.p_value == pytest.approx(stats.chi2.sf(statistic, 4), rel=1e-9)
    assert result.dof == 4


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_dtypes_and_invariance(dtype):
    z = _uniform((60, 6))
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    reference = sphere_uniformity(z)
    rotated = sphere_uniformity((z @ rotation).to(dtype))
    # uniformity tests are rotation invariant; low precision rounds the inputs
    tol = {torch.float16: 1e-2, torch.float32: 1e-5, torch.float64: 1e-9}[dtype]
    for name in ("rayleigh", "bingham"):
        assert rotated.tests[name].statistic == pytest.approx(
            reference.tests[name].statistic, rel=tol
        )


def test_normalizes_with_a_note_or_raises():
    z = 3.0 * _uniform((40, 4))
    result = sphere_uniformity(z)
    assert any("normalized" in note for note in result.notes)
    assert result.statistic == pytest.approx(sphere_uniformity(z / 3.0).statistic, rel=1e-12)
    assert not sphere_uniformity(z / 3.0).notes
    with pytest.raises(ValueError, match="unit-norm"):
        sphere_uniformity(z, normalize=False)


@pytest.mark.parametrize(
    "z,error,match",
    [
        (torch.zeros(5, 3), ValueError, "zero row"),
        (torch.full((5, 3), float("nan")), ValueError, "NaN"),
        (torch.randn(5), ValueError, "at least 2 columns"),
        (torch.randn(1, 3), ValueError, "at least 2 rows"),
        (torch.randn(2, 3, 4), ValueError, "shape"),
        ([[1.0, 0.0]], TypeError, "Tensor or numpy array"),
    ],
)
def test_bad_input(z, error, match):
    with pytest.raises(error, match=match):
        sphere_uniformity(z)


def test_bad_combine():
    with pytest.raises(ValueError, match="combine"):
        sphere_uniformity(_uniform((10, 3)), combine="holm")


def test_axial_alternative_needs_bingham():
    # a Watson-like girdle: +-mu with random sign has zero mean, so only Bingham sees it
    mu = np.eye(16)[0]
    z = _vmf(mu, 30.0, 300, seed=1) * torch.randint(0, 2, (300, 1)).mul(2).sub(1)
    result = sphere_uniformity(z)
    assert result.tests["bingham"].p_value < 1e-10
    assert result.tests["rayleigh"].p_value > 1e-3
    assert result.rejects(0.05)


@pytest.mark.slow
def test_null_rejection_rate():
    z = _uniform((NUM_DATASETS, 200, 64))
    results = [sphere_uniformity(x) for x in z]
    for key in ("rayleigh", "bingham"):
        rate = np.mean([r.tests[key].rejects(0.05) for r in results])
        assert abs(rate - 0.05) <= 0.03, (key, rate)
    rate = np.mean([r.rejects(0.05) for r in results])
    assert abs(rate - 0.05) <= 0.03, rate


@pytest.mark.slow
def test_power_against_von_mises_fisher():
    mu = np.eye(64)[0]
    z = _vmf(mu, 5.0, NUM_DATASETS * 200, seed=0).reshape(NUM_DATASETS, 200, 64)
    rate = np.mean([sphere_uniformity(x).rejects(0.05) for x in z])
    assert rate >= 0.95, rate


def test_power_against_clusters():
    centers = _uniform((4, 64)).numpy()
    z = torch.cat([_vmf(mu, 50.0, 50, seed=i) for i, mu in enumerate(centers)])
    assert sphere_uniformity(z).p_value < 1e-6
