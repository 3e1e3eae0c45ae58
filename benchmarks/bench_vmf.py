"""Benchmark the von Mises–Fisher sampler against scipy, and summarize log_prob accuracy.

Draws ``--num-samples`` points at ``--dim`` for each concentration with
``pyro_contrast.distributions.vmf.VonMisesFisher.sample`` in float64 and float32 (best of
``--repeats``; float64 is bounded by torch's scalar float64 ``randn``) and with
``scipy.stats.vonmises_fisher.rvs`` (once), checks that both sample means of ``mu . x`` agree
with ``A_d(kappa)`` (z-scores), then compares ``log_prob`` with 40-digit mpmath and with scipy
on a grid of dimensions and concentrations. Prints a table and a final JSON line.

Usage::

    python benchmarks/bench_vmf.py                      # d = 512, 100000 draws, kappa 10, 100
    python benchmarks/bench_vmf.py --num-samples 2000 --no-scipy   # quick smoke run
"""

import argparse
import json
import math
import time

import mpmath
import numpy as np
import scipy.stats
import torch

from pyro_contrast.distributions.vmf import VonMisesFisher
from pyro_contrast.ops.bessel import bessel_ratio

ACCURACY_DIMS = [3, 64, 512, 4096]
ACCURACY_KAPPAS = [0.0, 1e-3, 1.0, 10.0, 1e4, 1e5]


def _mean_z_score(w, ratio, variance):
    """z-score of the sample mean of ``W = mu . x`` against ``A_d(kappa)``."""
    return float((np.mean(w) - ratio) / math.sqrt(variance / len(w)))


def time_sampling(dim, kappa, num_samples, repeats, dtypes, use_scipy):
    mu = torch.nn.functional.normalize(torch.randn(dim, dtype=torch.float64), dim=0)
    k = torch.tensor(kappa, dtype=torch.float64)
    ratio = float(bessel_ratio(dim, k))
    variance = 1 - ratio**2 - (dim - 1) * ratio / kappa  # Var(mu . x) = A'(kappa)
    row = {"kappa": kappa}
    for name in dtypes:
        d = VonMisesFisher(mu.to(getattr(torch, name)), k.to(getattr(torch, name)))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            x = d.sample((num_samples,))
            times.append(time.perf_counter() - start)
        row[f"torch_{name}_s"] = min(times)
        row[f"torch_{name}_mean_z"] = _mean_z_score((x.double() @ mu).numpy(), ratio, variance)
        del x
    if use_scipy:
        start = time.perf_counter()
        y = scipy.stats.vonmises_fisher(mu.numpy(), kappa).rvs(num_samples, random_state=0)
        row["scipy_s"] = time.perf_counter() - start
        row["scipy_mean_z"] = _mean_z_score(y @ mu.numpy(), ratio, variance)
        for name in dtypes:
            row[f"speedup_{name}"] = row["scipy_s"] / row[f"torch_{name}_s"]
    return row


def _reference_log_prob(dim, kappa, cosine):
    with mpmath.workdps(40):
        nu = mpmath.mpf(dim) / 2 - 1
        log_area = (
            mpmath.log(2)
            + mpmath.mpf(dim) / 2 * mpmath.log(mpmath.pi)
            - mpmath.loggamma(mpmath.mpf(dim) / 2)
        )
        if kappa == 0:
            return [-log_area for _ in cosine]
        k = mpmath.mpf(kappa)
        log_bessel = mpmath.log(mpmath.besseli(nu, k, maxterms=10**6))
        log_norm = mpmath.loggamma(nu + 1) + nu * mpmath.log(2 / k) + log_bessel
        return [k * mpmath.mpf(c) - log_area - log_norm for c in cosine]


