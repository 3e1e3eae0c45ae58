r"""Checks of a bridge's bank used by :func:`~pyro_contrast.diagnostics.diagnose`."""

import torch

from pyro_contrast.diagnostics.gaussian import gaussianity, isotropy
from pyro_contrast.diagnostics.report import Condition
from pyro_contrast.diagnostics.sphere import sphere_uniformity
from pyro_contrast.diagnostics.weights import EffectiveSampleSize, effective_sample_size

# Two views of a bank count as one representation when matched rows have at least this
# mean cosine (a scale difference is absorbed by the temperatures).
MIN_VIEW_COSINE = 0.99
# Queries per block when scoring queries against the whole bank.
_MAX_BLOCK = 2**22


def check_bank(
    z_left, z_right, similarity, suffix, max_samples, generator, tests, conditions, warnings
):
    rows = z_left.shape[0]
    if rows > max_samples:
        keep = torch.randperm(rows, generator=generator)[:max_samples]
        z_left, z_right = z_left[keep], z_right[keep]
    same = z_left.shape == z_right.shape and torch.allclose(z_left, z_right)
    views = [("", z_left)] if same else [("left view", z_left), ("right view", z_right)]
    if not same:
        cosine = (
            torch.nn.functional.cosine_similarity(z_left, z_right, dim=-1).mean().item()
            if z_left.shape == z_right.shape
            else -1.0
        )
        name = _key("shared_representation", suffix)
        conditions[name] = Condition(
            name,
            cosine,
            MIN_VIEW_COSINE,
            cosine >= MIN_VIEW_COSINE,
            "mean cosine between the bank's left and right views (-1 if dims differ)",
            ">=",
        )
    for view, z in views:
        label = ", ".join(p for p in (suffix, view) if p)
        if similarity == "cosine":
            checks = [("sphere_uniformity", sphere_uniformity)]
        elif similarity in ("dot", "neg_sq_l2"):
            checks = [("gaussianity", gaussianity), ("isotropy", isotropy)]
        else:
            checks = []
        for name, test in checks:
            try:
                tests[_key(name, label)] = test(z)
            except ValueError as error:
                # e.g. fewer bank rows than dimensions, or embeddings in a subspace
                warnings.append(f"{_key(name, label)} not tested: {error}")


def _key(name, label):
    return f"{name} ({label})" if label else name


def posterior_summaries(critic, a, bank_left, log_weights, values):
    """ESS of p(b | a_n) and the sd of each column of ``values`` (M, J) under it, (N, J);
    block by block so the (N, M) score matrix is never held whole."""
    queries = critic.encode_x(a)
    # centring first keeps E[x^2] - E[x]^2 free of cancellation
    values = values - values.mean(0)
    block = max(1, _MAX_BLOCK // bank_left.shape[0])
    ess, fraction, spread = [], [], []
    for start in range(0, queries.shape[0], block):
        scores = critic.pairwise_embeddings(queries[start : start + block], bank_left)
        scores = scores.to(torch.float64)
        if log_weights is not None:
            scores = scores + log_weights.to(torch.float64)
        result = effective_sample_size(scores)
        ess.append(result.ess)
        fraction.append(result.fraction)
        posterior = scores.softmax(-1)
        mean = posterior @ values
        spread.append((posterior @ values.pow(2) - mean.pow(2)).clamp(min=0).sqrt())
    return EffectiveSampleSize(torch.cat(ess), torch.cat(fraction)), torch.cat(spread)


def nonradial(log_z, z_right, similarity):
    """``log Z(b)`` minus its best cubic fit in the radius ``||z_b - center||``.

    A normalizer that depends on the bank item only through that radius reweights the bank
    radially, which keeps the rotational symmetry the dot and squared-L2 closed forms rest
    on (e.g. a dot critic against isotropic candidates has ``log Z`` growing with
    ``||z_b||``); only the rest breaks them. A cosine critic sees directions only, so there
    the whole spread counts.
    """
    if similarity not in ("dot", "neg_sq_l2") or log_z.shape[0] < 5:
        return log_z - log_z.mean()
    center = z_right.mean(0) if similarity == "neg_sq_l2" else torch.zeros_like(z_right[0])
    radius = (z_right - center).norm(dim=-1)
    if float(radius.std()) <= 1e-8 * float(radius.mean()):
        return log_z - log_z.mean()
    radius = (radius - radius.mean()) / radius.std()
    features = torch.stack([radius.pow(k) for k in range(4)], -1)
    coefficients = torch.linalg.lstsq(features, log_z.unsqueeze(-1)).solution
    return log_z - (features @ coefficients).squeeze(-1)


def candidate_term(similarity, first, last, z_right, candidates):
    """The candidate-only term of the Gaussian marginal (:ref:`math-gaussian-bridge`), per
    candidate."""
    loc = z_right.mean(0)
    centered = z_right - loc
    cov = centered.T @ centered / max(z_right.shape[0] - 1, 1)
    if similarity == "dot":
        v = candidates / last.temperature.to(torch.float64)
        return v @ loc + 0.5 * ((v @ cov) * v).sum(-1)
    a = 1 / first.temperature.to(torch.float64)
    b = 1 / last.temperature.to(torch.float64)
    variance = torch.trace(cov) / cov.shape[0]
    return -b * (candidates - loc).pow(2).sum(-1) / (2 * (1 + (a + b) * variance))
