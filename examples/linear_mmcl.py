"""Reproduce Nakada et al. (2023): linear multimodal contrastive learning is an SVD.

Paired data share an r-dimensional signal: ``x = A z + ξ``, ``y = B z + ζ``, where the noise
ξ of x has a few strong "spike" directions unrelated to the signal (stronger than the signal
itself), so x's own principal components are the wrong subspace. Three experiments:

1. **GD = SVD.** Linear encoders ``u = G1 x``, ``v = G2 y`` trained by gradient descent on the
   linear contrastive loss ``-tr(G1 S G2ᵀ) + ρ/2 ||G1ᵀG2||²`` (and on symmetric InfoNCE at a
   high temperature) against the closed form :func:`pyro_contrast.training.linear.contrastive_svd`:
   loss gap and largest principal angle between the learned and the SVD subspaces.
2. **Robustness to mismatched pairs.** A growing fraction of the pairs is shuffled; the
   error ``sin θ_max`` between the recovered x-subspace and the true ``col(A)``, for the
   contrastive SVD and for unimodal PCA of x.
3. **Unpaired data.** Few pairs, plus a growing number of unpaired x and y samples that
   enter through the whitening covariances (``contrastive_svd(..., whiten=True,
   unpaired_x=..., unpaired_y=...)``): subspace error against the population solution and
   held-out recall@1 of the true partner among 10 candidates.

The paper's claims: each GD step on the CLIP-type loss performs an SVD of the contrastive
cross-covariance, so GD lands on the top-r SVD; MMCL recovers the signal better than
unimodal learning even with many wrongly matched pairs; unpaired data improve it.

Example::

    python examples/linear_mmcl.py --out /tmp/nakada
"""

import argparse
import os
import sys
import time

import pandas as pd
import torch
from torch import nn

import pyro_contrast as pc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as common  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_arguments(parser, "results/linear_mmcl")
    parser.add_argument("--dim-x", type=int, default=20)
    parser.add_argument("--dim-y", type=int, default=15)
    parser.add_argument("--rank", type=int, default=3)
    parser.add_argument("--num-pairs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=600, help="GD steps of experiment 1")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--clip-temperature", type=float, default=10.0)
    parser.add_argument("--mismatch", type=float, nargs="+",
                        default=[0.0, 0.2, 0.4, 0.6, 0.8, 0.9])
    parser.add_argument("--few-pairs", type=int, default=150, help="pairs in experiment 3")
    parser.add_argument("--unpaired", type=int, nargs="+", default=[0, 200, 1000, 10000])
    parser.add_argument("--repeats", type=int, default=3, help="seeds averaged in 2 and 3")
    return parser.parse_args(argv)


class _Model:
    """``x = A z + ξ`` (ξ with spikes), ``y = B z + ζ``; population moments in closed form."""

    def __init__(self, dim_x, dim_y, rank, seed):
        g = torch.Generator().manual_seed(seed)
        f64 = torch.float64
        self.a = torch.linalg.qr(torch.randn(dim_x, rank, generator=g, dtype=f64))[0]
        self.b = torch.linalg.qr(torch.randn(dim_y, rank, generator=g, dtype=f64))[0]
        spikes = torch.linalg.qr(torch.randn(dim_x, rank, generator=g, dtype=f64))[0]
        # Signal variance 4 per direction; spikes of variance 9 beat it, so PCA of x picks
        # the noise; the isotropic noise floor is 0.25.
        self.a, self.b = 2.0 * self.a, 2.0 * self.b
        self.noise_x = 0.25 * torch.eye(dim_x, dtype=f64) + 9.0 * spikes @ spikes.T
        self.noise_y = 0.25 * torch.eye(dim_y, dtype=f64)
        self.rank, self.g = rank, g
        self.cov_x = self.a @ self.a.T + self.noise_x
        self.cov_y = self.b @ self.b.T + self.noise_y
        self.cov_xy = self.a @ self.b.T

    def sample(self, n, g=None):
        g = g or self.g
        z = torch.randn(n, self.rank, generator=g, dtype=torch.float64)
        nx = torch.randn(n, len(self.a), generator=g, dtype=torch.float64)
        ny = torch.randn(n, len(self.b), generator=g, dtype=torch.float64)
        x = z @ self.a.T + nx @ torch.linalg.cholesky(self.noise_x).T
        y = z @ self.b.T + ny @ torch.linalg.cholesky(self.noise_y).T
        return x, y


