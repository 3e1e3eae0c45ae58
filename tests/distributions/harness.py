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
- ``gof(dist, num_samples)``: optional goodness-of-fit check replacing the default one (for
  distributions that are neither enumerable nor have a density, e.g. a resampled bank); it
  raises ``AssertionError`` when the sampler disagrees with ``log_prob``.

Discrete distributions (``has_enumerate_support = True``, e.g. index distributions over a bank
with ``support = integer_interval(0, M - 1)``) are tested by enumeration: shapes for both
``expand`` values, normalization, exact mean/variance/entropy, and a chi-square test of the
sampler. Continuous distributions are tested by a PIT (if available) and by the identity
``E[log p(X)] = -H`` (if ``entropy`` is implemented); at least one of the two must apply.

The checks are plain functions (``check_*`` in ``harness_checks.py``, re-exported here) so
they can also be called directly on one distribution instance.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest
import torch

from tests.distributions.harness_checks import (
    ALPHA,
    EXPAND_SIZES,
    check_bad_shapes_raise,
    check_enumerate_support,
    check_expand,
    check_goodness_of_fit,
    check_gradients,
    check_incompatible_expand_raises,
    check_invalid_raise,
    check_log_prob_shape,
    check_moments,
    check_samples_in_support,
    check_scipy,
    check_serialization,
)

__all__ = [
    "ALPHA",
    "EXPAND_SIZES",
    "Case",
    "DistributionHarness",
    "Example",
    "check_bad_shapes_raise",
    "check_enumerate_support",
    "check_expand",
    "check_goodness_of_fit",
    "check_gradients",
    "check_incompatible_expand_raises",
    "check_invalid_raise",
    "check_log_prob_shape",
    "check_moments",
    "check_samples_in_support",
    "check_scipy",
    "check_serialization",
]


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
    gof: Callable | None = None
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
        if ex.gof is not None:
            ex.gof(case.build(), ex.num_samples)
            return
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
