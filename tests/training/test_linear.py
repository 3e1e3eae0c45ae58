import numpy as np
import pytest
import torch
from scipy.linalg import subspace_angles
from scipy.stats import multivariate_normal
from torch import nn

from pyro_contrast.critics import Critic
from pyro_contrast.training import losses
from pyro_contrast.training.fit import fit
from pyro_contrast.training.linear import (
    contrastive_svd,
    optimal_bilinear_critic,
    optimal_l2_critic,
)
from tests.common import assert_close


def _two_views(n, seed=0, dx=5, dy=4):
    """Pairs sharing a 3-d latent with distinct scales (a well-separated spectrum)."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.tensor([2.0, 1.4, 0.5], dtype=torch.float64)
    mix_x = torch.randn(dx, dx, generator=g, dtype=torch.float64)
    mix_y = torch.randn(dy, dy, generator=g, dtype=torch.float64)

    def draw(m):
        z = torch.randn(m, 3, generator=g, dtype=torch.float64) * scales
        x = torch.cat([z, torch.randn(m, dx - 3, generator=g, dtype=torch.float64)], 1) @ mix_x
        y = torch.cat([z, torch.randn(m, dy - 3, generator=g, dtype=torch.float64)], 1) @ mix_y
        noise_x = 0.3 * torch.randn(m, dx, generator=g, dtype=torch.float64)
        noise_y = 0.3 * torch.randn(m, dy, generator=g, dtype=torch.float64)
        return x + 1.5 + noise_x, y - 0.5 + noise_y

    return draw(n), draw


@pytest.mark.parametrize("rank,rho", [(1, 1.0), (2, 0.5), (3, 2.0)])
def test_contrastive_svd_attains_the_eckart_young_minimum(rank, rho):
    (x, y), _ = _two_views(60)
    critic, f = contrastive_svd(x, y, rank, rho=rho)
    s = ((x - x.mean(0)).T @ (y - y.mean(0))) / (len(x) - 1)
    sv = np.linalg.svd(s.numpy(), compute_uv=False)
    assert_close(f.singular_values, sv[:rank], atol=1e-10)
    assert_close(f.min_loss, -(sv[:rank] ** 2).sum() / (2 * rho), atol=1e-10)
    u, v = critic.encode_x(x), critic.encode_y(y)
    assert_close(losses.linear_contrastive(u, v, f.g1, f.g2, rho=rho), f.min_loss, atol=1e-10)
    assert_close(
        f.g1.T @ f.g2, f.left @ torch.diag(f.singular_values) @ f.right.T / rho, atol=1e-10
    )
    # Scores are the centred bilinear form of G1ᵀG2.
    expected = (x[:7] - x.mean(0)) @ f.g1.T @ f.g2 @ (y[:5] - y.mean(0)).T
    assert_close(critic.pairwise(x[:7], y[:5]), expected, atol=1e-10)


def test_gradient_descent_on_nakada_loss_reaches_contrastive_svd():
    # Plain full-batch GD in float64 through fit: the loss gap closes to 1e-6 and the learned
    # row spaces are the top singular subspaces (principal angles ~ 0).
    (x, y), _ = _two_views(200)
    _, f = contrastive_svd(x, y, 2)
    torch.manual_seed(1)
    critic = Critic(nn.Linear(5, 2, bias=False), nn.Linear(4, 2, bias=False), "dot").double()
    with torch.no_grad():
        for p in critic.parameters():
            p.mul_(0.1)  # small init: GD escapes the saddle at 0 along the top directions
    lr = 0.5 / f.singular_values[0].item()
    fit(
        critic,
        (x, y),
        "linear_contrastive",
        steps=600,
        batch_size=200,
        lr=lr,
        optimizer="sgd",
        validation=0,
        progress=False,
    )
    g1, g2 = critic.encoder_x.weight.detach(), critic.encoder_y.weight.detach()
    final = losses.linear_contrastive(x @ g1.T, y @ g2.T, g1, g2)
    assert abs(final.item() - f.min_loss.item()) <= 1e-6
    assert subspace_angles(g1.T.numpy(), f.left.numpy()).max() < 1e-5
    assert subspace_angles(g2.T.numpy(), f.right.numpy()).max() < 1e-5
    assert_close(g1.T @ g2, f.g1.T @ f.g2, atol=1e-6)


def test_unpaired_loss_minimizer_is_the_whitened_svd():
    (x, y), draw = _two_views(200)
    unpaired_x, _ = draw(300)
    _, unpaired_y = draw(150)
    _, f = contrastive_svd(
        x, y, 2, unpaired_x=unpaired_x, unpaired_y=unpaired_y, whiten=True, ridge=0.0
    )
    g = torch.Generator().manual_seed(3)
    g1 = (0.1 * torch.randn(2, 5, generator=g, dtype=torch.float64)).requires_grad_()
    g2 = (0.1 * torch.randn(2, 4, generator=g, dtype=torch.float64)).requires_grad_()
    opt = torch.optim.LBFGS(
        [g1, g2],
        max_iter=2000,
        tolerance_grad=1e-14,
        tolerance_change=1e-16,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        value = losses.linear_contrastive_unpaired(
            x @ g1.T, y @ g2.T, unpaired_x @ g1.T, unpaired_y @ g2.T
        )
        value.backward()
        return value

    opt.step(closure)
    assert abs(closure().item() - f.min_loss.item()) <= 1e-6
    assert_close(g1.T @ g2, f.g1.T @ f.g2, atol=1e-6)
    # Whitened factors are orthogonal in the pooled covariance: G1 Σx G1ᵀ = D / rho.
    pooled = torch.cat([x, unpaired_x]).T.cov()
    assert_close(f.g1 @ pooled @ f.g1.T, torch.diag(f.singular_values), atol=1e-10)


def test_contrastive_svd_validates():
    (x, y), _ = _two_views(20)
    with pytest.raises(ValueError, match="rank"):
        contrastive_svd(x, y, 5)
    with pytest.raises(ValueError, match="whiten=True"):
        contrastive_svd(x, y, 2, unpaired_x=x)
    with pytest.raises(ValueError, match="same number of rows"):
        contrastive_svd(x, y[:-1], 2)
    with pytest.raises(ValueError, match="NaN"):
        contrastive_svd(x.clone().fill_(float("nan")), y, 2)
    with pytest.raises(ValueError, match="singular"):
        contrastive_svd(x[:3], y[:3], 2, whiten=True, ridge=0.0)
    with pytest.raises(ValueError, match="4 columns"):
        contrastive_svd(x, y, 2, unpaired_y=torch.zeros(3, 5), whiten=True)
    critic, _ = contrastive_svd(x[:3], y[:3], 2, whiten=True)  # the ridge makes it solvable
    assert torch.isfinite(critic.pairwise(x, y)).all()


def test_optimal_bilinear_critic_is_the_regression_tilt():
    (x, y), _ = _two_views(400, seed=4)
    critic = optimal_bilinear_critic(x, y)
    xn, yn = x.numpy(), y.numpy()
    cov = np.cov(np.concatenate([xn, yn], 1).T)
    sxx, sxy, syy = cov[:5, :5], cov[:5, 5:], cov[5:, 5:]
    w = np.linalg.solve(sxx, sxy) @ np.linalg.inv(syy)
    assert_close(critic.weight, w, atol=1e-8, rtol=1e-8)
    # The tilt's conditional mean ȳ + Σyy Wᵀ (x - x̄) is the least-squares regression of y on x.
    design = np.concatenate([np.ones((400, 1)), xn], 1)
    coef = np.linalg.lstsq(design, yn, rcond=None)[0]
    tilt_mean = yn.mean(0) + (xn - xn.mean(0)) @ (syy @ w.T).T
    assert_close(tilt_mean, design @ coef, atol=1e-8)
    # Stationary point of the population InfoNCE of a bilinear critic: Σxx W Σyy = Σxy.
    assert_close(sxx @ w @ syy, sxy, atol=1e-10)
    expected = (xn[:3] - xn.mean(0)) @ w @ (yn[:4] - yn.mean(0)).T
    assert_close(critic.pairwise(x[:3], y[:4]), expected, atol=1e-8)


def test_optimal_l2_critic_equals_gaussian_pmi_up_to_a_term_in_x():
    (x, y), _ = _two_views(400, seed=5)
    critic = optimal_l2_critic(x, y)
    xn, yn = x.numpy(), y.numpy()
    cov = np.cov(np.concatenate([xn, yn], 1).T)
    sxx, sxy, syy = cov[:5, :5], cov[:5, 5:], cov[5:, 5:]
    cond = syy - sxy.T @ np.linalg.solve(sxx, sxy)
    queries, cands = xn[:4], yn[10:30]
    pmi = np.stack(
        [
            multivariate_normal(
                yn.mean(0) + sxy.T @ np.linalg.solve(sxx, q - xn.mean(0)), cond
            ).logpdf(cands)
            - multivariate_normal(yn.mean(0), syy).logpdf(cands)
            for q in queries
        ]
    )
    gap = critic.pairwise(x[:4], y[10:30]).detach().numpy() - pmi
    assert_close(gap - gap[:, :1], np.zeros_like(gap), atol=1e-8)
    assert critic.similarity == "neg_sq_l2"


def test_optimal_critics_validate():
    x = torch.randn(3, 5)
    with pytest.raises(ValueError, match="singular"):
        optimal_bilinear_critic(x, torch.randn(3, 2))
    with pytest.raises(ValueError, match="ridge"):
        optimal_l2_critic(torch.randn(30, 2), torch.randn(30, 2), ridge=-1)
    with pytest.raises(TypeError, match="x must be"):
        optimal_bilinear_critic([[1.0]], torch.randn(1, 1))


@pytest.mark.slow
def test_infonce_bilinear_critic_approaches_w_star_with_batch_size(capsys):
    # Jointly Gaussian pairs; the bilinear family cannot express the Gaussian PMI (it lacks the
    # y-quadratic term), so the finite-batch InfoNCE optimum moves towards
    # W* = Σxx⁻¹ Σxy Σyy⁻¹ as B grows (plus SGD noise, damped by the cosine schedule).
    g = torch.Generator().manual_seed(0)
    chol = torch.tensor([[1.0, 0, 0], [0.5, 1, 0], [-0.3, 0.2, 0.8]], dtype=torch.float64)
    a = torch.tensor([[0.8, 0.3, 0], [0, 0.6, -0.4], [0.2, 0, 0.5]], dtype=torch.float64)
    sxx = chol @ chol.T
    syy = a @ sxx @ a.T + 0.25 * torch.eye(3, dtype=torch.float64)
    w_star = torch.linalg.solve(sxx, sxx @ a.T) @ torch.linalg.inv(syy)
    x = torch.randn(40000, 3, generator=g, dtype=torch.float64) @ chol.T
    y = x @ a.T + 0.5 * torch.randn(40000, 3, generator=g, dtype=torch.float64)
    errors = {}
    for batch_size in (16, 64, 256):
        critic = Critic.from_embeddings("bilinear", dim_x=3, dim_y=3)
        fit(
            critic,
            (x, y),
            "infonce",
            steps=800,
            batch_size=batch_size,
            lr=0.05,
            schedule="cosine",
            validation=0,
            progress=False,
        )
        errors[batch_size] = ((critic.weight.double() - w_star).norm() / w_star.norm()).item()
    with capsys.disabled():
        print(
            "\nInfoNCE bilinear critic, relative error ||W - W*|| / ||W*|| by batch size:",
            {b: round(e, 4) for b, e in errors.items()},
        )
    assert errors[16] > errors[64] > errors[256]
    assert errors[256] < 0.08
