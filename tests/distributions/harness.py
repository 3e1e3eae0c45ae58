"""Shared test harness that every distribution of pyro-contrast goes through.

How to register a distribution
------------------------------
In the distribution's test module (e.g. ``tests/distributions/test_vmf.py``) subclass
:class:`DistributionHarness` under a name starting with ``Test`` and list :class:`Example`
objects. Every check of STYLE.md §8 then runs for every example, batch shape and dtype::

    import torch
    from tests.distributions.harness import DistributionHarness, Example
    from pyro_contrast.distributions.vmf import VonMisesFisher

    def _vmf(loc, concentration):
        # normalising inside the factory lets finite differences move loc freely
        return VonMisesFisher(loc / loc.norm(dim=-1, keepdim=True), concentration)

    def _vmf_params(batch_shape, dtype):
        return {"loc": torch.randn(batch_shape + (3,), dtype=dtype),
                "concentration": torch.rand(batch_shape, dtype=dtype) + 0.5}

    class TestVonMisesFisherHarness(DistributionHarness):
        examples = [
            Example("vmf-d3", factory=_vmf, params=_vmf_params,
                    invalid=[lambda: VonMisesFisher(torch.ones(3), torch.tensor(1.0))]),
        ]

Fields of :class:`Example`:

- ``name``: short id used in test names.
- ``factory(**params)``: builds the distribution. It is called with the dict returned by
  ``params`` and must be differentiable in its floating-point tensor arguments.
- ``params(batch_shape, dtype)``: returns the keyword arguments of ``factory`` for a
  distribution whose ``batch_shape`` is exactly ``batch_shape`` and whose floating-point
  parameters have ``dtype``. Non-tensor entries (ints, shapes, modules) are passed unchanged.
  It is called after the per-test seeding, so ``torch.randn`` inside it is reproducible.
- ``invalid``: zero-argument callables, each building the distribution with an invalid
  parameter; each must raise ``ValueError`` under validation. Required (a distribution with
  no invalid parameter passes ``()`` explicitly).
- ``batch_shapes`` (default ``((), (4,), (3, 2))``), ``dtypes`` (float32 and float64).
- ``grad_params``: names of parameters checked against finite differences (float64 only);
  ``None`` means every floating-point tensor in ``params``.
- ``moments``: ``True`` (default) when ``mean`` and ``variance`` are implemented; they are then
  z-tested against samples for every case (and checked exactly by enumeration when discrete).
- ``pit(dist, samples)``: optional probability integral transform; returns a tensor of shape
  ``samples.shape[:-len(event_shape)]`` (or ``samples.shape`` for scalar events) that is
  Uniform(0, 1) when ``samples ~ dist``; Kolmogorov–Smirnov tested per batch element.
  Continuous distributions with a ``cdf`` get it automatically.
- ``scipy_log_prob(dist, value)``: optional reference log density (numpy or tensor) of a
  float64 ``dist`` at ``value``; compared with ``log_prob`` at relative/absolute ``scipy_rtol``.
- ``num_samples``: Monte Carlo size of the statistical checks (default 20000).

Discrete distributions (``has_enumerate_support = True``, e.g. index distributions over a bank
with ``support = integer_interval(0, M - 1)``) are tested by enumeration: shapes for both
``expand`` values, normalization, exact mean/variance/entropy, and a chi-square test of the
sampler. Continuous distributions are tested by a PIT (if available) and by the identity
``E[log p(X)] = -H`` (if ``entropy`` is implemented); at least one of the two must apply.

The checks are plain functions (``check_*``) so they can also be called directly.
"""

import io
import math
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest
import scipy.stats
import torch

from tests.common import assert_close

# Every statistical check is a test of level ALPHA (Bonferroni-corrected over the batch and
# event elements it looks at): a correct implementation fails with probability <= 1e-3 for a
# given seed, and the fixed per-test seed makes the outcome reproducible.
ALPHA = 1e-3
EXPAND_SIZES = [(), (2,), (2, 3)]


