"""Reproduce the Gaussian study of Baptista, Stuart & Tran (2025): which tilt and which loss.

A critic ``f(x, y)`` tilts the marginal: ``q(y | x) ∝ p(y) exp f(x, y)``. With jointly
Gaussian ``(x, y)`` and ``p(y) = N(0, Σyy)`` the tilted conditional is Gaussian in closed form
(:class:`pyro_contrast.distributions.TiltedGaussian`), so we can ask exactly how well a
tilt family reproduces the true conditional ``N(Σyx Σxx⁻¹ x, Σy|x)``:

- bilinear tilt ``xᵀWy/T``: the mean can be right (``W* = Σxx⁻¹ Σxy Σyy⁻¹``) but the
  covariance stays ``Σyy`` — it can never express ``Σy|x``;
- L2 tilt ``-||Gx - Hy||²/(2τ)``: mean *and* covariance are right at the optimum.

For each family we report the closed-form optimum (population moments and sample moments)
and critics trained by gradient descent with several losses (one-sided InfoNCE, symmetric
InfoNCE, the conditional tilted KL and the joint tilted KL). Errors: relative mean error
``E||μ_q(x) - μ(x)||² / E||μ(x)||²``, relative covariance error ``||Σ_q - Σy|x||_F /
||Σy|x||_F`` and the average ``KL(p(y|x) || q(y|x))`` on held-out x.

The paper's claim: the bilinear (dot-product) tilt approximates the conditional mean but not
the conditional covariance; the L2 tilt with a conditional (one-sided) loss recovers both.
A symmetric loss asks one L2 critic to be both conditionals at once, which it cannot be
exactly (MATH §7), so its covariance error stays above zero.

Example::

    python examples/gaussian_tilts.py --out /tmp/bst-gaussian
"""

import argparse
import os
import sys
import time

import pandas as pd
import torch
from torch import nn
from torch.distributions import MultivariateNormal, kl_divergence

import pyro_contrast as pc
from pyro_contrast.distributions import TiltedGaussian
from pyro_contrast.distributions.tilted_gaussian import optimal_bilinear_weight, optimal_l2_tilt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as common  # noqa: E402

LOSSES = ("infonce", "symmetric_infonce", "tilted_kl", "joint_tilted_kl")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_arguments(parser, "results/gaussian_tilts")
    parser.add_argument("--dim-x", type=int, default=4)
    parser.add_argument("--dim-y", type=int, default=3)
    parser.add_argument("--num-train", type=int, default=20000)
    parser.add_argument("--num-test", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=2e-2)
    parser.add_argument("--losses", nargs="+", default=list(LOSSES), choices=LOSSES)
    return parser.parse_args(argv)


def joint_covariance(dim_x, dim_y, seed):
    """A random joint covariance with strong but imperfect x–y dependence (float64)."""
    g = torch.Generator().manual_seed(seed)
    d = dim_x + dim_y
    factor = torch.randn(d, d, generator=g, dtype=torch.float64)
    cov = factor @ factor.T / d + 0.3 * torch.eye(d, dtype=torch.float64)
    scale = cov.diagonal().rsqrt()
    return scale[:, None] * cov * scale


class _Truth:
    def __init__(self, cov, dim_x):
        self.sxx, self.sxy = cov[:dim_x, :dim_x], cov[:dim_x, dim_x:]
        self.syy = cov[dim_x:, dim_x:]
        self.gain = torch.linalg.solve(self.sxx, self.sxy).T  # E[y|x] = gain @ x
        self.cond = self.syy - self.sxy.T @ torch.linalg.solve(self.sxx, self.sxy)
        self.joint = MultivariateNormal(torch.zeros(len(cov), dtype=cov.dtype), cov)

    def conditional(self, x):
        return MultivariateNormal(x @ self.gain.T, self.cond)


def errors(q, truth, x):
    """Relative mean error, relative covariance error and mean KL(p(y|x) || q(y|x))."""
    p = truth.conditional(x)
    mean_err = (q.mean - p.mean).pow(2).sum(-1).mean() / p.mean.pow(2).sum(-1).mean()
    cov_q = q.covariance_matrix.reshape(-1, *truth.cond.shape)[0]
    cov_err = torch.linalg.norm(cov_q - truth.cond) / torch.linalg.norm(truth.cond)
    kl = kl_divergence(p, MultivariateNormal(q.mean, q.covariance_matrix)).mean()
    return {"mean_error": float(mean_err), "cov_error": float(cov_err), "kl": float(kl)}


