"""Pyro's fixture-based distribution checks, run on every public distribution of ours.

The checks are those of Pyro's ``tests/distributions/test_distributions.py`` (support and its
shape, ``infer_shapes``, ``log_prob`` and entropy shapes, errors on wrong event or batch
shapes, discreteness of the support, enumeration shapes, goodness of fit with
``pyro.distributions.testing.gof.auto_goodness_of_fit``, ``expand``/``expand_by`` including
Pyro's generic ``TorchDistribution.expand``, subsequent expands, expand errors, and
validation of arguments), written against a fixture list of our own.
"""

import math
from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import TorchDistribution
from pyro.distributions.testing.gof import auto_goodness_of_fit
from pyro.distributions.util import broadcast_shape

import pyro_contrast as pc
from pyro_contrast.distributions import (
    BridgedConditional,
    ContrastiveConditional,
    TiltedConditional,
    TiltedGaussian,
    UniformSphere,
    VonMisesFisher,
)
from tests.common import assert_close

# as in Pyro's and NumPyro's suites: the nearest-neighbour goodness-of-fit test is only
# approximately calibrated (Pyro's own MultivariateNormal gives p ~ 1e-3 in 1 of ~10 seeds)
TEST_FAILURE_RATE = 2e-5
_COSINE = pc.Critic.from_embeddings("cosine", temperature=0.5)
_L2 = pc.Critic.from_embeddings("neg_sq_l2", temperature=0.7)


def _unit(*shape):
    v = torch.randn(shape)
    return v / v.norm(dim=-1, keepdim=True)


@dataclass
class Fixture:
    """A distribution class with a few parameter sets (built lazily, after seeding)."""

    pyro_dist: type
    params: list  # zero-argument callables returning constructor keyword arguments
    invalid: dict | None = None  # keyword arguments that fail validation
    gof: bool = True  # whether log_prob is a density for Pyro's goodness-of-fit test
    manifold_dim: int | None = None  # dimension of the support's manifold (spheres)
    _built: list = field(default_factory=list, repr=False)

    @property
    def name(self):
        return self.pyro_dist.__name__

    def dist_params(self, index):
        while len(self._built) < len(self.params):
            self._built.append(self.params[len(self._built)]())
        return self._built[index]

    def num_params(self):
        return len(self.params)

    def build(self, index, **options):
        return self.pyro_dist(**self.dist_params(index), **options)


def _shape_of(value):
    """Pyro's convention: tensors by shape; our non-tensor arguments (dims, bases) by value."""
    return value.shape if isinstance(value, torch.Tensor) else value


FIXTURES = [
    Fixture(
        VonMisesFisher,
        [
            lambda: {"loc": _unit(3), "concentration": torch.tensor(2.0)},
            lambda: {"loc": _unit(2, 1, 3), "concentration": torch.tensor([[1.0], [4.0]])},
            lambda: {"loc": _unit(3), "concentration": torch.tensor([0.5, 8.0])},
        ],
        invalid={"loc": torch.ones(3), "concentration": torch.tensor(1.0)},
        manifold_dim=2,
    ),
    Fixture(
        UniformSphere,
        [lambda: {"dim": 3}, lambda: {"dim": 3, "batch_shape": (2, 1)}],
        manifold_dim=2,
    ),
    Fixture(
        TiltedGaussian,
        [
            lambda: {
                "loc": torch.randn(2),
                "covariance_matrix": torch.tensor([[1.0, 0.3], [0.3, 0.5]]),
                "log_normalizer": torch.tensor(0.4),
            },
            lambda: {
                "loc": torch.randn(2, 1, 2),
                "scale_tril": torch.tensor([[1.0, 0.0], [0.2, 0.7]]),
                "log_normalizer": torch.randn(2, 1),
            },
        ],
        invalid={
            "loc": torch.zeros(2),
            "covariance_matrix": torch.eye(2),
            "log_normalizer": torch.tensor(math.nan),
        },
    ),
    Fixture(
        ContrastiveConditional,
        [
            lambda: {"critic": _COSINE, "x": torch.randn(3), "bank": torch.randn(5, 3)},
            lambda: {
                "critic": _COSINE,
                "x": torch.randn(2, 1, 3),
                "bank": torch.randn(6, 3),
                "log_weights": torch.randn(6),
            },
        ],
        invalid={"critic": _COSINE, "x": torch.randn(3), "bank": torch.full((4, 3), math.nan)},
    ),
    Fixture(
        BridgedConditional,
        [lambda: {"logits": torch.randn(4)}, lambda: {"logits": torch.randn(2, 1, 5)}],
        invalid={"logits": torch.tensor([0.0, math.nan])},
    ),
    Fixture(
        TiltedConditional,
        [
            lambda: {"critic": _COSINE, "x": torch.randn(2, 1, 3), "base": torch.randn(6, 3)},
            lambda: {"critic": _COSINE, "x": torch.randn(3), "base": torch.randn(6, 3)},
        ],
        invalid={"critic": _COSINE, "x": torch.randn(3), "base": torch.full((4, 3), math.inf)},
        gof=False,  # a bank's log_prob is relative to the base: the harness tests resampling
    ),
    Fixture(
        TiltedConditional,
        [
            lambda: {"critic": _COSINE, "x": torch.randn(2, 1, 3), "base": UniformSphere(3)},
            lambda: {"critic": _COSINE, "x": torch.randn(3), "base": VonMisesFisher(_unit(3), 2.0)},
        ],
        manifold_dim=2,
    ),
    Fixture(
        TiltedConditional,
        [
            lambda: {
                "critic": _L2,
                "x": torch.randn(2, 1, 2),
                "base": dist.MultivariateNormal(torch.zeros(2), torch.eye(2)),
            }
        ],
    ),
]
IDS = [f"{f.name}-{i}" for i, f in enumerate(FIXTURES)]