@dataclass
class Example:
    """One distribution configuration run through every check of the harness."""

    name: str
    factory: Callable
    params: Callable
    invalid: Sequence[Callable] | None = None
    batch_shapes: Sequence[tuple] = ((), (4,), (3, 2))
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.float64)
    grad_params: Sequence[str] | None = None
    moments: bool = True
    pit: Callable | None = None
    scipy_log_prob: Callable | None = None
    scipy_rtol: float = 1e-6
    num_samples: int = 20000
    _probe: dict = field(default_factory=dict, repr=False)

    def build(self, batch_shape, dtype):
        return self.factory(**self.params(tuple(batch_shape), dtype))

    def float_param_names(self):
        if self.grad_params is not None:
            return list(self.grad_params)
        if "float_names" not in self._probe:
            params = self.params((), torch.float64)
            self._probe["float_names"] = [
                k for k, v in params.items() if torch.is_tensor(v) and v.is_floating_point()
            ]
        return self._probe["float_names"]


@dataclass
class Case:
    example: Example
    batch_shape: tuple
    dtype: torch.dtype

    @property
    def id(self):
        shape = "x".join(map(str, self.batch_shape)) or "scalar"
        return f"{self.example.name}-{shape}-{str(self.dtype).replace('torch.', '')}"

    def params(self):
        return self.example.params(self.batch_shape, self.dtype)

    def build(self):
        return self.example.build(self.batch_shape, self.dtype)


def _cases_for(example, test_function):
    keep = getattr(test_function, "harness_filter", lambda case: True)
    cases = [Case(example, tuple(s), t) for s in example.batch_shapes for t in example.dtypes]
    return [c for c in cases if keep(c)]


def _only(predicate, reason):
    def decorate(function):
        function.harness_filter = predicate
        function.harness_skip_reason = reason
        return function

    return decorate


def _floor(dtype, scale=1.0):
    # rounding allowance: statistical bounds shrink to zero for degenerate components
    eps = 1e-4 if dtype == torch.float32 else 1e-9
    return eps * (1.0 + scale)


def _is_implemented(getter):
    try:
        getter()
    except NotImplementedError:
        return False
    return True


def _event_reduce(mask, event_dim):
    return mask.reshape(mask.shape[: mask.dim() - event_dim] + (-1,)).all(-1) if event_dim else mask


def check_samples_in_support(d, dtype):
    """Samples have shape ``sample_shape + batch_shape + event_shape`` and lie in the support."""
    batch_event = d.batch_shape + d.event_shape
    assert d.sample().shape == batch_event
    x = d.sample((7, 2))
    assert x.shape == (7, 2) + batch_event
    if x.is_floating_point():
        assert x.dtype == dtype, f"sample dtype {x.dtype}, parameters are {dtype}"
    assert torch.all(d.support.check(x)), "a sample lies outside the support"


def check_log_prob_shape(d, dtype):
    """``log_prob`` returns the broadcast batch shape, the parameter dtype, finite values."""
    x = d.sample((5,))
    lp = d.log_prob(x)
    assert lp.shape == (5,) + d.batch_shape
    assert lp.dtype == dtype
    assert torch.isfinite(lp).all(), "log_prob of a sample is not finite"
    assert d.log_prob(x[0]).shape == d.batch_shape
    single = x[(0,) * (1 + len(d.batch_shape))]  # one value, broadcast against the batch
    assert_close(d.log_prob(single), d.log_prob(single.expand(d.batch_shape + d.event_shape)))


def check_bad_shapes_raise(d):
    """Values whose batch or event part cannot broadcast raise ``ValueError``."""
    event_dim = len(d.event_shape)
    x = d.sample()
    checked = 0
    if d.batch_shape:
        dim = -1 - event_dim
        bad = torch.cat([x, x.narrow(dim, 0, 1)], dim=dim)
        try:
            d.log_prob(bad)
        except ValueError:
            checked += 1
        else:
            raise AssertionError(f"log_prob accepted a value of shape {tuple(bad.shape)}")
    if event_dim:
        bad = torch.cat([x, x.narrow(-1, 0, 1)], dim=-1)
        try:
            d.log_prob(bad)
        except ValueError:
            checked += 1
        else:
            raise AssertionError(f"log_prob accepted a value of shape {tuple(bad.shape)}")
    assert checked, "nothing to check: scalar batch and event"