def _tilt(family, critic, x, syy):
    """The tilted conditional of a trained (or closed-form) critic under p(y) = N(0, Σyy)."""
    zero = torch.zeros(len(syy), dtype=syy.dtype)
    with torch.no_grad():
        if family == "bilinear":
            weight = critic.weight.double()
            return TiltedGaussian.bilinear(x, weight, zero, syy, critic.temperature.double())
        g, h = critic.encoder_x.weight.double(), critic.encoder_y.weight.double()
        offset = critic.encoder_x.bias.double() if critic.encoder_x.bias is not None else 0
        # Gx + b - (Hy + c): fold both offsets into the x side (the tilt only sees Gx - Hy).
        if critic.encoder_y.bias is not None:
            offset = offset - critic.encoder_y.bias.double()
        g_x = torch.cat([g, torch.as_tensor(offset, dtype=g.dtype).expand(len(g))[:, None]], 1)
        x1 = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
        return TiltedGaussian.l2(x1, g_x, h, zero, syy, critic.temperature.double())


def _new_critic(family, dim_x, dim_y):
    if family == "bilinear":
        critic = pc.Critic(similarity="bilinear", dim_x=dim_x, dim_y=dim_y)
        with torch.no_grad():
            critic.weight.zero_()
        return critic
    return pc.Critic(nn.Linear(dim_x, dim_y, bias=False), nn.Linear(dim_y, dim_y, bias=False),
                     similarity="neg_sq_l2")


def main(args):
    with common.few_threads(args.threads):
        return _main(args)


def _main(args):
    out = common.prepare_out(args.out, args.force)
    start = time.time()
    torch.manual_seed(args.seed)
    truth = _Truth(joint_covariance(args.dim_x, args.dim_y, args.seed), args.dim_x)
    g = torch.Generator().manual_seed(args.seed + 1)
    chol = torch.linalg.cholesky(truth.joint.covariance_matrix)

    def draw(n):
        return torch.randn(n, args.dim_x + args.dim_y, generator=g, dtype=torch.float64) @ chol.T

    train, test = draw(args.num_train), draw(args.num_test)
    x, y, x_test = train[:, :args.dim_x], train[:, args.dim_x:], test[:, :args.dim_x]
    zero = torch.zeros(args.dim_y, dtype=torch.float64)
    rows = []

    def record(family, method, q):
        rows.append({"family": family, "method": method, **errors(q, truth, x_test)})

    weight = optimal_bilinear_weight(truth.sxx, truth.sxy, truth.syy)
    record("bilinear", "closed form (population)",
           TiltedGaussian.bilinear(x_test, weight, zero, truth.syy))
    G, H = optimal_l2_tilt(truth.sxx, truth.sxy, truth.syy)
    record("l2", "closed form (population)", TiltedGaussian.l2(x_test, G, H, zero, truth.syy))
    record("bilinear", "closed form (sample moments)",
           _tilt("bilinear", pc.linear.optimal_bilinear_critic(x, y), x_test, truth.syy))
    record("l2", "closed form (sample moments)",
           _tilt("l2", pc.linear.optimal_l2_critic(x, y), x_test, truth.syy))
    for family in ("bilinear", "l2"):
        for loss in args.losses:
            torch.manual_seed(args.seed)
            critic = _new_critic(family, args.dim_x, args.dim_y).double()
            pc.fit(critic, (x, y), loss=loss, steps=args.steps,
                   batch_size=min(args.batch_size, args.num_train // 2), lr=args.lr,
                   schedule="cosine", validation=0.0, seed=args.seed,
                   progress=sys.stderr.isatty())
            record(family, f"trained: {loss}", _tilt(family, critic, x_test, truth.syy))
    table = pd.DataFrame(rows).set_index(["family", "method"])
    text = common.write_table(out, "tilt_errors", table)
    print("Tilted conditional q(y|x) against the true Gaussian p(y|x) on held-out x:")
    print(text)
    base = table.loc[("bilinear", "closed form (population)")]
    best = table.loc[("l2", "closed form (population)")]
    print()
    common.claim("bilinear tilt: right mean, wrong covariance; L2 tilt: both right",
                 f"bilinear optimum mean error {base.mean_error:.1e}, covariance error "
                 f"{base.cov_error:.2f}; L2 optimum {best.mean_error:.1e} / {best.cov_error:.1e}")
    common.write_json(os.path.join(out, "results.json"),
                      {"args": vars(args), "seconds": time.time() - start,
                       "cond_cov": truth.cond.tolist(), "rows": rows})
    if not args.no_plots:
        _plot(table, out)
    return table


def _plot(table, out):
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6), sharey=True)
    labels = [f"{f}: {m.replace('trained: ', '')}" for f, m in table.index]
    pos = range(len(labels))
    for ax, column, title in zip(axes, ("mean_error", "cov_error"),
                                 ("relative mean error", "relative covariance error"),
                                 strict=True):
        colors = ["tab:blue" if f == "bilinear" else "tab:orange" for f, _ in table.index]
        ax.barh(list(pos), table[column].clip(lower=1e-16), color=colors)
        ax.set_xscale("log")
        ax.set_title(title)
        ax.grid(alpha=0.3, axis="x")
    axes[0].set_yticks(list(pos), labels, fontsize=7)
    axes[0].invert_yaxis()
    common.save_figure(fig, os.path.join(out, "bst_gaussian_errors.png"))


if __name__ == "__main__":
    main(parse_args())