@pytest.fixture(params=FIXTURES, ids=IDS)
def fixture(request):
    return request.param


def _log_prob_shape(d, x_size=()):
    expected = broadcast_shape(d.shape(), torch.Size(x_size), strict=True)
    return expected[: len(expected) - d.event_dim] if d.event_dim else expected


def _not_implemented(getter):
    try:
        getter()
    except NotImplementedError:
        return True
    return False


def test_support_shape(fixture):
    for i in range(fixture.num_params()):
        d = fixture.build(i)
        assert d.support.event_dim == d.event_dim
        x = d.sample()
        ok = d.support.check(x)
        assert ok.shape == broadcast_shape(d.batch_shape, x.shape[: x.dim() - d.event_dim])
        assert ok.all()


def test_support_is_discrete_or_not(fixture):
    for i in range(fixture.num_params()):
        d = fixture.build(i)
        assert d.support.is_discrete == bool(d.has_enumerate_support)


def test_infer_shapes(fixture):
    for i in range(fixture.num_params()):
        params = fixture.dist_params(i)
        arg_shapes = {k: _shape_of(v) for k, v in params.items()}
        batch_shape, event_shape = fixture.pyro_dist.infer_shapes(**arg_shapes)
        d = fixture.build(i)
        assert (d.batch_shape, d.event_shape) == (batch_shape, event_shape)


def test_batch_log_prob_and_entropy_shapes(fixture):
    for i in range(fixture.num_params()):
        d = fixture.build(i)
        x = d.sample((4,))
        assert d.log_prob(x).shape == _log_prob_shape(d, x.shape)
        if not _not_implemented(d.entropy):
            assert d.entropy().shape == _log_prob_shape(d)


def test_score_errors_event_dim_mismatch(fixture):
    for i in range(fixture.num_params()):
        d = fixture.build(i)
        if d.event_dim:
            with pytest.raises((ValueError, RuntimeError)):
                d.log_prob(torch.ones(d.shape() + (1,)))


def test_score_errors_non_broadcastable_data_shape(fixture):
    for i in range(fixture.num_params()):
        d = fixture.build(i)
        shape = d.shape()
        if not shape:
            continue
        bad = torch.ones((shape[0] + 1,) + shape[1:])
        with pytest.raises((ValueError, RuntimeError)):
            d.log_prob(bad.long() if d.support.is_discrete else bad)


def test_enumerate_support_shape(fixture):
    for i in range(fixture.num_params()):
        d = fixture.build(i)
        if not d.has_enumerate_support:
            continue
        support = d.enumerate_support()
        n = support.shape[0]
        assert support.shape == (n,) + d.batch_shape + d.event_shape
        unexpanded = d.enumerate_support(expand=False)
        assert unexpanded.shape == (n,) + (1,) * len(d.batch_shape) + d.event_shape
        assert (support == unexpanded).all()
        assert_close(d.log_prob(support).logsumexp(0), torch.zeros(d.batch_shape), atol=1e-5)


