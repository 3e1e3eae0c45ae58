import numpy as np
import pytest
import torch
from scipy import stats

import pyro_contrast as pc
from pyro_contrast.diagnostics import DiagnosticReport, diagnose, effective_sample_size
from tests.common import assert_close

# These tests normalize C over a handful of candidates on purpose (small, exact cases);
# elsewhere the SmallNormalizerWarning stays an error, so an unintended small normalizer shows.
pytestmark = pytest.mark.filterwarnings(
    "ignore::pyro_contrast.marginals.bridge.SmallNormalizerWarning"
)


def _unit(x):
    return torch.nn.functional.normalize(x, dim=-1)


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _clusters(num_items, dim, num_clusters, kappa, seed):
    """A bank drawn from a mixture of tight von Mises-Fisher clusters."""
    rng = np.random.default_rng(seed)
    centers = _unit(_randn(num_clusters, dim, seed=seed)).double().numpy()
    labels = rng.integers(num_clusters, size=num_items)
    out = np.empty((num_items, dim))
    for j, mu in enumerate(centers):
        rows = labels == j
        out[rows] = stats.vonmises_fisher(mu, kappa).rvs(int(rows.sum()), random_state=rng)
    return torch.from_numpy(out).float()


def _cosine_bridge(bank, dim=3, temperature=0.5, target=None):
    critic = pc.Critic.from_embeddings("cosine", temperature=temperature)
    if target is None:
        target = _unit(_randn(4000, dim, seed=11))
    return pc.Bridge([critic, critic], [pc.Bank(bank)], target_bank=target)


def _queries(dim, seed=1, num_queries=200, num_candidates=10):
    return _unit(_randn(num_queries, dim, seed=seed)), _unit(
        _randn(num_candidates, dim, seed=seed + 1)
    )


def test_uniform_sphere_bank_justifies_cosine_shortcut():
    # the mathematics page, §3: with a uniform bank and a large uniform C normalizer set, the
    # direct cosine
    # ranks like the exact marginal up to the bank's Monte Carlo noise (2000 items)
    bridge = _cosine_bridge(_unit(_randn(2000, 3, seed=0)))
    report = diagnose(bridge, *_queries(3), generator=0)
    assert isinstance(report, DiagnosticReport)
    assert report.shortcut_justified, report.summary()
    assert report.failed_assumptions == []
    assert set(report.tests) == {"sphere_uniformity"}
    assert not report.tests["sphere_uniformity"].rejects(0.05)
    assert report.agreement.top1_agreement >= 0.9
    assert report.agreement.kendall_tau > 0.9
    text = str(report)
    assert "JUSTIFIED" in text and "top-1 agreement" in text and "Kendall tau" in text


def test_clustered_bank_is_not_justified():
    bridge = _cosine_bridge(_clusters(2000, 3, num_clusters=4, kappa=50.0, seed=0))
    report = diagnose(bridge, *_queries(3), generator=0)
    assert not report.shortcut_justified
    assert "sphere_uniformity" in report.failed_assumptions
    assert "top1_agreement" in report.failed_assumptions
    assert report.tests["sphere_uniformity"].p_value < 1e-6
    # the verdict comes with what failed and how far direct is from exact
    text = report.summary()
    assert "NOT justified" in text and "not uniform on the sphere" in text
    assert f"{report.agreement.top1_agreement:.3f}" in text
    assert report.agreement.top1_agreement < 0.7


def test_clustered_candidates_break_the_normalizer():
    # uniform bank, but the C normalizer set is clustered: log Z(b_m) depends on b_m
    target = _clusters(2000, 3, num_clusters=3, kappa=30.0, seed=4)
    bridge = _cosine_bridge(_unit(_randn(2000, 3, seed=0)), target=target)
    report = diagnose(bridge, *_queries(3), generator=0)
    assert "normalizer_constancy" in report.failed_assumptions
    assert report.conditions["normalizer_constancy"].value > 0.1
    assert report.log_normalizer_sd == pytest.approx(
        report.conditions["normalizer_constancy"].value
    )


def _gaussian_bridge(similarity, bank, temperature=1.0):
    critic = pc.Critic.from_embeddings(similarity, temperature=temperature)
    target = _unit(_randn(2000, bank.shape[1], seed=12))
    return pc.Bridge([critic, critic], [pc.Bank(bank)], target_bank=target)


@pytest.mark.parametrize("similarity", ["dot", "neg_sq_l2"])
def test_isotropic_gaussian_bank_passes_the_gaussian_checks(similarity):
    bridge = _gaussian_bridge(similarity, _randn(4000, 2, seed=3))
    report = diagnose(bridge, _randn(200, 2, seed=5), _unit(_randn(8, 2, seed=6)), generator=0)
    assert set(report.tests) == {"gaussianity", "isotropy"}
    assert report.shortcut_justified, report.summary()
    # log Z grows with ||z_b|| against isotropic candidates: LSE != exact, yet the
    # normalizer is radial, so the non-radial part is small
    assert report.log_normalizer_sd > 0.2
    assert report.conditions["normalizer_constancy"].value < 0.1