def check_enumerate_support(d, dtype):
    """Enumeration shapes for both ``expand`` values, normalization, exact moments/entropy.

    A continuous distribution must not claim enumeration.
    """
    if not d.has_enumerate_support:
        try:
            d.enumerate_support()
        except NotImplementedError:
            return
        raise AssertionError("enumerate_support works but has_enumerate_support is False")
    batch, event = d.batch_shape, d.event_shape
    full = d.enumerate_support(expand=True)
    values = d.enumerate_support(expand=False)
    n = values.shape[0]
    assert full.shape == (n,) + batch + event
    assert values.shape == (n,) + (1,) * len(batch) + event
    lp = d.log_prob(values)
    assert lp.shape == (n,) + batch, "log_prob must broadcast over the enumeration dimension"
    assert_close(d.log_prob(full), lp)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    assert_close(lp.logsumexp(0), torch.zeros(batch), atol=tol, msg="enumeration not normalized")
    probs = lp.double().exp()
    if _is_implemented(d.entropy):
        assert_close(d.entropy(), -(probs * lp.double()).sum(0), atol=tol, rtol=tol)
    probs = probs.reshape((n,) + batch + (1,) * len(event))
    values64 = values.double()
    if _is_implemented(lambda: d.mean):
        mean = (probs * values64).sum(0)
        variance = (probs * (values64 - mean).pow(2)).sum(0)
        assert_close(d.mean, mean, atol=tol, rtol=tol)
        assert_close(d.variance, variance, atol=tol, rtol=tol)


def check_expand(d, moments=True):
    """``expand``/``expand_by`` (also through size-1 dims) keep ``log_prob`` consistent."""
    batch = d.batch_shape
    x = d.sample()
    expected = d.log_prob(x)
    for sizes in EXPAND_SIZES:
        new_shape = torch.Size(sizes) + batch
        for e in (d.expand(new_shape), d.expand_by(sizes)):
            assert type(e) is type(d), "define an explicit expand() keeping the class"
            assert e.batch_shape == new_shape and e.event_shape == d.event_shape
            assert_close(e.log_prob(x), expected.expand(new_shape))
            assert e.sample().shape == new_shape + d.event_shape
            if moments:
                assert_close(e.mean, d.mean.expand(new_shape + d.event_shape))
                assert_close(e.variance, d.variance.expand(new_shape + d.event_shape))
            if d.has_enumerate_support:
                n = d.enumerate_support(expand=False).shape[0]
                assert e.enumerate_support().shape == (n,) + new_shape + d.event_shape
    singleton = d.expand_by((2, 1))
    grown = singleton.expand((2, 3) + batch)
    assert grown.batch_shape == (2, 3) + batch
    assert_close(grown.log_prob(x), expected.expand((2, 3) + batch))


def check_incompatible_expand_raises(d):
    """Expanding a non-singleton batch dim or dropping batch dims raises."""
    batch = d.batch_shape
    assert batch, "needs a non-empty batch shape"
    for bad in [batch[:-1] + (batch[-1] + 1,), batch[1:]]:
        try:
            d.expand(bad)
        except (ValueError, RuntimeError):
            continue
        raise AssertionError(f"expand from {tuple(batch)} to {tuple(bad)} did not raise")


def _bonferroni_z(num_tests):
    return float(scipy.stats.norm.isf(ALPHA / (2 * max(num_tests, 1))))


