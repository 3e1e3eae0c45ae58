import itertools
import json
import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from torch import nn

from pyro_contrast.critics import Critic
from pyro_contrast.training import losses
from tests.common import assert_close

SCORE_LOSSES = ["infonce", "symmetric_infonce", "siglip", "tilted_kl", "joint_tilted_kl"]


def _infonce_reference(s):
    s = np.asarray(s, dtype=np.float64)
    return -np.mean([s[i, i] - logsumexp(s[i]) for i in range(s.shape[0])])


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(2, 2), (5, 5), (4, 9)])
def test_infonce_matches_formula(shape, dtype):
    scores = (3 * torch.randn(shape)).to(dtype)
    out = losses.infonce(scores)
    assert out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert_close(out, _infonce_reference(scores.double()), atol=tol, rtol=tol)


@pytest.mark.parametrize("b", [2, 6])
def test_symmetric_infonce_and_tilted_kl_formulas(b):
    s = torch.randn(b, b, dtype=torch.float64) * 4
    sym = 0.5 * (_infonce_reference(s) + _infonce_reference(s.T))
    assert_close(losses.symmetric_infonce(s), sym, atol=1e-12)
    assert_close(losses.tilted_kl(s), _infonce_reference(s) - math.log(b), atol=1e-12)
    assert_close(
        losses.tilted_kl(s, direction="x|y"), _infonce_reference(s.T) - math.log(b), atol=1e-12
    )
    assert_close(losses.tilted_kl(s, direction="symmetric"), sym - math.log(b), atol=1e-12)
    joint = logsumexp(s.numpy()) - 2 * math.log(b) - np.trace(s.numpy()) / b
    assert_close(losses.joint_tilted_kl(s), joint, atol=1e-12)


def test_siglip_formula_and_extreme_scores():
    s = torch.randn(4, 4, dtype=torch.float64) * 3
    expected = 0.0
    for i, j in itertools.product(range(4), range(4)):
        z = 1.0 if i == j else -1.0
        expected -= math.log(1 / (1 + math.exp(-z * s[i, j].item())))
    assert_close(losses.siglip(s), expected / 4, atol=1e-12)
    # Scores of hundreds of nats must neither overflow nor give NaN.
    huge = torch.full((3, 3), -500.0) + torch.eye(3) * 1000
    assert torch.isfinite(losses.siglip(huge)) and losses.siglip(huge) < 1e-6
    assert torch.isfinite(losses.infonce(huge * 10))


def _all_batches(joint, b):
    """Every batch of b i.i.d. pairs from a discrete joint, with its probability."""
    k = len(joint)
    cells = list(itertools.product(range(k), range(k)))
    for combo in itertools.product(cells, repeat=b):
        xs, ys = zip(*combo, strict=True)
        yield math.prod(joint[x][y] for x, y in combo), list(xs), list(ys)


@pytest.mark.parametrize("k,b", [(3, 2), (2, 3), (2, 4)])
@pytest.mark.parametrize("name", ["infonce", "symmetric_infonce", "siglip", "tilted_kl"])
def test_population_optimum_is_pmi(name, k, b):
    # The EXACT expected batch loss (all K^(2B) batches enumerated) is convex in a free table
    # critic f[x, y], so a zero gradient at the claimed optimum proves it is a global minimum
    # at this finite batch size; the invariance (g(x) or a constant) is added on purpose.
    gen = torch.Generator().manual_seed(k * 10 + b)
    p = torch.rand(k, k, generator=gen, dtype=torch.float64) + 0.2 * torch.eye(k)
    p = p / p.sum()
    pmi = (p / p.sum(1, keepdim=True) / p.sum(0)).log()
    shift = torch.randn(k, 1, generator=gen, dtype=torch.float64)
    if name in ("infonce", "tilted_kl"):
        optimum = pmi + shift  # identified up to g(x)
    elif name == "siglip":
        optimum = pmi - math.log(b - 1)  # the bias absorbs the 1 : (B - 1) imbalance
    else:
        optimum = pmi + 0.7  # identified up to a constant
    fn = getattr(losses, name)

    def expected_loss(table):
        return sum(prob * fn(table[xs][:, ys]) for prob, xs, ys in _all_batches(p.tolist(), b))

    table = optimum.clone().requires_grad_()
    (grad,) = torch.autograd.grad(expected_loss(table), table)
    assert_close(grad, torch.zeros(k, k), atol=1e-12)
    # A row-dependent shift is NOT free for the symmetric/sigmoid losses: the test can fail.
    if name in ("symmetric_infonce", "siglip"):
        table = (optimum + shift).requires_grad_()
        (grad,) = torch.autograd.grad(expected_loss(table), table)
        assert grad.abs().max() > 1e-3