def test_anisotropic_gaussian_bank_fails_isotropy():
    bank = _randn(4000, 3, seed=3) * torch.tensor([0.5, 1.0, 2.0])
    bridge = _gaussian_bridge("dot", bank)
    report = diagnose(bridge, _randn(200, 3, seed=5), _unit(_randn(10, 3, seed=6)), generator=0)
    assert not report.shortcut_justified
    assert "isotropy" in report.failed_assumptions
    assert "bank covariance is not a multiple of the identity" in report.summary()
    assert report.agreement.top1_agreement < 0.6


@pytest.mark.parametrize("similarity", ["dot", "neg_sq_l2"])
def test_candidates_of_varying_norm_fail(similarity):
    # the mathematics page, §5: the candidate-only term m.v + |v|^2 sigma^2 / 2 (dot) or -b|v -
    # m|^2 / ...
    # (squared L2) does not cancel when ranking
    bridge = _gaussian_bridge(similarity, _randn(4000, 3, seed=3))
    candidates = _unit(_randn(10, 3, seed=6)) * torch.linspace(0.3, 2.0, 10).unsqueeze(-1)
    report = diagnose(bridge, _randn(200, 3, seed=5), candidates, generator=0)
    assert "candidate_term_constancy" in report.failed_assumptions
    assert report.conditions["candidate_term_constancy"].value > 0.1


def test_views_in_different_spaces_fail():
    z = _unit(_randn(1000, 3, seed=0))
    rotation, _ = torch.linalg.qr(_randn(3, 3, seed=9))
    critic = pc.Critic.from_embeddings("cosine", temperature=0.5)
    bridge = pc.Bridge([critic, critic], [pc.Bank(views=(z, z @ rotation))])
    report = diagnose(bridge, *_queries(3), generator=0)
    assert "shared_representation" in report.failed_assumptions
    assert {"sphere_uniformity (left view)", "sphere_uniformity (right view)"} <= set(report.tests)


def test_ess_matches_the_bank_posterior():
    bank = _unit(_randn(500, 4, seed=0))
    log_weights = 0.3 * _randn(500, seed=2)
    critic = pc.Critic.from_embeddings("cosine", temperature=0.2)
    bridge = pc.Bridge([critic, critic], [pc.Bank(bank, log_weights=log_weights)])
    a, c = _queries(4, num_queries=30)
    report = diagnose(bridge, a, c, generator=0)
    # the bank keeps its weights normalized (in float64): a constant shift changes no ESS
    weights = bridge.banks[0].log_weights
    expected = effective_sample_size(critic.pairwise(a.double(), bank.double()) + weights)
    assert_close(report.ess.ess, expected.ess, rtol=1e-9, atol=0)
    assert_close(report.ess.fraction, expected.fraction, rtol=1e-9, atol=0)
    assert "ESS per query" in report.summary()


def test_sharp_critic_warns_about_few_bank_items():
    critic = pc.Critic.from_embeddings("cosine", temperature=0.005)
    bridge = pc.Bridge([critic, critic], [pc.Bank(_unit(_randn(300, 8, seed=0)))])
    report = diagnose(bridge, *_queries(8, num_queries=20), generator=0)
    assert any("median ESS" in w for w in report.warnings)


def test_longer_chain():
    critic = pc.Critic.from_embeddings("cosine", temperature=0.5)
    banks = [pc.Bank(_unit(_randn(500, 3, seed=s))) for s in (0, 1)]
    bridge = pc.Bridge([critic, critic, critic], banks)
    report = diagnose(bridge, *_queries(3, num_queries=20), generator=0)
    assert {"sphere_uniformity (bank 0)", "sphere_uniformity (bank 1)"} == set(report.tests)
    assert report.ess is None
    assert any("several banks" in w for w in report.warnings)


def test_same_generator_same_report():
    bridge = _cosine_bridge(_unit(_randn(3000, 3, seed=0)), target=_unit(_randn(300, 3, seed=2)))
    first = diagnose(bridge, *_queries(3), max_samples=500, generator=5)
    second = diagnose(bridge, *_queries(3), max_samples=500, generator=5)
    assert first.tests["sphere_uniformity"].p_value == second.tests["sphere_uniformity"].p_value
    assert first.agreement.top1_interval == second.agreement.top1_interval


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"alpha": 0.0}, "alpha"),
        ({"min_top1_agreement": 1.5}, "min_top1_agreement"),
        ({"tolerance": -1.0}, "tolerance"),
        ({"max_samples": 3}, "max_samples"),
        ({"num_bootstrap": 0}, "num_bootstrap"),
    ],
)
def test_bad_options(kwargs, match):
    bridge = _cosine_bridge(_unit(_randn(100, 3, seed=0)))
    with pytest.raises(ValueError, match=match):
        diagnose(bridge, *_queries(3, num_queries=5), **kwargs)


def test_mixed_similarities_are_rejected():
    bridge = pc.Bridge(
        [pc.Critic.from_embeddings("cosine"), pc.Critic.from_embeddings("dot")],
        [pc.Bank(_randn(50, 3, seed=0))],
    )
    with pytest.raises(ValueError, match="share one similarity"):
        diagnose(bridge, *_queries(3, num_queries=5))