def _chi_square_pvalue(d, num_samples):
    values = d.enumerate_support(expand=False)
    event_dim = len(d.event_shape)
    probs = d.log_prob(values).double().exp()  # (n,) + batch
    x = d.sample((num_samples,))
    hits = _event_reduce(values.unsqueeze(1) == x.unsqueeze(0), event_dim)
    counts = hits.double().sum(1)  # (n,) + batch
    assert torch.all(counts.sum(0) == num_samples), "a sample is not in the enumerated support"
    observed = counts.reshape(counts.shape[0], -1).T.numpy()
    expected = (num_samples * probs).reshape(probs.shape[0], -1).T.numpy()
    stat, dof = 0.0, 0
    for o, e in zip(observed, expected, strict=True):
        big = e >= 5  # the chi-square approximation needs expected counts >= 5; pool the rest
        bins_o = list(o[big]) + ([o[~big].sum()] if (~big).any() else [])
        bins_e = list(e[big]) + ([e[~big].sum()] if (~big).any() else [])
        bins_o, bins_e = np.array(bins_o), np.array(bins_e)
        if np.any((bins_e == 0) & (bins_o > 0)):
            return 0.0
        keep = bins_e > 0
        stat += float((((bins_o - bins_e) ** 2)[keep] / bins_e[keep]).sum())
        dof += int(keep.sum()) - 1
    return float(scipy.stats.chi2.sf(stat, dof)) if dof > 0 else 1.0


def check_goodness_of_fit(d, dtype, num_samples, pit=None):
    """Samples follow ``log_prob``: chi-square (discrete) or PIT-KS and entropy (continuous)."""
    if d.has_enumerate_support:
        p = _chi_square_pvalue(d, num_samples)
        assert p > ALPHA, f"chi-square goodness of fit rejected the sampler (p={p:.2e})"
        return
    x = d.sample((num_samples,))
    batch_numel = max(d.batch_shape.numel(), 1)
    ran = []
    if pit is None and not d.event_shape and _is_implemented(lambda: d.cdf(x)):
        pit = type(d).cdf
    if pit is not None:
        u = pit(d, x).detach().double().reshape(num_samples, -1).T.numpy()
        pvalues = [scipy.stats.kstest(ui, "uniform").pvalue for ui in u]
        assert min(pvalues) * batch_numel > ALPHA, f"KS test on the PIT rejected (p={pvalues})"
        ran.append("pit")
    if _is_implemented(d.entropy):
        lp = d.log_prob(x).double()
        entropy = d.entropy().double()
        se = lp.std(0) / math.sqrt(num_samples)
        z = _bonferroni_z(batch_numel)
        error = (lp.mean(0) + entropy).abs()
        bound = z * se + _floor(dtype, entropy.abs())
        assert torch.all(error <= bound), f"E[log p(X)] != -H: error {error}, bound {bound}"
        ran.append("entropy")
    assert ran, "no goodness-of-fit check applies: implement entropy or give the example a pit"


def check_moments(d, dtype, num_samples):
    """``mean`` and ``variance`` agree with sample moments (elementwise z-tests)."""
    shape = d.batch_shape + d.event_shape
    mean, variance = d.mean, d.variance
    assert mean.shape == shape and variance.shape == shape
    x = d.sample((num_samples,)).double()
    m = x.mean(0)
    centred = x - m
    s2 = centred.pow(2).mean(0) * num_samples / (num_samples - 1)
    m4 = centred.pow(4).mean(0)
    z = _bonferroni_z(2 * max(mean.numel(), 1))
    # the standard error of the sample variance is sqrt((mu4 - sigma^4) / N)
    se_mean = (s2 / num_samples).sqrt()
    se_var = ((m4 - s2.pow(2)).clamp(min=0) / num_samples).sqrt()
    mean, variance = mean.double(), variance.double()
    err_mean = (m - mean).abs()
    bound_mean = z * se_mean + _floor(dtype, mean.abs())
    assert torch.all(err_mean <= bound_mean), f"mean off: {err_mean.max():.3g} > bound"
    err_var = (s2 - variance).abs()
    bound_var = z * se_var + _floor(dtype, variance.abs())
    assert torch.all(err_var <= bound_var), f"variance off: {err_var.max():.3g} > bound"


def check_gradients(factory, params, names):
    """Gradients of ``log_prob`` in the named float64 parameters match finite differences."""
    fixed = {k: v for k, v in params.items() if k not in names}
    leaves = [params[k].detach().clone().requires_grad_() for k in names]
    with torch.no_grad():
        value = factory(**params).sample()

    def log_prob(*tensors):
        return factory(**fixed, **dict(zip(names, tensors, strict=True))).log_prob(value)

    assert torch.autograd.gradcheck(log_prob, leaves, eps=1e-6, atol=1e-6, rtol=1e-4)