def accuracy_summary():
    """Worst relative error of ``log_prob`` against mpmath, and where scipy is not finite."""
    worst, scipy_worst, scipy_nonfinite = 0.0, 0.0, []
    for dim in ACCURACY_DIMS:
        mu = torch.zeros(dim, dtype=torch.float64)
        mu[0] = 1.0
        x = torch.zeros(3, dim, dtype=torch.float64)
        x[0, 0], x[1, 0], x[2, 1] = 1.0, -1.0, 1.0  # mode, antipode, orthogonal
        for kappa in ACCURACY_KAPPAS:
            ours = VonMisesFisher(mu, torch.tensor(kappa, dtype=torch.float64)).log_prob(x)
            reference = _reference_log_prob(dim, kappa, x[:, 0].tolist())
            for value, ref in zip(ours.tolist(), reference, strict=True):
                worst = max(worst, float(abs(mpmath.mpf(value) - ref) / max(abs(ref), 1)))
            if kappa > 0:
                with np.errstate(divide="ignore", over="ignore"):
                    theirs = scipy.stats.vonmises_fisher(mu.numpy(), kappa).logpdf(x.numpy())
                if not np.all(np.isfinite(theirs)):
                    scipy_nonfinite.append([dim, kappa])
                else:
                    rel = np.abs(theirs - ours.numpy()) / np.maximum(np.abs(ours.numpy()), 1)
                    scipy_worst = max(scipy_worst, float(rel.max()))
    return {
        "log_prob_max_rel_err_vs_mpmath": worst,
        "log_prob_max_rel_diff_vs_scipy_where_finite": scipy_worst,
        "scipy_nonfinite_at_dim_kappa": scipy_nonfinite,
    }


def main(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rows = [
        time_sampling(
            args.dim, kappa, args.num_samples, args.repeats, args.dtypes, not args.no_scipy
        )
        for kappa in args.kappas
    ]
    print(f"vMF sampling: d={args.dim}, {args.num_samples} draws, {args.threads} torch threads")
    header = f"{'kappa':>8}" + "".join(f" {'torch ' + n[5:] + ' s':>13}" for n in args.dtypes)
    header += f" {'scipy s':>9}" + "".join(f" {'speedup ' + n[5:]:>11}" for n in args.dtypes)
    print(header + "   mean(mu.x) z-scores vs A_d(kappa) (torch..., scipy)")
    nan = math.nan
    for row in rows:
        line = f"{row['kappa']:>8g}"
        line += "".join(f" {row[f'torch_{n}_s']:>13.3f}" for n in args.dtypes)
        line += f" {row.get('scipy_s', nan):>9.3f}"
        line += "".join(f" {row.get(f'speedup_{n}', nan):>11.1f}" for n in args.dtypes)
        z = [row[f"torch_{n}_mean_z"] for n in args.dtypes] + [row.get("scipy_mean_z", nan)]
        print(line + "   " + " ".join(f"{v:.2f}" for v in z))
    accuracy = accuracy_summary()
    print(
        f"log_prob vs mpmath (d in {ACCURACY_DIMS}, kappa in {ACCURACY_KAPPAS}): max rel err "
        f"{accuracy['log_prob_max_rel_err_vs_mpmath']:.2e}; vs scipy where finite: "
        f"{accuracy['log_prob_max_rel_diff_vs_scipy_where_finite']:.2e}; scipy not finite at "
        f"(d, kappa) = {accuracy['scipy_nonfinite_at_dim_kappa']}"
    )
    result = {
        "benchmark": "vmf",
        "dim": args.dim,
        "num_samples": args.num_samples,
        "dtypes": args.dtypes,
        "threads": args.threads,
        "sampling": rows,
        **accuracy,
    }
    print(json.dumps(result))
    return result


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--num-samples", type=int, default=100_000)
    parser.add_argument("--kappas", type=float, nargs="+", default=[10.0, 100.0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--dtypes", nargs="+", choices=["float64", "float32"], default=["float64", "float32"]
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-scipy", action="store_true", help="skip the scipy timing")
    return parser


if __name__ == "__main__":
    main(_parser().parse_args())