def test_joint_tilted_kl_and_tilted_kl_at_pmi_estimate_minus_mutual_information():
    # Discrete joint with small I; at f = PMI both estimators target -I. Batches of B = 400:
    # the joint normalizer's bias is O(chi^2 / B) ~ 1e-3 and the Monte Carlo sd of the mean of
    # 25 batches is ~ sd(PMI) / sqrt(25 * 400) ~ 5e-3, so 0.02 is a > 3-sigma bound.
    p = torch.tensor(
        [[0.20, 0.05, 0.05], [0.05, 0.20, 0.05], [0.05, 0.05, 0.30]], dtype=torch.float64
    )
    pmi = (p / p.sum(1, keepdim=True) / p.sum(0)).log()
    mi = (p * pmi).sum().item()
    gen = torch.Generator().manual_seed(1)
    joint_vals, cond_vals, worse = [], [], []
    for _ in range(25):
        cells = torch.multinomial(p.flatten(), 400, replacement=True, generator=gen)
        xs, ys = cells // 3, cells % 3
        s = pmi[xs][:, ys]
        joint_vals.append(losses.joint_tilted_kl(s).item())
        cond_vals.append(losses.tilted_kl(s, direction="symmetric").item())
        worse.append(losses.joint_tilted_kl(0.5 * s).item())
    assert abs(np.mean(joint_vals) + mi) < 0.02
    assert abs(np.mean(cond_vals) + mi) < 0.02
    assert np.mean(worse) > np.mean(joint_vals) + 0.02


def test_l2_infonce_matches_definition_and_penalty():
    u, v = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    scores = -0.5 * torch.cdist(u, v).pow(2) / 0.3
    expected = (
        losses.symmetric_infonce(scores) + 0.05 * 0.5 * (u.pow(2).sum(-1) + v.pow(2).sum(-1)).mean()
    )
    out = losses.l2_infonce(u, v, temperature=0.3, norm_penalty=0.05)
    assert_close(out, expected, atol=1e-10)
    one_sided = losses.l2_infonce(u, v, temperature=0.3, norm_penalty=0.0, symmetric=False)
    assert_close(one_sided, losses.infonce(scores), atol=1e-10)
    # The NCE part is translation invariant; only the penalty sees the shift.
    shifted = losses.l2_infonce(u + 5, v + 5, temperature=0.3, norm_penalty=0.0)
    assert_close(shifted, losses.l2_infonce(u, v, temperature=0.3, norm_penalty=0.0), atol=1e-9)
    assert losses.l2_infonce(u + 5, v + 5, temperature=0.3) > out


def _nakada_s(x, y):
    n = x.shape[0]
    s = sum(torch.outer(x[i], y[i]) for i in range(n)) / n
    off = sum(torch.outer(x[i], y[j]) for i in range(n) for j in range(n) if i != j)
    return s - off / (n * (n - 1))