def check_invalid_raise(builders):
    """Every invalid-parameter builder raises ``ValueError`` under validation."""
    for i, build in enumerate(builders):
        try:
            build()
        except ValueError:
            continue
        raise AssertionError(f"invalid-parameter builder #{i} did not raise ValueError")


def check_serialization(d):
    """pickle and ``torch.save``/``torch.load`` round-trips give identical ``log_prob``."""
    for dist in (d, d.expand_by((2,))):
        x = dist.sample()
        expected = dist.log_prob(x)
        buffer = io.BytesIO()
        torch.save(dist, buffer)
        buffer.seek(0)
        for clone in (pickle.loads(pickle.dumps(dist)), torch.load(buffer, weights_only=False)):
            assert type(clone) is type(dist)
            assert clone.batch_shape == dist.batch_shape
            assert clone.event_shape == dist.event_shape
            assert torch.equal(clone.log_prob(x), expected)


def check_scipy(d, scipy_log_prob, rtol):
    """``log_prob`` agrees with a scipy reference density."""
    x = d.sample((10,))
    expected = torch.as_tensor(np.asarray(scipy_log_prob(d, x)), dtype=torch.float64)
    assert_close(d.log_prob(x), expected, atol=rtol, rtol=rtol)


class DistributionHarness:
    """Base class: subclasses named ``Test*`` set ``examples`` and inherit every check."""

    examples: Sequence[Example] = ()

    def pytest_generate_tests(self, metafunc):
        if "case" in metafunc.fixturenames:
            cases = [c for ex in self.examples for c in _cases_for(ex, metafunc.function)]
            params = [pytest.param(c, id=c.id) for c in cases]
            if not params:  # say why, instead of pytest's "empty parameter set"
                reason = getattr(metafunc.function, "harness_skip_reason", "no example applies")
                params = [pytest.param(None, id="none", marks=pytest.mark.skip(reason=reason))]
            metafunc.parametrize("case", params)
        elif "example" in metafunc.fixturenames:
            # an explicit empty `invalid` means "no invalid parameter exists": nothing to test
            examples = [e for e in self.examples if e.invalid is None or len(e.invalid)]
            metafunc.parametrize("example", examples, ids=[e.name for e in examples])

    def test_samples_in_support(self, case):
        check_samples_in_support(case.build(), case.dtype)

    def test_log_prob_shape(self, case):
        check_log_prob_shape(case.build(), case.dtype)

    @_only(lambda case: len(case.batch_shape) > 0, "no example has a non-empty batch shape")
    def test_bad_shapes_raise(self, case):
        check_bad_shapes_raise(case.build())

    def test_enumerate_support(self, case):
        check_enumerate_support(case.build(), case.dtype)

    def test_expand(self, case):
        check_expand(case.build(), moments=case.example.moments)

    @_only(lambda case: len(case.batch_shape) > 0, "no example has a non-empty batch shape")
    def test_incompatible_expand_raises(self, case):
        check_incompatible_expand_raises(case.build())

    def test_goodness_of_fit(self, case):
        ex = case.example
        check_goodness_of_fit(case.build(), case.dtype, ex.num_samples, pit=ex.pit)

    @_only(lambda case: case.example.moments, "every example sets moments=False")
    def test_mean_variance(self, case):
        check_moments(case.build(), case.dtype, case.example.num_samples)

    @_only(
        lambda case: case.dtype == torch.float64 and bool(case.example.float_param_names()),
        "no float64 example has floating-point parameters",
    )
    def test_gradients(self, case):
        check_gradients(case.example.factory, case.params(), case.example.float_param_names())

    def test_invalid_parameters_raise(self, example):
        assert example.invalid is not None, f"example {example.name!r} lists no `invalid`"
        check_invalid_raise(example.invalid)

    def test_serialization(self, case):
        check_serialization(case.build())

    @_only(
        lambda case: case.dtype == torch.float64 and case.example.scipy_log_prob is not None,
        "no float64 example defines scipy_log_prob",
    )
    def test_scipy_agreement(self, case):
        check_scipy(case.build(), case.example.scipy_log_prob, case.example.scipy_rtol)
