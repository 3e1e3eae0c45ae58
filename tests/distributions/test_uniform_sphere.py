import math

import pytest
import scipy.stats
import torch

from pyro_contrast.distributions.uniform_sphere import UniformSphere
from tests.common import assert_close
from tests.distributions.harness import DistributionHarness, Example


def _pit(d, x):
    # (1 + x_1) / 2 ~ Beta((d - 1) / 2, (d - 1) / 2) for x uniform on S^{d-1}
    a = 0.5 * (d.dim - 1)
    u = scipy.stats.beta(a, a).cdf(((1 + x[..., 0]) / 2).double().numpy())
    return torch.from_numpy(u)


def _params(dim):
    def params(batch_shape, dtype):
        return {"dim": dim, "batch_shape": batch_shape, "dtype": dtype}

    return params


class TestUniformSphereHarness(DistributionHarness):
    examples = [
        Example(
            f"uniform-sphere-d{dim}",
            factory=UniformSphere,
            params=_params(dim),
            invalid=[
                lambda: UniformSphere(1),
                lambda: UniformSphere(0),
                lambda: UniformSphere(3, (-1,)),
            ],
            pit=_pit,
        )
        for dim in (2, 5)
    ]


@pytest.mark.parametrize("dim", [2, 3, 4, 10, 100])
def test_log_area(dim):
    # |S^1| = 2 pi, |S^2| = 4 pi, |S^3| = 2 pi^2; recursion |S^{d+1}| = 2 pi |S^{d-1}| / d
    known = {2: 2 * math.pi, 3: 4 * math.pi, 4: 2 * math.pi**2}
    log_area = UniformSphere(dim).log_area
    if dim in known:
        assert abs(log_area - math.log(known[dim])) < 1e-12
    step = UniformSphere(dim + 2).log_area - log_area
    assert abs(step - math.log(2 * math.pi / dim)) < 1e-12


def test_covariance_is_isotropic():
    x = UniformSphere(4, dtype=torch.float64).sample((40000,))
    covariance = x.T @ x / x.shape[0]
    # each entry of x x^T has variance <= 1 / 16 + ... < 0.1; 4.5 se with 40000 samples
    assert_close(covariance, torch.eye(4, dtype=torch.float64) / 4, atol=4.5 * 0.1 / 200, rtol=0)


def test_log_prob_broadcasts_and_dtype():
    d = UniformSphere(3, (2,), dtype=torch.float64)
    x = d.sample((5,))
    assert d.log_prob(x).shape == (5, 2)
    assert d.log_prob(x).dtype == torch.float64
    assert d.rsample().shape == (2, 3)


def test_bad_arguments():
    with pytest.raises(TypeError, match="dim"):
        UniformSphere(2.5)
    with pytest.raises(TypeError, match="dtype"):
        UniformSphere(3, dtype=torch.int64)
    with pytest.raises(ValueError, match="expand"):
        UniformSphere(3, (2,)).expand((3,))