def sin_max_angle(basis_1, basis_2):
    """Sine of the largest principal angle between the column spaces of two matrices."""
    q1, q2 = torch.linalg.qr(basis_1)[0], torch.linalg.qr(basis_2)[0]
    cosines = torch.linalg.svdvals(q1.T @ q2).clamp(max=1.0)
    return float((1 - cosines.min() ** 2).clamp(min=0).sqrt())


def _population_whitened(model, rank):
    def inv_sqrt(c):
        evals, evecs = torch.linalg.eigh(c)
        return evecs @ torch.diag(evals.rsqrt()) @ evecs.T

    wx = inv_sqrt(model.cov_x)
    left = torch.linalg.svd(wx @ model.cov_xy @ inv_sqrt(model.cov_y))[0][:, :rank]
    return wx @ left  # columns span the population row space of G1


def experiment_gd(model, args):
    x, y = model.sample(args.num_pairs)
    _, factors = pc.linear.contrastive_svd(x, y, args.rank)
    rows, curves = [], {}
    for loss, temperature in (("linear_contrastive", 1.0),
                              ("symmetric_infonce", args.clip_temperature)):
        torch.manual_seed(args.seed)
        critic = pc.Critic(nn.Linear(args.dim_x, args.rank, bias=False),
                           nn.Linear(args.dim_y, args.rank, bias=False), similarity="dot",
                           temperature=temperature).double()
        history = pc.fit(critic, (x, y), loss=loss, steps=args.steps,
                         # The InfoNCE gradient is the linear one divided by T: rescale.
                         batch_size=args.num_pairs, lr=args.lr * temperature, optimizer="sgd",
                         validation=0.0, seed=args.seed, progress=sys.stderr.isatty())
        g1, g2 = critic.encoder_x.weight.detach(), critic.encoder_y.weight.detach()
        with torch.no_grad():
            value = pc.losses.linear_contrastive(x @ g1.T, y @ g2.T, g1, g2)
        angle = sin_max_angle(g1.T, factors.left)
        rows.append({"trained on": loss, "temperature": temperature,
                     "linear loss": float(value), "SVD minimum": float(factors.min_loss),
                     "loss gap": float(value - factors.min_loss),
                     "sin angle (x side) to SVD": angle,
                     "sin angle (y side) to SVD": sin_max_angle(g2.T, factors.right)})
        curves[loss] = history.train_loss
    return pd.DataFrame(rows).set_index("trained on"), curves


def experiment_mismatch(model, args):
    rows = []
    for fraction in args.mismatch:
        mmcl, pca = [], []
        for r in range(args.repeats):
            g = torch.Generator().manual_seed(1000 * r + 1)
            x, y = model.sample(args.num_pairs, g)
            shuffled = torch.randperm(args.num_pairs, generator=g)[: int(fraction *
                                                                      args.num_pairs)]
            y[shuffled] = y[shuffled[torch.randperm(len(shuffled), generator=g)]]
            _, factors = pc.linear.contrastive_svd(x, y, args.rank)
            mmcl.append(sin_max_angle(factors.left, model.a))
            centred = x - x.mean(0)
            top = torch.linalg.eigh(centred.T @ centred)[1][:, -args.rank:]
            pca.append(sin_max_angle(top, model.a))
        rows.append({"mismatched fraction": fraction,
                     "MMCL (contrastive SVD) sin θ": sum(mmcl) / len(mmcl),
                     "unimodal PCA of x sin θ": sum(pca) / len(pca)})
    return pd.DataFrame(rows).set_index("mismatched fraction")


def _recall_at_1(critic, model, g, num_candidates=10, num_queries=2000):
    x, y = model.sample(num_queries, g)
    with torch.no_grad():
        hits = 0
        for start in range(0, num_queries, num_candidates):
            scores = critic.pairwise(x[start:start + num_candidates],
                                     y[start:start + num_candidates])
            hits += int((scores.argmax(-1) == torch.arange(len(scores))).sum())
    return hits / num_queries


