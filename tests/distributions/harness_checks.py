"""The checks of the distribution harness (see ``tests/distributions/harness.py``).

Each ``check_*`` function takes a distribution instance (or a factory) and raises
``AssertionError`` (or the error under test) when the distribution violates the Pyro/torch
distribution contract of STYLE.md §8.
"""

import io
import math
import pickle

import numpy as np
import scipy.stats
import torch

from tests.common import assert_close

# Every statistical check is a test of level ALPHA (Bonferroni-corrected over the batch and
# event elements it looks at): a correct implementation fails with probability <= 1e-3 for a
# given seed, and the fixed per-test seed makes the outcome reproducible.
ALPHA = 1e-3
EXPAND_SIZES = [(), (2,), (2, 3)]


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
