"""log-Bessel functions under torch.jit.trace: one trace serves every argument.

A trace records the operations its example ran. Branching on the argument's value (series
below r = 30, asymptotics above) would freeze one regime into the graph and silently give
wrong values when a traced model's concentration crosses over; the traced path evaluates
both regimes and selects elementwise.
"""

import warnings

import pytest
import torch

from pyro_contrast.ops import bessel_ratio, log_hyp0f1_sphere
from tests.common import assert_close

ARGUMENTS = torch.tensor([0.0, 1e-3, 0.5, 5.0, 29.9, 30.1, 80.0, 1e3, 1e5], dtype=torch.float64)


@pytest.mark.parametrize("dim", [3, 64, 512])
@pytest.mark.parametrize("example", [0.7, 300.0])
@pytest.mark.parametrize("fn", [log_hyp0f1_sphere, bessel_ratio])
def test_a_trace_from_one_regime_is_exact_in_the_other(dim, example, fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)
        # torch 2.13 deprecates tracing in favour of torch.compile; Pyro's Jit*_ELBO trace
        warnings.filterwarnings(
            "ignore", "(?s).*torch.jit.trace. is deprecated", DeprecationWarning
        )
        traced = torch.jit.trace(
            lambda r: fn(dim, r), torch.full((ARGUMENTS.numel(),), example, dtype=torch.float64)
        )
    assert_close(traced(ARGUMENTS), fn(dim, ARGUMENTS), atol=1e-12, rtol=1e-12)
    assert_close(traced(-ARGUMENTS), fn(dim, -ARGUMENTS), atol=1e-12, rtol=1e-12)