def experiment_unpaired(model, args):
    target = _population_whitened(model, args.rank)
    rows = []
    for num_unpaired in args.unpaired:
        errors, recalls, plain = [], [], []
        for r in range(args.repeats):
            g = torch.Generator().manual_seed(2000 * r + 7)
            x, y = model.sample(args.few_pairs, g)
            extra_x = model.sample(num_unpaired, g)[0] if num_unpaired else None
            extra_y = model.sample(num_unpaired, g)[1] if num_unpaired else None
            critic, factors = pc.linear.contrastive_svd(
                x, y, args.rank, whiten=True, unpaired_x=extra_x, unpaired_y=extra_y,
                ridge=1e-3)
            errors.append(sin_max_angle(factors.g1.T, target))
            recalls.append(_recall_at_1(critic, model, g))
            plain_critic, _ = pc.linear.contrastive_svd(x, y, args.rank)
            plain.append(_recall_at_1(plain_critic, model, g))
        rows.append({"unpaired per modality": num_unpaired,
                     "sin θ to population solution": sum(errors) / len(errors),
                     "recall@1 of 10 (whitened)": sum(recalls) / len(recalls),
                     "recall@1 of 10 (no whitening)": sum(plain) / len(plain)})
    return pd.DataFrame(rows).set_index("unpaired per modality")


def main(args):
    with common.few_threads(args.threads):
        return _main(args)


def _main(args):
    out = common.prepare_out(args.out, args.force)
    start = time.time()
    model = _Model(args.dim_x, args.dim_y, args.rank, args.seed)
    gd, curves = experiment_gd(model, args)
    mismatch = experiment_mismatch(model, args)
    unpaired = experiment_unpaired(model, args)
    for name, table, title in (
        ("gd_vs_svd", gd, "1. Gradient descent against the closed-form SVD"),
        ("mismatch", mismatch, "2. Subspace error vs the fraction of mismatched pairs"),
        ("unpaired", unpaired, f"3. {args.few_pairs} pairs plus unpaired samples"),
    ):
        print(f"{title}:\n{common.write_table(out, name, table)}\n")
    lin = gd.loc["linear_contrastive"]
    common.claim("GD on the linear loss reaches the top-r SVD of the cross-covariance",
                 f"loss gap {lin['loss gap']:.1e}, sin angle {lin['sin angle (x side) to SVD']:.1e}"
                 f" (symmetric InfoNCE at T={args.clip_temperature}: sin angle "
                 f"{gd.loc['symmetric_infonce', 'sin angle (x side) to SVD']:.1e})")
    worst = mismatch.iloc[-1]
    common.claim("MMCL beats unimodal learning even with wrongly matched pairs",
                 f"at {mismatch.index[-1]:.0%} mismatched: MMCL sin θ "
                 f"{worst.iloc[0]:.2f} vs PCA {worst.iloc[1]:.2f}")
    common.claim("unpaired data improve the learned representation",
                 f"sin θ {unpaired.iloc[0, 0]:.2f} → {unpaired.iloc[-1, 0]:.2f}, recall@1 "
                 f"{unpaired.iloc[0, 1]:.2f} → {unpaired.iloc[-1, 1]:.2f}")
    common.write_json(os.path.join(out, "results.json"), {
        "args": vars(args), "seconds": time.time() - start,
        "gd_vs_svd": gd.reset_index().to_dict(orient="records"),
        "mismatch": mismatch.reset_index().to_dict(orient="records"),
        "unpaired": unpaired.reset_index().to_dict(orient="records")})
    if not args.no_plots:
        _plot(gd, curves, mismatch, unpaired, out)
    return {"gd_vs_svd": gd, "mismatch": mismatch, "unpaired": unpaired}


def _plot(gd, curves, mismatch, unpaired, out):
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.3))
    gap = [v - gd.loc["linear_contrastive", "SVD minimum"] for v in curves["linear_contrastive"]]
    axes[0].semilogy(range(1, len(gap) + 1), [max(v, 1e-16) for v in gap])
    axes[0].set(title="1. GD on the linear loss", xlabel="step", ylabel="loss - SVD minimum")
    for column in mismatch.columns:
        axes[1].plot(mismatch.index, mismatch[column], marker="o", label=column.split(" sin")[0])
    axes[1].set(title="2. mismatched pairs", xlabel="fraction mismatched",
                ylabel="sin θ to true subspace")
    axes[1].legend(fontsize=8)
    xs = [max(n, 1) for n in unpaired.index]
    axes[2].semilogx(xs, unpaired.iloc[:, 1], marker="o", label="whitened, pooled covariances")
    axes[2].semilogx(xs, unpaired.iloc[:, 2], marker="s", label="no whitening (pairs only)")
    axes[2].set(title="3. unpaired data (0 plotted at 1)", xlabel="unpaired per modality",
                ylabel="held-out recall@1 of 10")
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    common.save_figure(fig, os.path.join(out, "nakada_linear_mmcl.png"))


if __name__ == "__main__":
    main(parse_args())