def test_gof(fixture):
    num_samples = 50000
    for i in range(fixture.num_params()):
        d = fixture.build(i)
        if d.has_enumerate_support or not fixture.gof:
            continue
        samples = d.sample((num_samples,))
        probs = d.log_prob(samples).exp().reshape(num_samples, -1)
        samples = samples.reshape(probs.shape + d.event_shape)
        for b in range(probs.shape[-1]):
            gof = auto_goodness_of_fit(samples[:, b], probs[:, b], dim=fixture.manifold_dim)
            assert gof > TEST_FAILURE_RATE / probs.shape[-1], f"gof={gof:.3g}"


def _check_sample_shapes(small, large):
    x = small.sample()
    assert_close(small.log_prob(x).expand(large.batch_shape), large.log_prob(x), atol=1e-5)
    x = large.sample()
    assert_close(small.log_prob(x), large.log_prob(x), atol=1e-5)


@pytest.mark.parametrize("sample_shape", [(), (2,), (2, 3)])
@pytest.mark.parametrize("shape_type", [torch.Size, tuple, list])
@pytest.mark.parametrize("default", [False, True])
def test_expand_by_and_new_dims(fixture, sample_shape, shape_type, default):
    for i in range(fixture.num_params()):
        small = fixture.build(i)
        large = small.expand_by(shape_type(sample_shape))
        assert large.batch_shape == sample_shape + small.batch_shape
        _check_sample_shapes(small, large)
        new_shape = shape_type(sample_shape + tuple(small.batch_shape))
        large = TorchDistribution.expand(small, new_shape) if default else small.expand(new_shape)
        assert large.batch_shape == sample_shape + small.batch_shape
        _check_sample_shapes(small, large)


@pytest.mark.parametrize("default", [False, True])
def test_expand_existing_dim(fixture, default):
    for i in range(fixture.num_params()):
        small = fixture.build(i)
        for dim, size in enumerate(small.batch_shape):
            if size != 1:
                continue
            batch_shape = list(small.batch_shape)
            batch_shape[dim] = 5
            expand = TorchDistribution.expand if default else type(small).expand
            large = expand(small, torch.Size(batch_shape))
            assert large.batch_shape == torch.Size(batch_shape)
            _check_sample_shapes(small, large)


@pytest.mark.parametrize("sample_shapes", [[(2, 1), (2, 3)], [(2, 1, 1), (2, 1, 3), (2, 5, 3)]])
@pytest.mark.parametrize("default", [False, True])
def test_subsequent_expands_ok(fixture, sample_shapes, default):
    for i in range(fixture.num_params()):
        d = fixture.build(i)
        original = d.batch_shape
        for shape in sample_shapes:
            proposed = torch.Size(shape) + original
            n = TorchDistribution.expand(d, proposed) if default else d.expand(proposed)
            assert n.batch_shape == proposed
            _check_sample_shapes(d, n)
            d = n


@pytest.mark.parametrize(
    "initial_shape, proposed_shape", [[(2, 1), (4, 3)], [(2, 4), (2, 2, 1)], [(1, 2, 1), (2, 1)]]
)
@pytest.mark.parametrize("default", [False, True])
def test_expand_error(fixture, initial_shape, proposed_shape, default):
    for i in range(fixture.num_params()):
        small = fixture.build(i)
        initial = torch.Size(initial_shape) + small.batch_shape
        large = TorchDistribution.expand(small, initial) if default else small.expand(initial)
        with pytest.raises((RuntimeError, ValueError)):
            large.expand(torch.Size(proposed_shape) + small.batch_shape)


@pytest.mark.parametrize("validate_args", [True, False])
def test_distribution_validate_args(fixture, validate_args):
    if fixture.invalid is None:
        pytest.skip(f"{fixture.name} has no invalid tensor parameter")
    with pyro.validation_enabled(validate_args):
        if validate_args:
            with pytest.raises(ValueError):
                fixture.pyro_dist(**fixture.invalid)
        else:
            fixture.pyro_dist(**fixture.invalid)
