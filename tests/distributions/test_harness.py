"""The distribution harness passes correct distributions and catches broken ones."""

import numpy as np
import pyro.distributions as dist
import pytest
import scipy.stats
import torch
from pyro.distributions.torch_distribution import TorchDistributionMixin
from torch.autograd.gradcheck import GradcheckError

from tests.distributions.harness import (
    DistributionHarness,
    Example,
    check_bad_shapes_raise,
    check_enumerate_support,
    check_expand,
    check_goodness_of_fit,
    check_gradients,
    check_invalid_raise,
    check_moments,
)


class IndexCategorical(dist.Categorical):
    """Categorical whose mean and variance are those of the index (as in the project)."""

    @property
    def mean(self):
        index = torch.arange(self._num_events, dtype=self.probs.dtype)
        return (self.probs * index).sum(-1)

    @property
    def variance(self):
        index = torch.arange(self._num_events, dtype=self.probs.dtype)
        return (self.probs * index**2).sum(-1) - self.mean**2


def _categorical_params(batch_shape, dtype):
    return {"logits": 2 * torch.randn(batch_shape + (5,), dtype=dtype)}


def _normal_params(batch_shape, dtype):
    return {
        "loc": torch.randn(batch_shape, dtype=dtype),
        "scale": torch.rand(batch_shape, dtype=dtype) + 0.5,
    }


def _categorical_scipy(d, x):
    probs = d.probs.reshape(-1, d.probs.shape[-1]).numpy()
    index = x.reshape(-1, probs.shape[0]).numpy()
    columns = [
        scipy.stats.rv_discrete(values=(range(len(p)), p)).logpmf(index[:, i])
        for i, p in enumerate(probs)
    ]
    return np.stack(columns, -1).reshape(x.shape)


def _normal_scipy(d, x):
    return scipy.stats.norm.logpdf(x.numpy(), d.loc.numpy(), d.scale.numpy())


class TestCategoricalHarness(DistributionHarness):
    examples = [
        Example(
            "index-categorical",
            factory=lambda logits: IndexCategorical(logits=logits),
            params=_categorical_params,
            scipy_log_prob=_categorical_scipy,
            scipy_rtol=1e-12,
            invalid=[
                lambda: IndexCategorical(logits=torch.tensor([0.0, float("nan")])),
                lambda: IndexCategorical(probs=torch.tensor([-0.1, 1.1])),
            ],
        )
    ]


class TestNormalHarness(DistributionHarness):
    examples = [
        Example(
            "normal",
            factory=dist.Normal,
            params=_normal_params,
            invalid=[lambda: dist.Normal(0.0, -1.0), lambda: dist.Normal(float("nan"), 1.0)],
            scipy_log_prob=_normal_scipy,
            scipy_rtol=1e-12,
        )
    ]


# ----- the harness must reject broken distributions -------------------------------------


class _WrongVariance(IndexCategorical):
    @property
    def variance(self):
        return 1.1 * super().variance


class _BiasedSampler(IndexCategorical):
    def sample(self, sample_shape=()):
        # the tempered distribution p^1.3 is close to, but not, p
        return dist.Categorical(logits=1.3 * self.logits).sample(sample_shape)


class _Unnormalized(IndexCategorical):
    def log_prob(self, value):
        return super().log_prob(value) + 0.01


class _ShiftedNormal(dist.Normal):
    def log_prob(self, value):
        return super().log_prob(value) - 0.05


class _WideSampler(dist.Normal):
    def sample(self, sample_shape=()):
        return self.loc + 1.05 * (super().sample(sample_shape) - self.loc)


class _DetachedScale(dist.Normal):
    def log_prob(self, value):
        return dist.Normal(self.loc, self.scale.detach() + 0 * self.scale).log_prob(value)


class _ImplicitExpand(dist.Normal):
    def __init__(self, loc, scale, validate_args=None):
        super().__init__(loc, scale, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return TorchDistributionMixin.expand(self, batch_shape)


def _logits(batch_shape=(4,), dtype=torch.float64):
    return 2 * torch.randn(batch_shape + (5,), dtype=dtype)


def test_rejects_wrong_variance():
    d = _WrongVariance(logits=_logits())
    with pytest.raises(AssertionError):
        check_moments(d, torch.float64, 20000)
    with pytest.raises(AssertionError):
        check_enumerate_support(d, torch.float64)


def test_rejects_biased_sampler():
    with pytest.raises(AssertionError, match="chi-square"):
        check_goodness_of_fit(_BiasedSampler(logits=_logits()), torch.float64, 20000)


def test_rejects_unnormalized_log_prob():
    with pytest.raises(AssertionError, match="normalized"):
        check_enumerate_support(_Unnormalized(logits=_logits()), torch.float64)


def test_rejects_wrong_normalizer_continuous():
    d = _ShiftedNormal(torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64))
    with pytest.raises(AssertionError, match="-H"):
        check_goodness_of_fit(d, torch.float64, 20000)


def test_rejects_wrong_sampler_continuous():
    d = _WideSampler(torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64))
    with pytest.raises(AssertionError):
        check_goodness_of_fit(d, torch.float64, 20000)
    with pytest.raises(AssertionError, match="variance"):
        check_moments(d, torch.float64, 20000)


def test_rejects_wrong_gradient():
    params = _normal_params((3,), torch.float64)
    with pytest.raises(GradcheckError):
        check_gradients(_DetachedScale, params, ["loc", "scale"])


def test_rejects_implicit_expand():
    d = _ImplicitExpand(torch.zeros(3), torch.ones(3))
    with pytest.raises(AssertionError, match="explicit expand"):
        check_expand(d)


def test_rejects_unvalidated_shapes():
    d = dist.Normal(torch.zeros(3), torch.ones(3), validate_args=False)
    with pytest.raises((AssertionError, RuntimeError)):
        check_bad_shapes_raise(d)


def test_rejects_builder_that_does_not_raise():
    with pytest.raises(AssertionError, match="#1"):
        check_invalid_raise([lambda: dist.Normal(0.0, -1.0), lambda: dist.Normal(0.0, 1.0)])