@pytest.mark.parametrize("n,r", [(5, 2), (12, 3)])
def test_linear_contrastive_matches_trace_formula(n, r):
    x, y = torch.randn(n, 4, dtype=torch.float64), torch.randn(n, 3, dtype=torch.float64)
    g1, g2 = torch.randn(r, 4, dtype=torch.float64), torch.randn(r, 3, dtype=torch.float64)
    expected = -torch.trace(g1 @ _nakada_s(x, y) @ g2.T) + 0.35 * (g1.T @ g2).pow(2).sum()
    out = losses.linear_contrastive(x @ g1.T + 1.0, y @ g2.T - 2.0, g1, g2, rho=0.7)
    assert_close(out, expected, atol=1e-10)
    xu, yu = torch.randn(7, 4, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    sx, sy = torch.cat([x, xu]).T.cov(), torch.cat([y, yu]).T.cov()
    expected = -torch.trace(g1 @ _nakada_s(x, y) @ g2.T) + 0.35 * torch.trace(
        g1 @ sx @ g1.T @ g2 @ sy @ g2.T
    )
    out = losses.linear_contrastive_unpaired(x @ g1.T, y @ g2.T, xu @ g1.T, yu @ g2.T, rho=0.7)
    assert_close(out, expected, atol=1e-10)


@pytest.mark.parametrize("name", SCORE_LOSSES)
def test_score_losses_reject_bad_input(name):
    fn = getattr(losses, name)
    with pytest.raises(TypeError, match="scores"):
        fn(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="shape"):
        fn(torch.zeros(3))
    with pytest.raises(ValueError, match="B >= 2"):
        fn(torch.zeros(1, 1))
    with pytest.raises(ValueError, match="NaN"):
        fn(torch.tensor([[0.0, float("nan")], [0.0, 0.0]]))
    if name != "infonce":
        with pytest.raises(ValueError, match="square"):
            fn(torch.zeros(2, 3))


def test_other_bad_inputs():
    with pytest.raises(ValueError, match="at least B columns"):
        losses.infonce(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="direction"):
        losses.tilted_kl(torch.zeros(2, 2), direction="x")
    with pytest.raises(ValueError, match="rho"):
        losses.linear_contrastive(
            torch.ones(2, 1), torch.ones(2, 1), torch.ones(1, 1), torch.ones(1, 1), rho=0
        )
    with pytest.raises(ValueError, match="same number"):
        losses.l2_infonce(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="norm_penalty"):
        losses.l2_infonce(torch.zeros(3, 2), torch.zeros(3, 2), norm_penalty=-1)
    with pytest.raises(ValueError, match="inf"):
        losses.l2_infonce(torch.full((3, 2), math.inf), torch.zeros(3, 2))


def test_registry_resolves_names_callables_and_batch_losses():
    critic = Critic.from_embeddings("dot")
    x = torch.randn(5, 3)
    for name in SCORE_LOSSES:
        value = losses.get(name)(critic, x, x)
        assert_close(value, getattr(losses, name)(critic.pairwise(x, x)))
    sym = losses.get("tilted_kl", direction="symmetric")
    assert json.loads(json.dumps(sym.config())) == {
        "name": "tilted_kl",
        "kwargs": {"direction": "symmetric"},
    }
    custom = losses.get(lambda s: s.diagonal().mean())
    assert_close(custom(critic, x, x), critic.pairwise(x, x).diagonal().mean())
    assert losses.get(sym) is sym
    with pytest.raises(ValueError, match="unknown loss"):
        losses.get("clip")
    with pytest.raises(TypeError, match="does not accept"):
        losses.get("infonce", rho=1.0)
    with pytest.raises(TypeError, match="loss must be"):
        losses.get(3)
    with pytest.raises(TypeError, match="fixed"):
        losses.get(sym, direction="y|x")


def test_registry_objectives_check_the_critic():
    x = torch.randn(6, 3)
    with pytest.raises(ValueError, match="neg_sq_l2"):
        losses.get("l2_infonce")(Critic.from_embeddings("dot"), x, x)
    l2 = Critic(nn.Linear(3, 2), nn.Linear(3, 2), "neg_sq_l2", temperature=0.5)
    expected = losses.l2_infonce(l2.encode_x(x), l2.encode_y(x), temperature=0.5)
    assert_close(losses.get("l2_infonce")(l2, x, x), expected)
    with pytest.raises(ValueError, match="nn.Linear"):
        losses.get("linear_contrastive")(Critic.from_embeddings("dot"), x, x)
    lin = Critic(nn.Linear(3, 2), nn.Linear(3, 2), "dot")
    expected = losses.linear_contrastive(
        lin.encode_x(x), lin.encode_y(x), lin.encoder_x.weight, lin.encoder_y.weight, rho=2.0
    )
    assert_close(losses.get("linear_contrastive", rho=2.0)(lin, x, x), expected)
